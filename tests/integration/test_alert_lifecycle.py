"""The alert lifecycle (issue 19, part A) against a real orchestrator process on a real
nats-server: alerts raised and cleared on the bus as a node would, then ``GET /alerts``,
``POST /alerts/{fingerprint}/ack``, ``POST /silences``, ``GET /silences`` and
``DELETE /silences/{id}`` with their bad input (unknown fingerprint or silence 404, a viewer
mutating 403, ack of a cleared alert 409, a label a silence cannot match 422), what they
store (``AlertAcknowledged`` linked to its raise, ``SilenceCreated``/``Removed``, the audit),
and the real ``tandem alerts`` CLI (a subprocess).

One orchestrator per module, no agents: the cluster is known from its node's events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import reset_bus
from helpers import eventually
from orchestrator_rig import OPERATOR, VIEWER, Pair, leader_ready
from tandem.events.bus import Bus
from tandem.events.catalog import AlertCleared, AlertRaised, HealthChanged
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Severity
from tandem.events.embedded import NatsServer
from tandem.events.envelope import Event
from tandem.events.settings import load_bus_settings, load_stream_settings

pytestmark = pytest.mark.system

CLUSTER = "alerting"
NODE = "n1"


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("alerts")
    p = Pair(cluster=CLUSTER, tmp=tmp, bus_url=nats_server.url, public_port=None)
    try:
        asyncio.run(_fresh_start(p))
        yield p
    finally:
        p.stop_all()


async def _fresh_start(pair: Pair) -> None:
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())
        # The node's first event makes the cluster known, as an agent's would.
        health = HealthChangedPayload(
            application=None, plugin="disk", status=HealthStatus.OK, previous=None, message="ok"
        )
        await bus.publish(HealthChanged(cluster=CLUSTER, node=NODE, payload=health))
    pair.add_orchestrator().start()
    await leader_ready(pair)


async def publish(pair: Pair, *events: Event) -> None:
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        for event in events:
            await bus.publish(event)


def raised(
    code: str, subject: str = "", message: str = "m", cause: str | None = None
) -> AlertRaised:
    payload = AlertRaisedPayload(
        code=code, severity=Severity.CRITICAL, message=message, subject=subject
    )
    return AlertRaised(cluster=CLUSTER, node=NODE, causation_id=cause, payload=payload)


def cleared(code: str, subject: str = "") -> AlertCleared:
    payload = AlertClearedPayload(code=code, reason="condition ended", subject=subject)
    return AlertCleared(cluster=CLUSTER, node=NODE, payload=payload)


async def get(pair: Pair, path: str, **params: Any) -> Any:
    async with pair.api(token=VIEWER) as api:
        return await api.get(f"/api/v1{path}", params=params)


async def alerts(pair: Pair, state: str = "firing") -> list[dict[str, Any]]:
    answer = await get(pair, "/alerts", state=state, cluster=CLUSTER)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()
    return found


async def stored(pair: Pair, type_: str) -> list[dict[str, Any]]:
    found, after = [], 0
    async with pair.api(token=VIEWER) as api:
        while True:
            page = (await api.get("/api/v1/events", params={"after": after})).json()
            found += [e for e in page if e["type"] == type_]
            if len(page) < 100:
                return found
            after = page[-1]["seq"]


async def until_alerts(pair: Pair, state: str, count: int) -> list[dict[str, Any]]:
    async def there() -> bool:
        return len(await alerts(pair, state)) == count

    await eventually(there, 20, f"{count} {state} alerts")
    return await alerts(pair, state)


async def tandem(*args: str, pair: Pair) -> subprocess.CompletedProcess[str]:
    api = ("--api", f"http://127.0.0.1:{pair.api_ports[0]}", "--token", OPERATOR)
    command = [sys.executable, "-m", "tandem.cli", "alerts", *args, *api]
    env = {**os.environ, "COLUMNS": "250"}
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, env=env
    )


async def test_alert_endpoints_and_their_refusals(pair: Pair) -> None:
    first = raised("replicator.disk_full", message="disk full", cause="cause-1")
    again = raised("replicator.disk_full", message="disk still full")
    web = raised("rule.web-down", subject="web")
    await publish(pair, first, again, web)
    found = {a["code"]: a for a in await until_alerts(pair, "firing", 2)}
    disk = found["replicator.disk_full"]
    assert disk["fingerprint"] == first.fingerprint and disk["count"] == 2
    assert disk["message"] == "disk still full" and disk["state"] == "firing"
    assert (disk["event_id"], disk["causation_id"]) == (first.id, "cause-1")
    assert found["rule.web-down"]["subject"] == "web"

    # Unknown: 404; bad input: 422; a viewer mutating: 403.
    answer = await get(pair, "/alerts", cluster="nope")
    assert answer.status_code == 404 and "no cluster 'nope'" in answer.text
    answer = await get(pair, "/alerts", state="sleeping")
    assert answer.status_code == 422 and "state" in answer.text
    answer = await get(pair, "/alerts/0123456789abcdef")
    assert answer.status_code == 404 and "no alert '0123456789abcdef'" in answer.text
    async with pair.api() as api:
        answer = await api.post("/api/v1/alerts/0123456789abcdef/ack", json={"comment": "x"})
        assert answer.status_code == 404, answer.text
        answer = await api.post("/api/v1/silences", json={"matchers": {"team": "db"}, "for_s": 60})
        assert answer.status_code == 422 and "unknown label 'team'" in answer.text, answer.text
        answer = await api.post("/api/v1/silences", json={"matchers": {"code": "x"}})
        assert answer.status_code == 422 and "for_s or ends_at" in answer.text
        answer = await api.post(
            "/api/v1/silences",
            json={"matchers": {"severity": "loud"}, "for_s": 60},
        )
        assert answer.status_code == 422 and "severity 'loud'" in answer.text
        answer = await api.delete("/api/v1/silences/nope")
        assert answer.status_code == 404 and "no silence 'nope'" in answer.text
    async with pair.api(token=VIEWER) as viewer:
        answer = await viewer.post(f"/api/v1/alerts/{first.fingerprint}/ack", json={})
        assert answer.status_code == 403, answer.text
        answer = await viewer.post("/api/v1/silences", json={"matchers": {"code": "x"}, "for_s": 9})
        assert answer.status_code == 403, answer.text

    # Acknowledged: it still fires; twice: 409 naming who.
    async with pair.api() as api:
        answer = await api.post(
            f"/api/v1/alerts/{first.fingerprint}/ack", json={"comment": "disk ordered"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["state"] == "acknowledged"
        assert answer.json()["acknowledged_by"].startswith("operator:")
        answer = await api.post(f"/api/v1/alerts/{first.fingerprint}/ack")
        assert answer.status_code == 409 and "already acknowledged by operator:" in answer.text
    assert len(await alerts(pair, "firing")) == 2  # acknowledged ones are still firing
    [acked] = await alerts(pair, "acknowledged")
    assert acked["fingerprint"] == first.fingerprint and acked["ack_comment"] == "disk ordered"
    view = (await get(pair, f"/clusters/{CLUSTER}")).json()  # the cluster view says so too
    shown = {a["fingerprint"]: a["state"] for a in view["alerts"]}
    assert shown == {first.fingerprint: "acknowledged", web.fingerprint: "firing"}

    # Cleared: listed as such; its ack is 409 with when and why.
    await publish(pair, cleared("rule.web-down", subject="web"))
    [gone] = await until_alerts(pair, "cleared", 1)
    assert gone["fingerprint"] == web.fingerprint and gone["cleared_reason"] == "condition ended"
    async with pair.api() as api:
        answer = await api.post(f"/api/v1/alerts/{web.fingerprint}/ack", json={})
        assert answer.status_code == 409 and "was cleared at" in answer.text, answer.text

    # A silence: it mutes the alert (which still fires), is listed, removed, refused twice.
    async with pair.api() as api:
        body = {
            "matchers": {"code": "replicator.disk_full", "cluster": CLUSTER},
            "for_s": 3600,
            "comment": "replacing the disk",
        }
        answer = await api.post("/api/v1/silences", json=body)
        assert answer.status_code == 201, answer.text
        silence = answer.json()
        assert answer.headers["Location"] == f"/api/v1/silences/{silence['id']}"
        assert silence["state"] == "active" and silence["muting"] == [first.fingerprint]
    [disk] = [a for a in await alerts(pair) if a["code"] == "replicator.disk_full"]
    assert disk["silenced_by"] == [silence["id"]]
    listed = (await get(pair, "/silences")).json()
    assert [s["id"] for s in listed] == [silence["id"]]
    async with pair.api() as api:
        answer = await api.delete(f"/api/v1/silences/{silence['id']}")
        assert answer.status_code == 200 and answer.json()["state"] == "removed", answer.text
        answer = await api.delete(f"/api/v1/silences/{silence['id']}")
        assert answer.status_code == 409 and "was removed by operator:" in answer.text
        short = await api.post("/api/v1/silences", json={"matchers": {"node": NODE}, "for_s": 1})
        assert short.status_code == 201, short.text
    await asyncio.sleep(1.2)
    assert not (await get(pair, "/silences")).json()  # expired
    ended = {s["id"]: s["state"] for s in (await get(pair, "/silences", all="true")).json()}
    assert ended == {silence["id"]: "removed", short.json()["id"]: "expired"}
    async with pair.api() as api:
        answer = await api.delete(f"/api/v1/silences/{short.json()['id']}")
        assert answer.status_code == 409 and "expired at" in answer.text

    # What the stream holds: the ack linked to the raise, the silences, the audit.
    [ack] = await stored(pair, "AlertAcknowledged")
    assert ack["cluster"] == CLUSTER and ack["causation_id"] == first.id
    assert ack["payload"]["fingerprint"] == first.fingerprint
    created = await stored(pair, "SilenceCreated")
    assert {e["cluster"] for e in created} == {CLUSTER, "tandem"}  # the second of no cluster
    assert len(await stored(pair, "SilenceRemoved")) == 1

    async def audited() -> bool:
        actions = [e["payload"] for e in await stored(pair, "OperatorActionRecorded")]
        return {
            ("alert_ack", "accepted: 200"),
            ("alert_ack", "refused: 409 alert " + web.fingerprint),
            ("silence", "accepted: 201"),
            ("unsilence", "accepted: 200"),
        } <= {(a["action"], a["outcome"][: len("refused: 409 alert ") + 16]) for a in actions}

    await eventually(audited, 20, "the audit of the alert actions")


async def test_the_tandem_alerts_cli(pair: Pair) -> None:
    link = raised("dns.update_missing.erp.example.net", message="not confirmed")
    await publish(pair, link)

    async def listed() -> bool:
        return any(a["code"] == link.payload.code for a in await alerts(pair))

    await eventually(listed, 20, "the new alert")
    done = await tandem("--cluster", CLUSTER, pair=pair)
    assert done.returncode == 0, done.stderr
    assert link.fingerprint in done.stdout and "dns.update_missing.erp.example.net" in done.stdout
    done = await tandem("list", "--cluster", CLUSTER, "--json", pair=pair)
    assert done.returncode == 0 and f'"fingerprint": "{link.fingerprint}"' in done.stdout

    done = await tandem("ack", link.fingerprint, "--comment", "looking", pair=pair)
    assert done.returncode == 0, done.stderr
    assert f"alert {link.fingerprint}" in done.stdout and "acknowledged by operator:" in done.stdout
    done = await tandem("ack", "0123456789abcdef", pair=pair)
    assert done.returncode == 2 and "404 no alert" in done.stderr, done.stderr
    done = await tandem("list", "--state", "acknowledged", "--cluster", CLUSTER, pair=pair)
    assert done.returncode == 0 and link.fingerprint in done.stdout

    done = await tandem("silence", "--match", "team=dns", "--for", "2h", pair=pair)
    assert done.returncode == 2 and "unknown label 'team'" in done.stderr, done.stderr
    done = await tandem("silence", "--match", "code", "--for", "2h", pair=pair)
    assert done.returncode == 2 and "LABEL=VALUE" in done.stderr, done.stderr
    done = await tandem(
        "silence", "--match", f"cluster={CLUSTER}", "--match", f"code={link.payload.code}",
        "--for", "2h", "--comment", "DNS maintenance", pair=pair,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    silence_id = done.stdout.split()[1]
    done = await tandem("silences", pair=pair)
    assert done.returncode == 0 and silence_id in done.stdout and "DNS maintenance" in done.stdout
    done = await tandem("unsilence", silence_id, pair=pair)
    assert done.returncode == 0 and f"silence {silence_id} removed" in done.stdout, done.stderr
    done = await tandem("unsilence", silence_id, pair=pair)
    assert done.returncode == 2 and "409" in done.stderr, done.stderr


async def test_cleanup_clears_an_operator_alert_as_it_was_raised(pair: Pair) -> None:
    """Raised by another replica (its node) about a saga (its subject): ``tandem cleanup``
    clears that fingerprint, not one of its own."""
    stuck = AlertRaised(
        cluster=CLUSTER,
        node="orchestrator-b",
        payload=AlertRaisedPayload(
            code="saga.stuck", severity=Severity.CRITICAL, message="step 5 failed", subject="s1"
        ),
    )
    await publish(pair, stuck)

    async def firing() -> bool:
        return stuck.fingerprint in {a["fingerprint"] for a in await alerts(pair)}

    await eventually(firing, 20, "the saga.stuck alert")
    async with pair.api() as api:
        answer = await api.post(
            f"/api/v1/clusters/{CLUSTER}/cleanup", json={"reason": "checked by hand"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["alerts"] == ["saga.stuck"]
    [gone] = [a for a in await alerts(pair, "cleared") if a["code"] == "saga.stuck"]
    assert gone["fingerprint"] == stuck.fingerprint
    assert gone["cleared_reason"].startswith("cleared by operator:")
    assert gone["cleared_reason"].endswith(": checked by hand")
    cleared_events = await stored(pair, "AlertCleared")
    [event] = [e for e in cleared_events if e["payload"]["code"] == "saga.stuck"]
    assert (event["node"], event["payload"]["subject"]) == ("orchestrator-b", "s1")
