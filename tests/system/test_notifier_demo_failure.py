"""A demo app failure mailed end to end (issue 19): the mail of the failure, then the resolved
mail after recovery, through a real SMTP server.

Everything is real, nothing is faked or published by the test: two node agents (processes)
running the demo app with its http check and a health rule that raises an alert, a real
orchestrator, the session's nats-server (logins and TLS), the notifier as a process
(``python -m tandem.notifier``, its own least-privilege bus identity) with an email route, and
aiosmtpd (STARTTLS required, AUTH required) receiving the mail. The fault is a real one: the
Active's demo app process is frozen (SIGSTOP), so its ``/health`` stops answering and the
check times out; the rule (alert only, no restart: the app stays failed) raises
``rule.web-hung``. SIGCONT is the recovery: the check passes again, the monitor clears the
alert, and the notifier sends the resolved mail.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest

from agent_rig import read_pid
from conftest import reset_bus
from helpers import eventually
from notifier_rig import (
    SmtpServer,
    consumer_exists,
    email_route,
    events_of,
    smtp_server,
    start_process,
    write_config,
)
from orchestrator_rig import Pair, start_pair
from tandem.events.bus import Bus
from tandem.events.catalog.alerts import alert_fingerprint
from tandem.events.embedded import NatsServer, free_port
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

CLUSTER = "mailed"
CODE = "rule.web-hung"
#: Alert only: nothing repairs the app, it stays failed until the test undoes the fault.
RULE = """
[[rules]]
name = "web-hung"
check = "web-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 3
actions = [{ do = "alert", severity = "critical" }]
"""


@dataclass
class Rig:
    pair: Pair
    smtp: SmtpServer
    bus: Bus


@pytest.fixture
async def rig(
    nats_server: NatsServer, bus_secrets: SecureBusFiles, tmp_path: Path
) -> AsyncIterator[Rig]:
    async with await Bus.connect(load_bus_settings(servers=[nats_server.url]), name="test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())
        pair = Pair(cluster=CLUSTER, tmp=tmp_path, bus_url=nats_server.url, public_port=free_port())
        with smtp_server(tmp_path / "smtp") as smtp:
            route = email_route("oncall", smtp.port, tmp_path, smtp.tls.ca_cert)
            config = write_config(tmp_path / "notifier.toml", route)
            env = {
                **os.environ,
                "TANDEM_BUS_SERVERS": nats_server.url,
                # Its own identity, as tandem up and the compose file run it.
                **bus_secrets.login_env("notifier"),
                "TANDEM_NOTIFIER_CONFIG": str(config),
                "TANDEM_NOTIFIER_STATE_DIR": str(tmp_path / "notifier-state"),
            }
            log = tmp_path / "notifier.log"
            notifier = start_process(env, log)
            try:
                await eventually(lambda: consumer_exists(bus), 30, "the notifier's consumer")
                await start_pair(pair, RULE)
                yield Rig(pair, smtp, bus)
            finally:
                _resume_app(pair)
                pair.stop_all()
                notifier.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.to_thread(notifier.wait, 30)
                except Exception:
                    notifier.kill()
                    raise
                assert code == 0, log.read_text()[-3000:]


def _app_pid(pair: Pair, node: str = "primary") -> int:
    pid = read_pid(pair.tmp / node / "state" / "apps" / "web.pid")
    assert pid is not None, f"no pid file of web on {node}"
    return pid


def _resume_app(pair: Pair) -> None:
    try:
        os.kill(_app_pid(pair), signal.SIGCONT)
    except (AssertionError, ProcessLookupError):
        pass


def _mails(smtp: SmtpServer, fingerprint: str, status: str) -> list[Message]:
    return [
        m
        for m in smtp.box.messages
        if m["X-Tandem-Fingerprint"] == fingerprint and m["X-Tandem-Status"] == status
    ]


def _unfolded(header: str) -> str:
    """A header as a mail client shows it (RFC 5322 unfolding: a line break before
    whitespace is removed)."""
    return re.sub(r"\r?\n(?=[ \t])", "", header)


def _text(mail: Message) -> str:
    payload = mail.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


async def _delivered(bus: Bus, event_ids: set[str]) -> bool:
    done = {e.payload.event_id for e in await events_of(bus, "NotificationDelivered")}
    return event_ids <= done


async def test_a_frozen_demo_app_is_mailed_then_its_recovery(rig: Rig) -> None:
    pair, smtp = rig.pair, rig.smtp
    fingerprint = alert_fingerprint(CLUSTER, "primary", CODE)
    assert not _mails(smtp, fingerprint, "firing"), "a mail before the fault"

    os.kill(_app_pid(pair), signal.SIGSTOP)  # the Active's demo app hangs
    await eventually(lambda: _mails(smtp, fingerprint, "firing"), 60, "the failure's mail")
    os.kill(_app_pid(pair), signal.SIGCONT)  # recovery
    await eventually(lambda: _mails(smtp, fingerprint, "resolved"), 60, "the resolved mail")

    (raised,) = [e for e in await events_of(rig.bus, "AlertRaised") if e.payload.code == CODE]
    (cleared,) = [e for e in await events_of(rig.bus, "AlertCleared") if e.payload.code == CODE]
    # Both outcomes recorded: nothing of this alert is still on its way to be sent again.
    await eventually(
        lambda: _delivered(rig.bus, {raised.id, cleared.id}), 30, "both deliveries recorded"
    )
    (firing,) = _mails(smtp, fingerprint, "firing")
    (resolved,) = _mails(smtp, fingerprint, "resolved")
    assert smtp.box.logins, "the notifier logged in (after STARTTLS)"

    # The failure: what (the rule's alert), where (cluster and node), why (the rule's
    # condition on the demo app's check).
    assert firing["X-Tandem-Event-Id"] == raised.id
    subject = _unfolded(firing["Subject"])
    assert subject.startswith(f"[Tandem CRITICAL] {CLUSTER}/primary: rule web-hung: "), subject
    assert "up == 0 for 3 consecutive samples" in subject, subject
    assert "last sample failed: http check timed out after 1s" in subject, subject
    text = _text(firing)
    for part in (
        f"What:   alert {CODE} (critical) is firing",
        f"Where:  cluster {CLUSTER}, node primary",
        "Why:    rule web-hung: up == 0 for 3 consecutive samples (threshold 0, last sample "
        "failed: http check timed out after 1s); action alert (critical)",
        "Since:  ",
        f"Do:     see `tandem status --cluster {CLUSTER}`; `tandem alerts ack {fingerprint}`",
        f"Link:   http://console.example.net/api/v1/alerts?cluster={CLUSTER}",
        f"Fingerprint {fingerprint}; event {raised.id} (AlertRaised",
    ):
        assert part in text, (part, text)

    # The recovery: the same alert, resolved, and why (the check passes again).
    assert _unfolded(resolved["Subject"]) == f"[Tandem RESOLVED] {CLUSTER}/primary: {CODE}"
    assert resolved["X-Tandem-Event-Id"] == cleared.id
    body = _text(resolved)
    for part in (
        f"What:   alert {CODE} is resolved",
        f"Where:  cluster {CLUSTER}, node primary",
        # The failure's message, then why it ended.
        "Why:    rule web-hung: up == 0 for 3 consecutive samples",
        "cleared: rule web-hung: check web-http passes it again (http GET http://127.0.0.1:",
        "/health answered 200 in ",
        "(ended ",
        f"Fingerprint {fingerprint}; event {cleared.id} (AlertCleared",
    ):
        assert part in body, (part, body.replace("\r\n", "\n"))
