"""Who may do what on the bus: one NATS user per Tandem component, each with the subjects it
may publish to and subscribe to (least privilege, issue 17).

``bus_identities`` builds the set for the clusters and nodes of a deployment;
``tandem.events.bus_auth`` turns it into users with passwords and the nats-server
``authorization`` block; ``permission_table_markdown`` renders the table the README shows.

What NATS permissions can and cannot scope (the README's "Security" section says it too):
writes are scoped by subject exactly (events, commands, heartbeats, journal, KV keys, stream
administration). JetStream reads are scoped by stream and, where a consumer has a fixed name,
by consumer; a consumer's filter and a message get's subject travel in the request body, so
an identity that may read a stream may read all of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tandem.events import subjects
from tandem.events.names import SYSTEM_CLUSTER, check_name

ADMIN = "admin"
ORCHESTRATOR = "orchestrator"
DNS_UPDATER = "dns_updater"
VMWARE_BRIDGE = "vmware_bridge"
NOTIFIER = "notifier"
VIEWER = "viewer"

_API = "$JS.API"
_KV = "$KV"
_ROLES_STREAM = f"KV_{subjects.ROLES_BUCKET}"
_CONFIG_STREAM = f"KV_{subjects.CONFIG_BUCKET}"
_LEASES_STREAM = f"KV_{subjects.LEASES_BUCKET}"

#: Every JetStream client: account and stream info (services check at start that the streams
#: exist), and answers to push consumers' flow-control messages.
_JETSTREAM_BASICS = (f"{_API}.INFO", f"{_API}.STREAM.INFO.*", f"{_API}.STREAM.NAMES", "$JS.FC.>")

#: Answers to requests this identity serves (commands, replica manifests). An inbox ends in
#: 22 random characters that only the requester and the addressee see, and each identity
#: subscribes only to its own inbox prefix, so this reaches no one else. ``allow_responses``
#: would scope it further but makes the server track the reply subject of every message it
#: delivers (journal batches too) until an expiry: unbounded memory on a busy node.
_ANSWERS = "_INBOX.>"

#: Service lifecycle events (``ServiceStarted``/``ServiceStopped``) of central services.
_LIFECYCLE = ("ServiceStarted", "ServiceStopped")
_ALERTS = ("AlertRaised", "AlertCleared")


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    #: Checked after ``publish``: a deny wins over any allow, now and after later edits.
    publish_deny: tuple[str, ...] = ()


@dataclass(frozen=True)
class BusIdentity:
    user: str
    purpose: str
    #: None: every subject (the admin, which provisions streams and buckets).
    permissions: Permissions | None
    #: The client's inbox prefix (``BusSettings.inbox_prefix``): replies and push consumers'
    #: deliveries come there, and no other identity may subscribe to it.
    inbox_prefix: str


def agent_user(cluster: str, node: str) -> str:
    return f"agent:{check_name(cluster, 'cluster name')}:{check_name(node, 'node name')}"


def inbox_prefix_of(user: str) -> str:
    """``agent:c1:n1`` -> ``_INBOX.agent.c1.n1``: one subject token per part of the name."""
    return "_INBOX." + user.replace(":", ".")


def bus_identities(clusters: Mapping[str, Sequence[str]]) -> list[BusIdentity]:
    """The identities of a deployment whose clusters have these nodes
    (``{"c1": ["n1", "n2"]}``): admin, orchestrator, one agent per node, the central
    services and a read-only viewer."""
    central = [
        _identity(ADMIN, "provisions streams and buckets; operators' CLI", None),
        _identity(ORCHESTRATOR, "decides roles, runs sagas", orchestrator_permissions()),
        _identity(DNS_UPDATER, "moves DNS names on role changes", dns_updater_permissions()),
        _identity(
            VMWARE_BRIDGE,
            "fences and remediates VMs",
            event_service_permissions(
                VMWARE_BRIDGE,
                (
                    "VmFenced",
                    "VmFenceFailed",
                    "VmRemediationStarted",
                    "VmRemediationCompleted",
                    "VmRemediationFailed",
                    "ApplicationRestartRequested",
                    *_ALERTS,
                ),
            ),
        ),
        _identity(NOTIFIER, "sends notifications", notifier_permissions()),
        _identity(VIEWER, "reads events (dashboards, audits)", viewer_permissions()),
    ]
    agents = [
        _identity(
            agent_user(cluster, node),
            f"node agent of {node} in {cluster} (with its replicator and monitor)",
            agent_permissions(cluster, node),
        )
        for cluster, nodes in clusters.items()
        for node in nodes
    ]
    users = [i.user for i in central + agents]
    if len(set(users)) != len(users):
        raise ValueError("a node is named twice in the same cluster")
    return central + agents


def _identity(user: str, purpose: str, permissions: Permissions | None) -> BusIdentity:
    return BusIdentity(user, purpose, permissions, inbox_prefix_of(user))


def _stream_reads(stream: str) -> tuple[str, ...]:
    """Get single messages of ``stream`` (the subject asked for is in the body)."""
    return (
        f"{_API}.STREAM.MSG.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}",
        f"{_API}.DIRECT.GET.{stream}.>",
    )


def _consumers(
    stream: str, name: str = "*", *, filter_subject: str | None = None, delete: bool = False
) -> tuple[str, ...]:
    """Create, bind to, pull from and ack consumers of ``stream`` named ``name``.

    nats-py names the filter in the create request's subject
    (``CONSUMER.CREATE.<stream>.<name>.<filter>``) and the server holds the consumer to it:
    with ``filter_subject`` the consumer can only be made to read that."""
    if filter_subject is not None:
        creates = [f"{_API}.CONSUMER.CREATE.{stream}.{name}.{filter_subject}"]
    else:
        creates = [
            f"{_API}.CONSUMER.CREATE.{stream}.{name}",  # several filters, or none
            f"{_API}.CONSUMER.CREATE.{stream}.{name}.>",
            f"{_API}.CONSUMER.DURABLE.CREATE.{stream}.{name}",  # the older form
        ]
    rights = [
        f"{_API}.CONSUMER.INFO.{stream}.{name}",
        *creates,
        f"{_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
    ]
    if name == "*":
        rights.append(f"{_API}.CONSUMER.CREATE.{stream}")  # an ephemeral (ordered) consumer
    if delete:
        rights.append(f"{_API}.CONSUMER.DELETE.{stream}.{name}")
    return tuple(rights)


def journal_durable(cluster: str, node: str) -> str:
    """The replication receiver's durable consumer of its cluster's journal
    (``tandem.replicator.receiver``; a unit test keeps the two in step)."""
    return f"jrnl-{cluster}-{node}"


def agent_permissions(cluster: str, node: str) -> Permissions:
    """A node's agent, replicator and monitor (they share the node's identity).

    Publishes its own heartbeat, its cluster's events and journal, its own lease, and answers
    the commands addressed to it; reads its cluster's heartbeats and events, the journal
    through its own durable consumer, and the role record. It may not command any node or
    write the role record (the orchestrator does), nor anything of another cluster."""
    c, n = cluster, node
    return Permissions(
        publish=(
            f"tandem.hb.{c}.{n}",
            f"tandem.evt.{c}.>",
            f"tandem.jrnl.{c}",
            f"tandem.jdirect.{c}",  # sync mode's direct copy of a batch
            f"tandem.jack.{c}.{n}",  # sync mode's "stored up to"
            f"tandem.sync.{c}.*",  # asks a peer's replica for its manifest (verify)
            subjects.DLQ_ALL,
            f"{_KV}.{subjects.LEASES_BUCKET}.node.{c}.{n}",
            _ANSWERS,
            *_JETSTREAM_BASICS,
            *_stream_reads(subjects.EVENTS_STREAM),
            *_stream_reads(subjects.JOURNAL_STREAM),
            *_stream_reads(_ROLES_STREAM),
            *_stream_reads(_CONFIG_STREAM),
            # By stream, not by name: the DNS identity check creates and deletes consumers
            # with random names.
            *_consumers(subjects.EVENTS_STREAM, delete=True),
            *_consumers(
                subjects.JOURNAL_STREAM, journal_durable(c, n), filter_subject=f"tandem.jrnl.{c}"
            ),
        ),
        subscribe=(
            f"{inbox_prefix_of(f'agent:{c}:{n}')}.>",
            f"tandem.cmd.{c}.{n}.*",
            f"tandem.hb.{c}.*",
            f"tandem.evt.{c}.>",
            f"tandem.jdirect.{c}",
            f"tandem.jack.{c}.*",
            f"tandem.sync.{c}.{n}",
        ),
        publish_deny=(
            "tandem.cmd.>",
            f"{_KV}.{subjects.ROLES_BUCKET}.>",
            f"{_KV}.{subjects.CONFIG_BUCKET}.>",
        ),
    )


def orchestrator_permissions() -> Permissions:
    """Commands any node, writes role records and leases, reads and writes every event; may
    not create, change or delete streams (the admin provisions), except make the lease
    bucket again when the whole bus restarted without it (it lives in memory)."""
    return Permissions(
        publish=(
            "tandem.cmd.>",
            subjects.EVENTS_ALL,
            subjects.DLQ_ALL,
            f"{_KV}.{subjects.ROLES_BUCKET}.>",
            f"{_KV}.{subjects.LEASES_BUCKET}.>",
            f"{_API}.STREAM.CREATE.{_LEASES_STREAM}",
            *_JETSTREAM_BASICS,
            *_stream_reads("*"),
            *_consumers("*", delete=True),
        ),
        subscribe=(f"{inbox_prefix_of(ORCHESTRATOR)}.>", "tandem.>"),
    )


def event_service_permissions(user: str, event_types: Sequence[str]) -> Permissions:
    """A central service that follows events: reads them all, publishes only its own types
    (in any cluster) and its lifecycle events in the system cluster."""
    return Permissions(
        publish=(
            *(f"tandem.evt.*.{t}" for t in event_types),
            *(f"tandem.evt.{SYSTEM_CLUSTER}.{t}" for t in _LIFECYCLE),
            subjects.DLQ_ALL,
            *_JETSTREAM_BASICS,
            *_stream_reads(subjects.EVENTS_STREAM),
            *_consumers(subjects.EVENTS_STREAM),
        ),
        subscribe=(f"{inbox_prefix_of(user)}.>", subjects.EVENTS_ALL),
    )


def dns_updater_permissions() -> Permissions:
    """A central event service that also reads the role records: which node is Active is
    what its reconcile checks each DR name against."""
    base = event_service_permissions(
        DNS_UPDATER,
        (
            "DnsUpdated",
            "DnsUpdateFailed",
            "DnsRecordReconciled",
            "DnsReconcileCompleted",
            *_ALERTS,
        ),
    )
    return Permissions(
        publish=(*base.publish, *_stream_reads(_ROLES_STREAM)), subscribe=base.subscribe
    )


def notifier_permissions() -> Permissions:
    """A central event service with one durable consumer of every event, ``notifier``, which
    it may delete (it makes it again from its ack floor after a crash, to take what was not
    acknowledged again in order); publishes its outcomes and its own alerts."""
    base = event_service_permissions(
        NOTIFIER, ("NotificationDelivered", "NotificationFailed", *_ALERTS)
    )
    s = subjects.EVENTS_STREAM
    consumer = _consumers(s, NOTIFIER, filter_subject=subjects.EVENTS_ALL, delete=True)
    kept = [p for p in base.publish if not p.startswith((f"{_API}.CONSUMER.", f"$JS.ACK.{s}."))]
    return Permissions(publish=(*kept, *consumer), subscribe=base.subscribe)


def viewer_permissions() -> Permissions:
    """Reads events: live, or replayed through an ephemeral (ordered) consumer. Publishes
    nothing but JetStream read requests; cannot pull from another identity's consumer."""
    s = subjects.EVENTS_STREAM
    return Permissions(
        publish=(
            f"{_API}.INFO",
            f"{_API}.STREAM.INFO.{s}",
            f"{_API}.CONSUMER.CREATE.{s}",
            f"{_API}.CONSUMER.INFO.{s}.*",
            f"$JS.FC.{s}.>",
            *_stream_reads(s),
        ),
        subscribe=(f"{inbox_prefix_of(VIEWER)}.>", subjects.EVENTS_ALL),
    )


def permission_table_markdown() -> str:
    """The permission table of the README: one row per kind of identity, ``<cluster>`` and
    ``<node>`` standing for an agent's own names. The JetStream API subjects are summed up
    per stream (the exact lists are in this module and in the server's config)."""
    agent = BusIdentity(
        "agent:<cluster>:<node>",
        "node agent (with the node's replicator and monitor)",
        agent_permissions("<cluster>", "<node>"),
        "_INBOX.agent.<cluster>.<node>",
    )
    rows = bus_identities({})
    rows.insert(2, agent)
    lines = [
        "| identity | what for | publishes | subscribes | JetStream reads | publish denied |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i in rows:
        if i.permissions is None:
            lines.append(f"| `{i.user}` | {i.purpose} | everything | everything | everything | |")
            continue
        p = i.permissions
        plain = [s for s in p.publish if not s.startswith(("$JS.API.", "$JS.ACK.", "$JS.FC."))]
        lines.append(
            f"| `{i.user}` | {i.purpose} | {_cell(plain) or 'JetStream read requests only'} "
            f"| {_cell(p.subscribe)} | {_jetstream_summary(p)} | {_cell(p.publish_deny)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(items: Sequence[str]) -> str:
    return "<br>".join(f"`{s}`" for s in items)


def _jetstream_summary(p: Permissions) -> str:
    """``get: A, B; consumers: A (any), B (name)`` from the ``$JS.API`` subjects allowed."""

    def stream_name(s: str) -> str:
        return "every stream" if s == "*" else f"`{s}`"

    gets = [s.split(".")[-1] for s in p.publish if s.startswith(f"{_API}.STREAM.MSG.GET.")]
    consumers = []
    for subject in p.publish:
        if subject.startswith(f"{_API}.CONSUMER.MSG.NEXT."):
            stream, name = subject.split(".")[-2:]
            deletes = f"{_API}.CONSUMER.DELETE.{stream}.{name}" in p.publish
            creates = [
                x for x in p.publish if x.startswith(f"{_API}.CONSUMER.CREATE.{stream}.{name}.")
            ]
            only = creates[0].split(".", 6)[-1] if len(creates) == 1 and name != "*" else ""
            which = "any" if name == "*" else f"`{name}`" + (f" on `{only}`" if only else "")
            consumers.append(f"{stream_name(stream)} ({which}{', may delete' if deletes else ''})")
    pushed = [
        s.split(".")[-1]
        for s in p.publish
        if s.count(".") == 4
        and s.startswith(f"{_API}.CONSUMER.CREATE.")
        and f"{_API}.CONSUMER.MSG.NEXT.{s.split('.')[-1]}.*" not in p.publish
    ]
    parts = []
    if gets:
        parts.append("get: " + ", ".join(stream_name(s) for s in gets))
    if consumers:
        parts.append("consumers: " + ", ".join(consumers))
    if pushed:
        parts.append("ordered (ephemeral) consumers: " + ", ".join(stream_name(s) for s in pushed))
    return "; ".join(parts)
