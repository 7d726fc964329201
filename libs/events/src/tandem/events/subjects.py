"""NATS subjects, stream and bucket names. Call sites build subjects only through these."""

from __future__ import annotations

import re

from tandem.events.names import check_name

EVENTS_STREAM = "TANDEM_EVENTS"
JOURNAL_STREAM = "TANDEM_JOURNAL"
DLQ_STREAM = "TANDEM_DLQ"

ROLES_BUCKET = "tandem_roles"
CONFIG_BUCKET = "tandem_config"
LEASES_BUCKET = "tandem_leases"

EVENTS_ALL = "tandem.evt.>"
JOURNAL_ALL = "tandem.jrnl.>"
DLQ_ALL = "tandem.dlq.>"

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _token(value: str, what: str) -> str:
    """A subject token from outside the catalog (a type or consumer name): no dots, no wildcards."""
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{what} {value!r} cannot be a subject token: use A-Z a-z 0-9 _ -")
    return value


def event_subject(cluster: str, event_type: str) -> str:
    return f"tandem.evt.{check_name(cluster, 'cluster name')}.{_token(event_type, 'event type')}"


def events_filter(cluster: str | None = None, event_type: str | None = None) -> str:
    """A filter for events: all, one cluster's, or one type (of one or every cluster)."""
    c = "*" if cluster is None else check_name(cluster, "cluster name")
    t = ">" if event_type is None else _token(event_type, "event type")
    if cluster is None and event_type is None:
        return EVENTS_ALL
    return f"tandem.evt.{c}.{t}"


def command_subject(cluster: str, node: str, command_type: str) -> str:
    return (
        f"tandem.cmd.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}"
        f".{_token(command_type, 'command type')}"
    )


def commands_filter(cluster: str, node: str) -> str:
    """Every command addressed to one node."""
    return f"tandem.cmd.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}.*"


def heartbeat_subject(cluster: str, node: str) -> str:
    return f"tandem.hb.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}"


def heartbeats_filter(cluster: str) -> str:
    return f"tandem.hb.{check_name(cluster, 'cluster name')}.*"


def journal_subject(cluster: str) -> str:
    return f"tandem.jrnl.{check_name(cluster, 'cluster name')}"


def journal_msg_id(cluster: str, epoch: int, seq: int) -> str:
    if epoch < 0 or seq < 0:
        raise ValueError(f"epoch and seq must be >= 0, got {epoch}:{seq}")
    return f"{check_name(cluster, 'cluster name')}:{epoch}:{seq}"


def dlq_subject(source_stream: str, consumer: str) -> str:
    """Where a consumer of ``source_stream`` puts what it could not handle."""
    return f"tandem.dlq.{_token(source_stream, 'stream name')}.{_token(consumer, 'consumer name')}"


def role_key(cluster: str) -> str:
    return check_name(cluster, "cluster name")


def node_lease_key(cluster: str, node: str) -> str:
    return f"node.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}"


def rule_switch_key(cluster: str, node: str, rule: str) -> str:
    """Key in ``tandem_config`` that turns a node's health rule on or off at runtime
    (value ``enabled`` or ``disabled``)."""
    return (
        f"rules.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}"
        f".{_token(rule, 'rule name')}"
    )


def rule_switches_filter(cluster: str, node: str) -> str:
    return f"rules.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}.*"
