"""The notifier against real peers and a real nats-server: a mail through an SMTP server with
STARTTLS and AUTH (aiosmtpd), an Alertmanager webhook to an HTTP server that checks the
signature, retries then ``notifier.route_failing`` on another route, silences."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from pathlib import Path

import pytest

from helpers import eventually
from notifier_rig import (
    SMTP_PASSWORD,
    cleared,
    email_route,
    events_of,
    file_route,
    http_server,
    lines,
    notifier,
    raised,
    silence,
    smtp_server,
    write_config,
)
from tandem.events.bus import Bus
from tandem.events.bus_tls import write_local_pki
from tandem.events.catalog import SilenceRemoved
from tandem.events.catalog.alerts import SilenceRemovedPayload
from tandem.events.embedded import free_port
from tandem.events.subjects import DLQ_STREAM, events_filter
from tandem.notifier.policy import ROUTE_FAILING

pytestmark = pytest.mark.timeout(120)


async def test_a_raised_alert_is_mailed_with_starttls_and_auth_then_its_resolved_mail(
    bus: Bus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server(tmp_path) as smtp:
        route = email_route("oncall", smtp.port, tmp_path, smtp.tls.ca_cert)
        config = write_config(tmp_path / "notifier.toml", route)
        async with notifier(bus, config, tmp_path / "state"):
            alert = raised()
            await bus.publish(alert)
            await eventually(lambda: len(smtp.box.messages) == 1, 20, "the firing mail")
            await bus.publish(cleared())
            await eventually(lambda: len(smtp.box.messages) == 2, 20, "the resolved mail")
            await eventually(
                lambda: _count(bus, "NotificationDelivered", 2), 20, "two NotificationDelivered"
            )
    firing, resolved = smtp.box.messages
    assert smtp.box.logins, "the notifier logged in"
    assert firing["Subject"] == "[Tandem CRITICAL] demo/primary: demo app does not answer on :8081"
    assert firing["To"] == "oncall@example.net, dba@example.net"
    assert firing["X-Tandem-Event-Id"] == alert.id
    text = firing.get_payload(decode=True).decode()
    wanted = (
        "What:   alert app.down (critical) is firing",
        "Where:  cluster demo, node primary",
        "Why:    demo app does not answer",
        "Since:  ",
        "Do:     ",
        "Link:   http://console.example.net/api/v1/alerts?cluster=demo",
    )
    for part in wanted:
        assert part in text, part
    assert resolved["Subject"] == "[Tandem RESOLVED] demo/primary: app.down"
    body = resolved.get_payload(decode=True).decode()
    assert "alert app.down is resolved" in body and "answers again" in body
    assert resolved["X-Tandem-Fingerprint"] == firing["X-Tandem-Fingerprint"] == alert.fingerprint
    assert SMTP_PASSWORD not in caplog.text, "the SMTP password was logged"


async def _count(bus: Bus, type_name: str, n: int) -> bool:
    return len(await events_of(bus, type_name)) >= n


async def test_the_webhook_is_alertmanager_v4_signed_and_a_repeat_is_not_sent(
    bus: Bus, tmp_path: Path
) -> None:
    key = b"webhook-key-0123456789"
    (tmp_path / "key").write_bytes(key + b"\n")
    with http_server() as http:
        route = (
            '[[routes]]\nname = "am"\n[routes.channel]\ntype = "webhook"\n'
            f'url = "http://127.0.0.1:{http.port}/hook"\nhmac_key_file = "key"\ntimeout_s = 5\n'
        )
        top = 'external_url = "http://tandem.example.net"\n'
        config = write_config(tmp_path / "notifier.toml", route, top=top)
        async with notifier(bus, config, tmp_path / "state"):
            alert = raised(subject="app")
            ack = await bus.publish(alert)
            await eventually(lambda: len(http.posted) == 1, 20, "the firing webhook")
            await bus.publish(raised(subject="app"))  # the same alert, raised again
            await bus.publish(cleared(subject="app"))
            await eventually(lambda: len(http.posted) == 2, 20, "the resolved webhook")
    firing, resolved = http.posted
    for post in (firing, resolved):
        expected = "sha256=" + hmac.new(key, post.body, hashlib.sha256).hexdigest()
        assert post.headers["x-tandem-signature"] == expected
    body = firing.json()
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "am"
    assert body["externalURL"] == "http://tandem.example.net"
    assert body["groupLabels"] == {"cluster": "demo", "alertname": "app.down"}
    assert body["groupKey"] == '{}:{alertname="app.down", cluster="demo"}'
    assert body["commonLabels"]["severity"] == "critical"
    (a,) = body["alerts"]
    assert a["status"] == "firing" and a["fingerprint"] == alert.fingerprint
    assert a["labels"] == {
        "alertname": "app.down",
        "code": "app.down",
        "severity": "critical",
        "cluster": "demo",
        "node": "primary",
        "subject": "app",
    }
    assert a["annotations"]["summary"] == "demo app does not answer on :8081"
    assert a["endsAt"] == "0001-01-01T00:00:00Z" and a["startsAt"].endswith("Z")
    assert a["generatorURL"] == "http://tandem.example.net/api/v1/alerts?cluster=demo"
    assert body["tandem"]["event_id"] == alert.id and body["tandem"]["stream_seq"] == ack.seq
    done = resolved.json()
    assert done["status"] == "resolved" and done["alerts"][0]["fingerprint"] == alert.fingerprint
    assert done["alerts"][0]["startsAt"] == a["startsAt"]  # since the raise
    assert done["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"


async def test_a_dead_smtp_server_is_retried_then_route_failing_goes_to_another_route(
    bus: Bus, tmp_path: Path
) -> None:
    port = free_port()
    journal = tmp_path / "journal.jsonl"
    tls = write_local_pki(tmp_path / "pki")
    mail = email_route("mail", port, tmp_path, tls.ca_cert, extra="retries = 2\nbackoff_s = 0.2")
    config = write_config(tmp_path / "notifier.toml", mail, file_route("journal", journal))

    def journal_of(code: str) -> list[str]:
        return [
            line["status"]
            for line in lines(journal)
            if line["alerts"][0]["labels"]["alertname"] == code
        ]

    async with notifier(bus, config, tmp_path / "state"):
        await bus.publish(raised())
        await eventually(lambda: journal_of(ROUTE_FAILING) == ["firing"], 30, "route_failing")
        failed = await events_of(bus, "NotificationFailed")
        assert [(f.payload.route, f.payload.attempts) for f in failed] == [("mail", 3)]
        assert "Connection refused" in failed[0].payload.reason
        (failing,) = [e for e in await events_of(bus, "AlertRaised") if e.node == "notifier"]
        assert failing.payload.code == ROUTE_FAILING and failing.payload.subject == "mail"
        assert "route mail (email) cannot deliver" in failing.payload.message
        assert journal_of("app.down") == ["firing"]
        # The SMTP server is back: the next mail goes (one attempt while the route is failing)
        # and the route's alert clears, which the journal route is told.
        with smtp_server(tmp_path, port=port, tls=tls) as smtp:
            await bus.publish(raised("db.slow", message="queries take 3 s"))
            await eventually(lambda: len(smtp.box.messages) == 1, 20, "the mail, once back")
            await eventually(
                lambda: journal_of(ROUTE_FAILING) == ["firing", "resolved"], 20, "cleared"
            )
    assert str(smtp.box.messages[0]["Subject"]).endswith("demo/primary: queries take 3 s")
    (back,) = await events_of(bus, "AlertCleared")
    assert back.payload.code == ROUTE_FAILING and back.payload.subject == "mail"


async def test_a_silence_holds_a_route_back_until_it_ends(bus: Bus, tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    config = write_config(tmp_path / "notifier.toml", file_route("journal", journal))

    def codes() -> list[tuple[str, str]]:
        return [(x["alerts"][0]["labels"]["alertname"], x["status"]) for x in lines(journal)]

    async with notifier(bus, config, tmp_path / "state"):
        await bus.publish(silence({"cluster": "demo", "code": "app.down"}, seconds=3))
        await bus.publish(raised())  # silenced
        await bus.publish(raised("db.slow"))  # not matched by the silence
        await eventually(lambda: codes() == [("db.slow", "firing")], 20, "db.slow only")
        await asyncio.sleep(3.5)  # the silence ends
        await bus.publish(raised())  # still firing, raised again: now it is sent
        await eventually(
            lambda: codes() == [("db.slow", "firing"), ("app.down", "firing")], 20, "after"
        )
        await bus.publish(silence({"code": "*"}, seconds=60, silence_id="s2"))
        await bus.publish(removed("s2"))
        await bus.publish(raised("disk.full"))
        await eventually(lambda: len(codes()) == 3, 20, "a removed silence holds nothing")
    ledger = (tmp_path / "state" / "ledger.jsonl").read_text()
    assert ledger.count('"o":"suppressed"') == 1 and "silenced by s1" in ledger


async def test_a_message_that_does_not_decode_is_dead_lettered_and_the_rest_goes_on(
    bus: Bus, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    config = write_config(tmp_path / "notifier.toml", file_route("journal", journal))
    async with notifier(bus, config, tmp_path / "state"):
        await bus.publish_raw(events_filter("demo", "AlertRaised"), b"{not json")
        await bus.publish(raised())
        await eventually(lambda: len(lines(journal)) == 1, 20, "the good alert")
        info = await bus.js.stream_info(DLQ_STREAM)
        assert info.state.messages == 1


def removed(silence_id: str) -> SilenceRemoved:
    payload = SilenceRemovedPayload(silence_id=silence_id, by="operator:test")
    return SilenceRemoved(cluster="demo", node="orchestrator", payload=payload)


async def test_group_wait_drops_a_firing_cleared_within_it_and_other_routes_get_both(
    bus: Bus, tmp_path: Path
) -> None:
    grouped, at_once = tmp_path / "grouped.jsonl", tmp_path / "at-once.jsonl"
    config = write_config(
        tmp_path / "notifier.toml",
        file_route("grouped", grouped, extra="group_wait_s = 2"),
        file_route("at-once", at_once),
    )

    def seen(path: Path) -> list[tuple[str, str]]:
        return [(x["alerts"][0]["labels"]["alertname"], x["status"]) for x in lines(path)]

    async with notifier(bus, config, tmp_path / "state"):
        await bus.publish_many([raised("flap"), cleared("flap"), raised("steady")])
        await eventually(lambda: seen(grouped) == [("steady", "firing")], 20, "steady only")
        assert seen(at_once) == [("flap", "firing"), ("flap", "resolved"), ("steady", "firing")]
        # Waited for from the raise: "steady" was sent once its group_wait had passed.
        (steady,) = lines(grouped)
        assert steady["tandem"]["event_type"] == "AlertRaised"
    ledger = (tmp_path / "state" / "ledger.jsonl").read_text()
    assert "cleared within group_wait_s (2): flapping" in ledger
    assert "its firing was not sent on this route" in ledger
