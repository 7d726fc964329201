"""DNS reconcile and the orchestrator's metrics, against real processes: a real nats-server,
a real BIND9 ``named``, the orchestrator and the dns_updater as processes, and the ``tandem``
CLI as a subprocess.

One set-up per module (cluster ``alpha``, DR name ``app.dr.tandem.test``, nodes ``primary``
and ``secondary``): the role changes are written as the orchestrator writes them (role
record, then ``RoleChanged``), with no agents; the tests run in order, each starting from
where the previous one left the name."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_rig import ServiceProcess
from bind_rig import BindServer, bind_server, write_key
from conftest import reset_bus
from helpers import eventually
from orchestrator_rig import OPERATOR, VIEWER, Pair, leader_ready
from tandem.dns_updater.config import Server
from tandem.dns_updater.tsigkey import load_key
from tandem.dns_updater.update import build_update, send_update
from tandem.events.bus import Bus
from tandem.events.catalog import (
    NodeRoleAssumed,
    RoleChanged,
    SagaCompleted,
    SagaStarted,
)
from tandem.events.catalog.roles import NodeRoleAssumedPayload, RoleChangedPayload
from tandem.events.catalog.sagas import SagaEndedPayload, SagaStartedPayload
from tandem.events.catalog.vocabulary import Identity, Role, SagaKind
from tandem.events.embedded import NatsServer
from tandem.events.roles import RoleRecord
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import ROLES_BUCKET, role_key

pytestmark = pytest.mark.system

CLUSTER = "alpha"
NAME = "app.dr.tandem.test"
PRIMARY, SECONDARY = {"10.0.0.5"}, {"10.1.0.5"}
DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "tandem-dashboard.json"


@dataclass
class Rig:
    pair: Pair
    named: BindServer
    tmp: Path
    key: Path
    config: Path
    dns: ServiceProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.pair.api_ports[0]}"

    def write_config(self, interval_s: float = 0) -> None:
        self.config.write_text(
            f"""key_file = "{self.key}"
[update]
servers = [{{ address = "{self.named.host}", port = {self.named.port} }}]
timeout_s = 2
[retry]
initial_s = 0.1
max_s = 0.5
attempts = 3
deadline_s = 10
[verify]
timeout_s = 10
interval_s = 0.1
[reconcile]
interval_s = {interval_s}
[[names]]
cluster = "{CLUSTER}"
name = "{NAME}"
zone = "dr.tandem.test."
ttl = 30
addresses = {{ primary = "10.0.0.5", secondary = "10.1.0.5" }}
"""
        )

    def start_dns(self) -> None:
        """Start the dns_updater; returns once it says it started."""
        before = dns_starts(self)
        env = {
            "TANDEM_BUS_SERVERS": self.pair.bus_url,
            "TANDEM_DNS_UPDATER_CONFIG": str(self.config),
            "TANDEM_DNS_UPDATER_INSTANCE": "dns-updater",
        }
        self.dns = ServiceProcess("tandem.dns_updater", env, self.tmp / "dns_updater.log").start()
        wait_for(lambda: dns_starts(self) > before, "the dns_updater to start")

    def stop_dns(self) -> None:
        if self.dns is not None:
            assert self.dns.stop() == 0, self.dns.tail()
            self.dns = None


def bus_call(url: str, work: Any) -> Any:
    async def go() -> Any:
        async with await Bus.connect(load_bus_settings(servers=[url]), name="tandem-test") as bus:
            return await work(bus)

    return asyncio.run(go())


async def move_role(bus: Bus, node: str, epoch: int, previous: str | None) -> None:
    """As the orchestrator's pivot: the role record, then RoleChanged."""
    kv = await bus.kv(ROLES_BUCKET)
    record = RoleRecord(active=node, epoch=epoch, reason="test")
    await kv.put(role_key(CLUSTER), record.model_dump_json().encode())
    payload = RoleChangedPayload(
        active_node=node, previous_active=previous, new_epoch=epoch, reason="test"
    )
    await bus.publish(
        RoleChanged(cluster=CLUSTER, node="orchestrator", epoch=epoch, payload=payload)
    )


async def seed(bus: Bus) -> None:
    """A cluster with history: its nodes, one completed failover, primary Active at epoch 1."""
    await reset_bus(bus)
    await bus.provision(load_stream_settings())
    for node, identity, role in (
        ("primary", Identity.PRIMARY, Role.ACTIVE),
        ("secondary", Identity.SECONDARY, Role.PASSIVE),
    ):
        payload = NodeRoleAssumedPayload(identity=identity, role=role, reason="test")
        await bus.publish(NodeRoleAssumed(cluster=CLUSTER, node=node, payload=payload))
    started = SagaStartedPayload(
        saga_id="saga-old",
        kind=SagaKind.FAILOVER,
        from_node="secondary",
        to_node="primary",
        steps=["apply"],
        reason="history",
    )
    await bus.publish(SagaStarted(cluster=CLUSTER, node="orchestrator", payload=started))
    ended = SagaEndedPayload(saga_id="saga-old", reason="done")
    await bus.publish(SagaCompleted(cluster=CLUSTER, node="orchestrator", payload=ended))
    await move_role(bus, "primary", 1, None)


@pytest.fixture(scope="module")
def rig(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("dns-reconcile")
    named_gen = bind_server(tmp / "named", records=["app IN A 10.0.0.5"])
    named = next(named_gen)
    pair = Pair(cluster=CLUSTER, tmp=tmp, bus_url=nats_server.url, public_port=None)
    rig = Rig(pair, named, tmp, key=tmp / "dns.key", config=tmp / "dns_updater.toml")
    try:
        bus_call(nats_server.url, seed)
        pair.add_orchestrator().start()
        asyncio.run(leader_ready(pair))
        yield rig
    finally:
        if rig.dns is not None:
            rig.dns.stop()
        pair.stop_all()
        named_gen.close()


def api(rig: Rig, token: str = OPERATOR) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=rig.api_url, headers=headers, timeout=10)


def events(rig: Rig, type_name: str, cluster: str | None = CLUSTER) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000, **({"cluster": cluster} if cluster else {})}
    with api(rig) as client:
        answer = client.get("/api/v1/events", params=params)
        answer.raise_for_status()
        return [e for e in answer.json() if e["type"] == type_name]


def dns_starts(rig: Rig) -> int:
    started = events(rig, "ServiceStarted", cluster=None)
    return len([e for e in started if e["payload"]["service"] == "dns_updater"])


def metrics(rig: Rig) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{rig.api_url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def open_alerts(rig: Rig) -> set[str]:
    return {
        dict(labels)["code"]
        for (name, labels), value in metrics(rig).items()
        if name == "tandem_alerts_active" and value == 1
    }


def addresses(rig: Rig) -> set[str]:
    return asyncio.run(rig.named.addresses("app"))


def tandem(rig: Rig, *args: str, token: str = OPERATOR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args, "--api", rig.api_url, "--token", token],
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for(check: Any, what: str, timeout: float = 45) -> None:
    async def poll() -> None:
        await eventually(lambda: asyncio.to_thread(check), timeout, what)

    asyncio.run(poll())


def hand_edit(rig: Rig, address: str) -> None:
    """Someone points the name elsewhere by hand (with the zone's real key)."""
    update = build_update(
        "dr.tandem.test.", f"{NAME}.", 30, [address], load_key(rig.named.key_file)
    )
    server = Server(address=rig.named.host, port=rig.named.port or 53)
    asyncio.run(send_update(update, server, timeout=5))


def test_a_move_that_failed_on_a_wrong_key_is_repaired_on_request_once_the_key_is_fixed(
    rig: Rig,
) -> None:
    write_key(rig.key)  # the zone's key name, a wrong secret
    rig.write_config()
    rig.start_dns()
    bus_call(rig.pair.bus_url, lambda bus: move_role(bus, "secondary", 2, "primary"))
    # (Its consumer's first start also tried the last role change before, epoch 1: failed.)
    wait_for(lambda: any(e["epoch"] == 2 for e in events(rig, "DnsUpdateFailed")), "a failure")
    failed = events(rig, "DnsUpdateFailed")
    assert all("BADSIG" in e["payload"]["reason"] for e in failed)
    assert addresses(rig) == PRIMARY  # the old site, after the role change
    wait_for(lambda: f"dns.update_failed.{NAME}" in open_alerts(rig), "the alert in /metrics")

    shutil.copy(rig.named.key_file, rig.key)  # the key fixed; the dns_updater keeps running
    done = tandem(rig, "dns", "reconcile", CLUSTER, "--reason", "key fixed", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fixed" in done.stdout and NAME in done.stdout
    assert "1 name(s) point at their Active (1 repaired)" in done.stdout
    assert addresses(rig) == SECONDARY

    [repaired] = events(rig, "DnsRecordReconciled")
    p = repaired["payload"]
    assert (p["name"], p["active_node"], p["addresses"], p["trigger"]) == (
        NAME,
        "secondary",
        ["10.1.0.5"],
        "request",
    )
    assert p["found"] == [f"127.0.0.1:{rig.named.port}: [10.0.0.5]"]
    [answer] = events(rig, "DnsReconcileCompleted")
    assert answer["payload"]["names"][0]["outcome"] == "fixed"
    wait_for(lambda: not {a for a in open_alerts(rig) if a.startswith("dns.")}, "alerts cleared")
    # Repaired without a switchover: no saga, the same epoch, the same Active.
    assert [e["payload"]["saga_id"] for e in events(rig, "SagaStarted")] == ["saga-old"]
    with api(rig) as client:
        view = client.get(f"/api/v1/clusters/{CLUSTER}").json()
    assert (view["active"], view["epoch"]) == ("secondary", 2)
    audit = [e for e in events(rig, "OperatorActionRecorded")]
    assert [(a["payload"]["action"], a["payload"]["arguments"]["reason"]) for a in audit] == [
        ("dns_reconcile", "key fixed")
    ]
    assert audit[0]["payload"]["outcome"] == "accepted: 202"

    # Asked again: the name is right, nothing is moved or recorded but the answer.
    again = tandem(rig, "dns", "reconcile", "--timeout", "60")  # every cluster
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ok" in again.stdout and "1 name(s) point at their Active" in again.stdout
    assert len(events(rig, "DnsRecordReconciled")) == 1


def test_the_request_refuses_bad_input_and_a_viewer(rig: Rig) -> None:
    with api(rig) as client:
        unknown = client.post("/api/v1/dns/reconcile", json={"cluster": "nope"})
        assert unknown.status_code == 404 and "no cluster 'nope'" in unknown.json()["detail"]
        bad = client.post("/api/v1/dns/reconcile", json={"cluster": "Not_A_Name"})
        assert bad.status_code == 422
        extra = client.post("/api/v1/dns/reconcile", json={"clusters": ["alpha"]})
        assert extra.status_code == 422 and "clusters" in extra.json()["detail"]
    with api(rig, VIEWER) as client:
        assert client.post("/api/v1/dns/reconcile", json={}).status_code == 403
    assert httpx.post(f"{rig.api_url}/api/v1/dns/reconcile", timeout=10).status_code == 401

    refused = tandem(rig, "dns", "reconcile", "nope")
    assert refused.returncode == 2 and "404" in refused.stderr
    viewer = tandem(rig, "dns", "reconcile", CLUSTER, token=VIEWER)
    assert viewer.returncode == 2 and "403" in viewer.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "dns", "reconcile", "--api", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 3, unreachable.stderr

    def refusals() -> set[str]:
        recorded = events(rig, "OperatorActionRecorded", cluster=None)  # "nope": on tandem
        return {
            e["payload"]["outcome"].split(" ")[1]
            for e in recorded
            if e["payload"]["action"] == "dns_reconcile"
            and e["payload"]["outcome"].startswith("refused")
        }

    wait_for(lambda: {"404", "422", "403"} <= refusals(), "the refusals in the audit")


def test_at_start_and_periodically_a_name_edited_by_hand_is_moved_back(rig: Rig) -> None:
    rig.stop_dns()
    hand_edit(rig, "10.9.9.9")  # while the dns_updater is away
    rig.write_config(interval_s=0.5)
    rig.start_dns()
    wait_for(lambda: len(events(rig, "DnsRecordReconciled")) == 2, "the repair at start")
    assert events(rig, "DnsRecordReconciled")[-1]["payload"]["trigger"] == "start"
    assert addresses(rig) == SECONDARY

    hand_edit(rig, "10.9.9.8")
    wait_for(lambda: len(events(rig, "DnsRecordReconciled")) == 3, "the periodic repair")
    last = events(rig, "DnsRecordReconciled")[-1]["payload"]
    assert last["trigger"] == "periodic" and "10.9.9.8" in last["found"][0]
    assert addresses(rig) == SECONDARY
    raised = [e["payload"]["code"] for e in events(rig, "AlertRaised")]
    assert not [code for code in raised if code.startswith("dns.stale")]
    rig.stop_dns()


def test_metrics_label_roles_epochs_sagas_and_alerts_and_the_dashboard_uses_them(
    rig: Rig,
) -> None:
    got = metrics(rig)
    alpha = frozenset({("cluster", CLUSTER)})
    assert got[("tandem_cluster_epoch", alpha)] == 2
    assert got[("tandem_cluster_paused", alpha)] == 0
    assert got[("tandem_failovers_total", alpha)] == 1
    sagas = frozenset({("cluster", CLUSTER), ("kind", "failover"), ("state", "completed")})
    assert got[("tandem_sagas", sagas)] == 1
    duration = frozenset({("kind", "failover"), ("outcome", "completed")})
    assert got[("tandem_saga_duration_seconds_count", duration)] == 1
    role = frozenset({("cluster", CLUSTER), ("node", "secondary"), ("role", "passive")})
    assert got[("tandem_node_role", role)] == 1  # as the node last said (no agent runs)
    health = frozenset({("cluster", CLUSTER), ("node", "primary"), ("status", "unknown")})
    assert got[("tandem_node_health", health)] == 1

    text = httpx.get(f"{rig.api_url}/metrics", timeout=10).text
    declared = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    samples = {name for name, _ in got}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])] + [
        dashboard["templating"]["list"][0]["definition"]
    ]
    used = {name for expr in exprs for name in re.findall(r"\btandem_[a-z_]+", expr)}
    assert len(used) >= 20
    missing = {
        name
        for name in used
        if name not in samples and re.sub(r"_(bucket|sum|count|total)$", "", name) not in declared
    }
    assert not missing, f"the dashboard uses metrics /metrics does not have: {sorted(missing)}"
