"""A DR pair whose clients find the Active by DNS name: real node agents with the ``dns``
public identity, the real dns_updater process, a real BIND9 named and the orchestrator, on
one real nats-server. A switchover moves the name to the new Active's site address before
the Expose step completes; with a dns_updater that cannot sign its updates the switchover
still completes under ``dns_on_missing = "continue"``, with the alert raised."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder, ServiceProcess
from bind_rig import BindServer, bind_server, write_key
from helpers import eventually
from orchestrator_rig import Pair, both_nodes_ready, leader_ready, wait_saga
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer

pytestmark = pytest.mark.system

LABEL = "erp"  # erp.dr.tandem.test
NAME = f"{LABEL}.dr.tandem.test"
# The sites' addresses: only DNS record contents here, never contacted.
SITE = {"primary": "192.0.2.10", "secondary": "198.51.100.20"}


@pytest.fixture
def named(tmp_path: Path) -> Iterator[BindServer]:
    yield from bind_server(tmp_path / "named", records=[f"{LABEL} IN A {SITE['primary']}"])


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster="erp", tmp=tmp_path, bus_url=nats_server.url, public_port=None)
    yield p
    p.stop_all()


def public_dns(node: str, on_missing: str) -> str:
    return f"""
[public]
kind = "dns"
dns_name = "{NAME}"
site_address = "{SITE[node]}"
dns_wait_s = 15
dns_on_missing = "{on_missing}"
"""


def dns_updater(pair: Pair, named: BindServer, key_file: Path) -> ServiceProcess:
    config = pair.tmp / "dns_updater.toml"
    config.write_text(
        f"""key_file = "{key_file}"

[update]
servers = [{{ address = "{named.host}", port = {named.port} }}]
timeout_s = 2

[retry]
initial_s = 0.1
max_s = 0.5
attempts = 3
deadline_s = 10

[verify]
timeout_s = 5
interval_s = 0.1

[[names]]
cluster = "{pair.cluster}"
name = "{NAME}"
zone = "{named.zone}."
ttl = 30
addresses = {{ primary = "{SITE["primary"]}", secondary = "{SITE["secondary"]}" }}
"""
    )
    env = {
        "TANDEM_BUS_SERVERS": pair.bus_url,
        "TANDEM_DNS_UPDATER_CONFIG": str(config),
        "TANDEM_DNS_UPDATER_INSTANCE": "dns-updater",
    }
    service = ServiceProcess("tandem.dns_updater", env, pair.tmp / "dns_updater.log")
    pair.orchestrators.append(service)  # stopped with the pair
    return service.start()


async def start_dr_pair(pair: Pair, on_missing: str) -> None:
    for node, role in (("primary", "active"), ("secondary", "passive")):
        extra = public_dns(node, on_missing)
        pair.add_node(node, node, initial_role=role, extra=extra, public=False).start()
    pair.add_orchestrator().start()
    await leader_ready(pair)
    await both_nodes_ready(pair)


async def switch_to_secondary(pair: Pair) -> dict[str, object]:
    async with pair.api() as api:
        answer = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "secondary"}
        )
    assert answer.status_code == 202, answer.text
    return await wait_saga(pair, answer.json()["saga_id"])


def expose_step(saga: dict[str, object]) -> dict[str, str]:
    steps = saga["steps"]
    assert isinstance(steps, list)
    [step] = [s for s in steps if s["command"] == "Expose" and s["node"] == "secondary"]
    return step


async def test_a_switchover_moves_the_dr_name_before_the_new_active_is_exposed(
    bus: Bus, pair: Pair, named: BindServer
) -> None:
    recorder = await EventRecorder().start(bus, pair.cluster)
    updater = dns_updater(pair, named, named.key_file)
    await start_dr_pair(pair, on_missing="fail")
    assert await named.addresses(LABEL) == {SITE["primary"]}

    saga = await switch_to_secondary(pair)
    assert saga["state"] == "completed", (saga, updater.tail())
    step = expose_step(saga)
    assert f"{NAME} points to {SITE['secondary']}" in step["reason"], step
    assert await named.addresses(LABEL) == {SITE["secondary"]}

    # The first was the initial claim's (epoch 1, to primary); this switchover's is epoch 2.
    [updated] = [e for e in recorder.of("DnsUpdated", name=NAME) if e.epoch == 2]
    assert updated.payload.addresses == [SITE["secondary"]]
    # The dns_updater reacted to the pivot's RoleChanged; the Expose step waited for it.
    [pivot] = [e for e in recorder.of("RoleChanged") if e.epoch == 2]
    assert recorder.events.index(pivot) < recorder.events.index(updated)
    assert not recorder.of("AlertRaised")

    # And back: the name follows the Active home.
    async with pair.api() as api:
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
    back = await wait_saga(pair, answer.json()["saga_id"])
    assert back["state"] == "completed", back
    assert await named.addresses(LABEL) == {SITE["primary"]}
    await recorder.stop()


async def test_with_a_wrong_key_the_switchover_continues_and_raises_the_alert(
    bus: Bus, pair: Pair, named: BindServer
) -> None:
    recorder = await EventRecorder().start(bus, pair.cluster)
    wrong = write_key(pair.tmp / "wrong.key", secret="d3JvbmcgYnV0IHdlbGwgZm9ybWVkIGtleQ==")
    dns_updater(pair, named, wrong)
    await start_dr_pair(pair, on_missing="continue")

    saga = await switch_to_secondary(pair)
    assert saga["state"] == "completed", saga
    step = expose_step(saga)
    assert f"{NAME} not confirmed" in step["reason"] and "BADSIG" in step["reason"], step
    # Clients still find the old site: the operator is told, by both services.
    assert await named.addresses(LABEL) == {SITE["primary"]}
    code = f"dns.update_failed.{NAME}"

    def alerted_by_both() -> bool:
        raised = {e.node for e in recorder.of("AlertRaised", code=code)}
        return {"dns-updater", "secondary"} <= raised

    await eventually(alerted_by_both, 10, "the alert from the dns_updater and the agent")
    await recorder.stop()
