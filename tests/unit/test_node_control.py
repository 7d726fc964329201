"""Node control without a bus: the fold of ``NodeReinstated`` / ``NodeCleanedUp``, a rule
engine's reset, the agent's answers that need no application to run (unknown application,
not the Active, a ladder reset), and the orchestrator's refusals before it sends anything
(reinstate the Active, a node not alive, unknown cluster or node; app control without a
live Active)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tandem.agent.apps import ApplicationSet
from tandem.agent.control.config import ApplicationConfig
from tandem.agent.nodectl import NodeControl
from tandem.events.catalog import (
    CleanUpNode,
    ControlApplications,
    NodeCleanedUp,
    NodeReinstated,
    NodeSelfFenced,
    RoleChanged,
    SagaCompleted,
    SagaStarted,
)
from tandem.events.catalog.node_control import (
    CleanUpNodePayload,
    ControlApplicationsPayload,
    NodeCleanedUpPayload,
    NodeReinstatedPayload,
)
from tandem.events.catalog.roles import NodeSelfFencedPayload, RoleChangedPayload
from tandem.events.catalog.sagas import SagaEndedPayload, SagaStartedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Role, SagaKind
from tandem.events.heartbeat import Heartbeat
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.monitor.health.base import Sample
from tandem.monitor.rules import RuleConfig, RuleEngine
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState

T0 = datetime.now(UTC).replace(microsecond=0)
C = "pg"


def automatic_switchover(state: ClusterState, old: str = "a", new: str = "b") -> None:
    """``old`` was Active; an automatic switchover completed onto ``new``."""
    started = SagaStartedPayload(
        saga_id="s1",
        kind=SagaKind.SWITCHOVER,
        from_node=old,
        to_node=new,
        steps=["stop applications"],
        reason="rule web-down",
        automatic=True,
    )
    state.apply(SagaStarted(cluster=C, node="orchestrator", occurred_at=T0, payload=started))
    role = RoleChangedPayload(active_node=new, previous_active=old, new_epoch=2, reason="t")
    state.apply(RoleChanged(cluster=C, node="orchestrator", epoch=2, payload=role))
    ended = SagaEndedPayload(saga_id="s1", reason="done")
    state.apply(SagaCompleted(cluster=C, node="orchestrator", occurred_at=T0, payload=ended))


def test_a_reinstated_node_no_longer_awaits_an_operator() -> None:
    state = ClusterState()
    automatic_switchover(state)
    assert state.cluster(C).node("a").awaiting_operator
    payload = NodeReinstatedPayload(target="a", source="b", by="alice", reason="disk ok")
    state.apply(NodeReinstated(cluster=C, node="orchestrator", payload=payload))
    assert not state.cluster(C).node("a").awaiting_operator


def test_a_cleanup_clears_only_the_nodes_it_names() -> None:
    state = ClusterState()
    automatic_switchover(state)
    fenced = NodeSelfFencedPayload(reason="lease lost", actions=["hid"], fenced_at=T0)
    for node in ("a", "b"):
        state.apply(NodeSelfFenced(cluster=C, node=node, occurred_at=T0, payload=fenced))
    payload = NodeCleanedUpPayload(by="alice", reason="checked", unfenced=["a"], released=["a"])
    state.apply(NodeCleanedUp(cluster=C, node="orchestrator", payload=payload))
    a, b = state.cluster(C).node("a"), state.cluster(C).node("b")
    assert (a.fenced, a.fenced_reason, a.awaiting_operator) == (False, "", False)
    assert (b.fenced, b.fenced_reason) == (True, "lease lost")


def test_a_reset_puts_every_rule_back_on_its_first_rung() -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "web-down",
            "check": "web",
            "metric": "up",
            "comparator": "==",
            "threshold": 0,
            "consecutive": 1,
            "recover_s": 1000,
            "actions": [{"do": "alert"}, {"do": "restart"}],
        }
    )
    engine = RuleEngine([rule])
    down = Sample(status=HealthStatus.CRITICAL, metrics={"up": 0.0}, message="refused")
    assert [d.action.do for d in engine.observe("web", down, 0.0)] == ["alert"]
    assert engine.status()[0]["rung"] == 1
    engine.reset()
    assert engine.status()[0]["rung"] == 0
    assert [d.action.do for d in engine.observe("web", down, 1.0)] == ["alert"]


# -- the agent's answers ------------------------------------------------------------------


def control(tmp_path: Path, role: Role | None) -> NodeControl:
    app = ApplicationConfig.model_validate(
        {"name": "web", "start": [sys.executable, "-c", "pass"], "log_file": tmp_path / "w.log"}
    )
    board = NodeBoard(role=role, epoch=2)
    return NodeControl("b", ApplicationSet([app], tmp_path / "state"), board, ["web-down"])


def apps_command(action: str, apps: list[str]) -> ControlApplications:
    payload = ControlApplicationsPayload(action=action, applications=apps)
    return ControlApplications(cluster=C, node="b", epoch=2, payload=payload)


async def test_an_unknown_application_is_refused_naming_the_ones_there(tmp_path: Path) -> None:
    result = await control(tmp_path, Role.ACTIVE).handle(apps_command("restart", ["db"]))
    assert not result.ok
    assert result.reason == "no application db on b (there: web)"
    assert result.data["unknown"] == ["db"]


async def test_a_passive_refuses_to_control_its_applications(tmp_path: Path) -> None:
    result = await control(tmp_path, Role.PASSIVE).handle(apps_command("start", []))
    assert not result.ok and result.data["refused"]
    assert "b is not the Active (plays passive)" in result.reason


async def test_a_cleanup_resets_the_ladders_and_clears_only_a_stale_fence(tmp_path: Path) -> None:
    node = control(tmp_path, Role.PASSIVE)
    command = CleanUpNode(cluster=C, node="b", epoch=2, payload=CleanUpNodePayload())
    result = await node.handle(command)
    assert result.ok and result.reason == "b: restart ladders reset (rules: web-down)"
    assert node.board.ladder_resets == 1 and result.data == {}

    # Fenced at the current epoch: its lease keeper and guard hold it; kept, saying why.
    b = node.board
    b.fenced, b.fenced_epoch, b.fenced_reason = True, 2, "lease lost"
    result = await node.handle(command.model_copy(update={"idempotency_key": "k2"}))
    assert result.ok and b.fenced and b.ladder_resets == 2
    assert "b fenced itself at epoch 2, the current one (lease lost)" in str(result.data["kept"])

    # A newer epoch but no role known yet (a restart): not known to be a Passive, kept.
    b.epoch, b.role = 3, None
    result = await node.handle(command.model_copy(update={"idempotency_key": "k2b"}))
    assert result.ok and b.fenced and "has no role at epoch 3 yet" in str(result.data["kept"])

    # The role record moved on since (epoch 3 names another node): a stale fence, cleared.
    b.role = Role.PASSIVE
    result = await node.handle(command.model_copy(update={"idempotency_key": "k3"}))
    assert result.ok and not b.fenced and result.data == {"unfenced": True}
    assert "stale fence cleared (fenced at epoch 2: lease lost" in result.reason


# -- the orchestrator's refusals ----------------------------------------------------------


class Node(Orchestrator):
    """The real orchestrator over no bus (it leads; nothing is sent in these tests)."""

    def __init__(self) -> None:
        self.now = 0.0
        clock = lambda: self.now  # noqa: E731
        super().__init__(
            None,  # type: ignore[arg-type]
            OrchestratorSettings(),
            OrchestratorFile(),
            ClusterState(),
            Liveness(None, default_timeout_s=5.0, clock=clock),  # type: ignore[arg-type]
            LeaderLease(None, "orchestrator", clock=clock),  # type: ignore[arg-type]
            outbox=Outbox(None),  # type: ignore[arg-type]
        )

    def is_leader(self) -> bool:
        return True

    def beat(self, node: str, **fields: Any) -> None:
        beat = Heartbeat(cluster=C, node=node, seq=1, interval_s=0.25, sent_at=0.0, **fields)
        self.liveness.seen[(C, node)] = Seen(heartbeat=beat, heartbeat_at=self.now)


@pytest.fixture
def pair() -> Node:
    o = Node()
    automatic_switchover(o.state)
    o.beat("b")
    return o


async def test_reinstating_the_active_is_a_conflict(pair: Node) -> None:
    pair.beat("a")
    with pytest.raises(ConflictError, match=r"^b is the Active of pg: nothing to reinstate$"):
        await pair.reinstate(C, "b", "alice", "t")


async def test_reinstating_a_node_not_alive_is_a_conflict(pair: Node) -> None:
    with pytest.raises(ConflictError, match="a is not alive"):
        await pair.reinstate(C, "a", "alice", "t")


async def test_unknown_cluster_or_node_is_not_found(pair: Node) -> None:
    with pytest.raises(NotFoundError, match="no cluster 'nope'"):
        await pair.reinstate("nope", "a", "alice", "t")
    with pytest.raises(NotFoundError, match="cluster pg has no node 'zz'"):
        await pair.reinstate(C, "zz", "alice", "t")
    with pytest.raises(NotFoundError, match="cluster pg has no node 'zz'"):
        await pair.cleanup(C, "zz", "alice", "t")


async def test_applications_are_not_controlled_without_a_live_active(pair: Node) -> None:
    pair.liveness.seen.clear()
    with pytest.raises(ConflictError, match="the Active b is not alive"):
        await pair.control_apps(C, "restart", None, "alice", "t")
