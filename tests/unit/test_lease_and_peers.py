"""The node's own judgement without a bus: when the lease keeper must fence (fake clock), how
the peer watch turns heartbeats and silence into HeartbeatLost/Restored (fake clock), the
board's worst-of health, and the outbox's in-order delivery after publish failures."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import Any

from helpers import alert, eventually
from tandem.agent.lease import LeaseKeeper
from tandem.events.catalog import HeartbeatLost, HeartbeatRestored, NodeSelfFenced
from tandem.events.catalog.vocabulary import HealthStatus, Role
from tandem.events.envelope import Event
from tandem.events.heartbeat import Heartbeat
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.monitor.detector import DetectorConfig
from tandem.monitor.peers import PeerWatch

NO_BUS: Any = None  # these parts are judged without a bus


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- LeaseKeeper.must_fence ----------------------------------------------------------------------


def keeper(
    board: NodeBoard,
    clock: FakeClock | None = None,
    emit: list[Event] | None = None,
    fence_calls: list[str] | None = None,
    bus: Any = NO_BUS,
) -> LeaseKeeper:
    async def fence(reason: str) -> list[str]:
        if fence_calls is not None:
            fence_calls.append(reason)
        return ["hid public identity (hidden)", "stopped app"]

    return LeaseKeeper(
        bus,
        "c1",
        "n1",
        ttl_s=5.0,
        renew_every_s=1.0,
        fence_margin_s=2.0,
        board=board,
        fence=fence,
        emit=(emit if emit is not None else []).append,
        clock=clock or FakeClock(),
    )


def test_not_active_never_fences() -> None:
    for role in (None, Role.PASSIVE):
        k = keeper(NodeBoard(role=role))
        k.last_renewed = 100.0
        assert k.must_fence(1000.0) == ""


def test_active_recently_renewed_does_not_fence() -> None:
    k = keeper(NodeBoard(role=Role.ACTIVE))
    k.last_renewed = 100.0
    assert k.fence_after_s == 3.0
    assert k.must_fence(100.0) == ""
    assert k.must_fence(102.9) == ""


def test_active_silent_for_ttl_minus_margin_fences_with_the_seconds() -> None:
    k = keeper(NodeBoard(role=Role.ACTIVE))
    k.last_renewed = 100.0
    at_limit = k.must_fence(103.0)  # exactly ttl - margin
    assert at_limit
    assert "3.0s" in at_limit and "lease 5s" in at_limit and "hide after 3s" in at_limit
    later = k.must_fence(104.5)
    assert "4.5s" in later


def test_already_fenced_does_not_fence_again() -> None:
    k = keeper(NodeBoard(role=Role.ACTIVE, fenced=True))
    k.last_renewed = 100.0
    assert k.must_fence(200.0) == ""


def test_a_slow_ack_is_waited_for_as_long_as_it_can_still_help() -> None:
    """ttl 5, margin 2: hide after 3 s. A renewal sent 0.5 s after the last good one may take
    2.5 s to be acknowledged and still count; never less than one renewal period."""
    k = keeper(NodeBoard(role=Role.ACTIVE))
    assert k._wait_for_ack_s(0.0) == 3.0  # nothing held yet: up to the fence time
    k.last_renewed = 100.0
    assert k._wait_for_ack_s(100.5) == 2.5
    assert k._wait_for_ack_s(102.9) == 1.0  # renew_every_s: a late one still gets a period
    assert k.guard_after_s == 4.0  # the guard hides at ttl - margin/2, after the agent would


class GuardStandIn:
    def __init__(self) -> None:
        self.sent: list[float | None] = []
        self.broken = ""

    def exit_code(self) -> int | None:
        return None

    def send(self, until: float | None, epoch: int = 0) -> bool:
        self.sent.append(until)
        return True


def test_serving_needs_the_lease_and_arms_the_guard_with_its_deadline() -> None:
    board = NodeBoard(role=Role.PASSIVE)
    clock = FakeClock(now=100.0)
    k = keeper(board, clock)
    guard = GuardStandIn()
    k.guard = guard  # type: ignore[assignment]
    assert "does not hold its lease yet" in k.refusal()
    k.last_renewed, k._renewed_boot, k._renewed_wall = 99.0, 5000.0, 1_700_000_000.0
    assert k.refusal() == ""
    k.arm()
    assert board.guarded and guard.sent == [5004.0]  # renewal start + ttl - margin/2
    assert board.serve_until == 1_700_000_004.0
    clock.now = 102.5  # 3.5 s after that renewal started: past ttl - margin
    assert "does not hold its lease (last renewal 3.5s ago" in k.refusal()
    k.disarm()
    assert not board.guarded and guard.sent[-1] is None and board.serve_until is None


def test_never_renewed_does_not_fence() -> None:
    k = keeper(NodeBoard(role=Role.ACTIVE))
    assert k.last_renewed is None
    assert k.must_fence(1_000_000.0) == ""


class UnreachableBus:
    """The bus is away: every attempt to reach the leases bucket fails (and is recorded)."""

    def __init__(self, order: list[str]) -> None:
        self.order = order

    async def kv(self, bucket: str) -> Any:
        self.order.append("renew")
        raise ConnectionError("bus unavailable")


async def test_after_a_freeze_the_keeper_fences_before_it_tries_to_renew() -> None:
    order: list[str] = []
    emitted: list[Event] = []
    board = NodeBoard(role=Role.ACTIVE, epoch=7)
    clock = FakeClock(now=100.0)
    k = keeper(board, clock, emitted, fence_calls=order, bus=UnreachableBus(order))
    k.last_renewed = 90.0  # as if the process was frozen for 10 s
    task = asyncio.create_task(k.run())
    try:
        await eventually(lambda: "renew" in order, what="a renewal attempt")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert order[0].startswith("lease not renewed for 10.0s")
    assert order[1] == "renew"
    assert board.fenced
    fenced = [e for e in emitted if isinstance(e, NodeSelfFenced)]
    assert len(fenced) == 1
    assert fenced[0].epoch == 7
    assert fenced[0].payload.actions == ["hid public identity (hidden)", "stopped app"]
    assert "10.0s" in fenced[0].payload.reason


class LosingBus:
    """The first put is lost (its request went down with its connection's server: no answer
    ever comes); every later put is acknowledged at once."""

    def __init__(self) -> None:
        self.puts = 0
        self.lost_waiting = False

    async def kv(self, bucket: str) -> LosingBus:
        return self

    async def put(self, key: str, value: bytes) -> int:
        self.puts += 1
        if self.puts == 1:
            self.lost_waiting = True
            try:
                await asyncio.Event().wait()
            finally:
                self.lost_waiting = False
        return self.puts


async def test_a_lost_renewal_does_not_hold_up_the_next() -> None:
    """The lost first put waits out its acknowledgement (up to ttl - margin: 29 s here) on
    its own; the next ones renew meanwhile (sent one after another, none would)."""
    board = NodeBoard(role=Role.ACTIVE, epoch=1)
    bus = LosingBus()
    k = LeaseKeeper(
        bus,  # type: ignore[arg-type]
        "c1",
        "n1",
        ttl_s=30.0,
        renew_every_s=0.1,
        fence_margin_s=1.0,
        board=board,
        fence=lambda reason: asyncio.sleep(0, []),  # type: ignore[arg-type]
        emit=lambda e: None,
    )
    task = asyncio.create_task(k.renew_forever(bus, lambda reason: None))  # type: ignore[arg-type]
    try:
        await eventually(lambda: k.renewals >= 3, what="renewals after the lost one")
        assert bus.lost_waiting  # renewed while the lost one still waits
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert bus.puts >= 4 and k.last_renewed is not None and not board.fenced


async def test_an_earlier_renewal_acknowledged_late_does_not_move_the_lease_back() -> None:
    board = NodeBoard(role=Role.ACTIVE, epoch=1)
    clock = FakeClock(now=10.0)
    k = keeper(board, clock, bus=LosingBus())
    k.last_renewed = 10.0  # a renewal started at 10.0 was acknowledged
    bus = LosingBus()
    bus.puts = 1  # acknowledged at once
    await k._renew_once(bus, "node.c1.n1", 9.5)  # type: ignore[arg-type]
    assert k.last_renewed == 10.0 and k.renewals == 1


# --- PeerWatch -----------------------------------------------------------------------------------

INTERVAL = 1.0
FIXED = DetectorConfig(kind="fixed", timeout_intervals=4)  # lost after 4 s of silence


def beat(node: str, seq: int, cluster: str = "c1") -> Heartbeat:
    return Heartbeat(
        cluster=cluster,
        node=node,
        role=Role.ACTIVE,
        epoch=3,
        seq=seq,
        interval_s=INTERVAL,
        sent_at=time.time(),
    )


def of_type(events: list[Event], cls: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def watch(emitted: list[Event], clock: FakeClock, peers: list[str] | None = None) -> PeerWatch:
    return PeerWatch(
        NO_BUS,
        "c1",
        "n1",
        ["n2"] if peers is None else peers,
        INTERVAL,
        FIXED,
        emitted.append,
        clock=clock,
    )


async def test_a_peer_heard_regularly_is_not_lost() -> None:
    emitted: list[Event] = []
    clock = FakeClock()
    w = watch(emitted, clock)
    for seq in range(1, 31):
        clock.now = seq * INTERVAL
        w.heard(beat("n2", seq), clock.now)
        assert w.check(clock.now + 0.5) == []
    assert emitted == []
    assert not w.peers["n2"].lost


async def test_silence_past_the_timeout_is_one_loss_then_one_restore() -> None:
    emitted: list[Event] = []
    clock = FakeClock()
    w = watch(emitted, clock)
    for seq in range(1, 6):
        w.heard(beat("n2", seq), float(seq))
    # Last heard at 5.0; the timeout is 4 s (silence must exceed it).
    assert w.check(9.0) == []
    assert w.check(9.5) == ["n2"]
    assert w.check(10.0) == [] and w.check(60.0) == []  # only the transition is an event

    lost = of_type(emitted, HeartbeatLost)
    assert len(lost) == 1 and len(emitted) == 1
    assert lost[0].node == "n1" and lost[0].payload.peer == "n2"
    assert "no heartbeat for 4.50s" in lost[0].payload.reason
    assert lost[0].payload.last_seen_at is not None

    w.heard(beat("n2", 6), 61.5)
    w.heard(beat("n2", 7), 62.5)  # the next ones are ordinary heartbeats
    restored = of_type(emitted, HeartbeatRestored)
    assert len(restored) == 1 and len(emitted) == 2
    assert restored[0].payload.peer == "n2"
    assert restored[0].payload.silent_for_s == 52.0  # from when the loss was noticed
    assert "heartbeat 6 from n2" in restored[0].payload.reason
    assert not w.peers["n2"].lost
    assert w.check(63.0) == []


async def test_a_configured_peer_never_heard_is_lost_after_the_grace() -> None:
    emitted: list[Event] = []
    clock = FakeClock(now=1000.0)
    w = watch(emitted, clock)  # started at 1000.0
    grace = w.grace_s
    assert grace >= INTERVAL * FIXED.timeout_intervals  # at least the detector's timeout
    assert w.check(1000.0 + grace / 2) == []
    assert w.check(1000.0 + grace - 0.01) == []
    assert emitted == []
    assert w.check(1000.0 + grace) == ["n2"]
    assert w.check(1000.0 + grace + 10) == []
    (lost,) = of_type(emitted, HeartbeatLost)
    assert lost.payload.peer == "n2"
    assert "never heard" in lost.payload.reason
    assert lost.payload.last_seen_at is None


def msg(b: Heartbeat) -> Any:
    return SimpleNamespace(data=b.to_bytes(), subject=f"tandem.hb.{b.cluster}.{b.node}", headers={})


async def test_own_and_foreign_heartbeats_are_not_taken_for_peers() -> None:
    emitted: list[Event] = []
    clock = FakeClock(now=10.0)
    w = watch(emitted, clock, peers=[])
    # The subscription sees this node's own heartbeats and, with a shared server, other
    # clusters': neither is a peer.
    await w._on_heartbeat(msg(beat("n1", 1)))
    await w._on_heartbeat(msg(beat("n9", 1, cluster="other")))
    assert w.peers == {}
    # A node of this cluster that is not in the config is watched from its first heartbeat.
    await w._on_heartbeat(msg(beat("n3", 1)))
    assert list(w.peers) == ["n3"]
    assert w.peers["n3"].detector.last_seen == 10.0
    assert w.check(100.0) == ["n3"]
    assert [e.payload.peer for e in of_type(emitted, HeartbeatLost)] == ["n3"]


# --- NodeBoard.health ----------------------------------------------------------------------------


def test_board_health_is_the_worst_check() -> None:
    ok, warn, crit, unknown = (
        HealthStatus.OK,
        HealthStatus.WARNING,
        HealthStatus.CRITICAL,
        HealthStatus.UNKNOWN,
    )
    assert NodeBoard().health() is unknown  # no checks: nothing is known
    cases = [
        ({"a": ok}, ok),
        ({"a": ok, "b": ok}, ok),
        ({"a": ok, "b": unknown}, unknown),
        ({"a": unknown, "b": warn, "c": ok}, warn),
        ({"a": warn, "b": crit, "c": unknown}, crit),
        ({"a": crit, "b": ok}, crit),
    ]
    for checks, worst in cases:
        assert NodeBoard(checks=checks).health() is worst, checks


# --- Outbox --------------------------------------------------------------------------------------


class FlakyBus:
    """Stands in for ``Bus.publish``: fails the first ``failures`` calls, then records. This
    tests the outbox's ordering and retry logic, not the bus (the real publish is covered by
    the integration tests)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.published: list[Event] = []

    async def publish(self, event: Event, *, timeout: float) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("bus unavailable")
        self.published.append(event)


async def test_outbox_delivers_in_order_once_publish_works() -> None:
    """Unit test of ordering and retry: events queued while publishing fails arrive in the
    order they were put, each once, when the (fake) bus accepts them again."""
    fake = FlakyBus(failures=10**9)  # away until the test says how many more calls fail
    outbox = Outbox(fake, max_backoff_s=0.05)  # type: ignore[arg-type]
    events = [alert(n=i) for i in range(6)]
    for event in events[:3]:
        outbox.put(event)
    task = asyncio.create_task(outbox.run())
    try:
        await eventually(lambda: fake.calls >= 2, what="failed publish attempts")
        for event in events[3:]:  # more events while the bus is still away
            outbox.put(event)
        fake.failures = fake.calls + 2  # two more failed attempts, then the bus is back
        assert await outbox.flush(timeout=30)
        assert [e.id for e in fake.published] == [e.id for e in events]
        assert fake.calls == fake.failures + len(events)  # each event published once
        assert len(outbox) == 0 and outbox.dropped == 0

        late = alert(n=99)  # the outbox keeps serving once drained
        outbox.put(late)
        await eventually(lambda: fake.published[-1:] == [late], what="a later event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_outbox_past_its_limit_drops_the_oldest() -> None:
    outbox = Outbox(FlakyBus(failures=0), limit=2)  # type: ignore[arg-type]
    events = [alert(n=i) for i in range(3)]
    for event in events:
        outbox.put(event)
    assert len(outbox) == 2
    assert outbox.dropped == 1
