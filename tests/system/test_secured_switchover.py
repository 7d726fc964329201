"""A managed switchover on a bus that requires logins and TLS (issue 17): the orchestrator
and the two node agents (with their replicators and monitors) each log in as their own
identity, and the permission table is enough for the whole saga."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus_security_rig import Client, SecuredBus, start_secured_bus
from helpers import eventually
from orchestrator_rig import Pair, both_nodes_ready, leader_ready, wait_saga
from tandem.events.bus_identities import ADMIN, ORCHESTRATOR, agent_user
from tandem.events.embedded import free_port
from tandem.events.roles import RoleRecord, read_role
from tandem.events.settings import load_stream_settings
from tandem.events.subjects import ROLES_BUCKET

pytestmark = pytest.mark.system

CLUSTER = "secured"
NODES = ["primary", "secondary"]


@pytest.fixture
def secured(tmp_path: Path, nats_binary: str) -> Iterator[SecuredBus]:
    bus = start_secured_bus(tmp_path / "bus", clusters={CLUSTER: NODES})
    yield bus
    bus.server.stop()


@pytest.fixture
def pair(secured: SecuredBus, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster=CLUSTER, tmp=tmp_path, bus_url=secured.server.url, public_port=free_port())
    yield p
    p.stop_all()


async def test_the_orchestrator_runs_a_switchover_with_least_privilege(
    secured: SecuredBus, pair: Pair
) -> None:
    admin: Client = await secured.connect(ADMIN, request_timeout_s=5.0)
    try:
        await admin.bus.provision(load_stream_settings())
        for node, role in (("primary", "active"), ("secondary", "passive")):
            login = secured.login_toml(agent_user(CLUSTER, node))
            pair.add_node(node, node, initial_role=role, bus_extra=login).start()
        # Agents may not write the role record, not even the first one: the node configured
        # Active says so and waits; the admin writes it.
        hint = f"tandem bus provision --first-active {CLUSTER}=primary"
        await eventually(lambda: hint in pair.agents["primary"].log.read_text(), 60, "the hint")
        roles = await admin.bus.kv(ROLES_BUCKET)
        record, _ = await read_role(roles, CLUSTER)
        assert record is None  # nobody claimed it
        await roles.create(
            CLUSTER,
            RoleRecord(active="primary", epoch=1, reason="first pairing")
            .model_dump_json()
            .encode(),
        )
        pair.add_orchestrator(extra_env=secured.login_env(ORCHESTRATOR)).start()
        await leader_ready(pair)
        await both_nodes_ready(pair)

        async with pair.api() as api:
            answer = await api.post(
                f"/api/v1/clusters/{CLUSTER}/switchover", json={"to": "secondary"}
            )
        assert answer.status_code == 202, answer.text
        saga = await wait_saga(pair, answer.json()["saga_id"])
        assert saga["state"] == "completed", saga
        record, _ = await read_role(roles, CLUSTER)
        assert record is not None and record.active == "secondary" and record.epoch == 2
    finally:
        await admin.close()
    for name, log in [(n, pair.agents[n].log) for n in NODES] + [
        ("orchestrator", pair.orchestrators[0].log)
    ]:
        text = log.read_text().lower()
        assert "permissions violation" not in text, f"{name}:\n{_violations(text)}"


def _violations(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "permissions violation" in line)[:4000]
