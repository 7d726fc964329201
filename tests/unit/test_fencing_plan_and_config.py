"""The failover plan's fence step, the ``[[fencing]]`` tables of the orchestrator's file, and
the guard's verdict from what ``Liveness`` saw (a clock of the test's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tandem.events.settings import SettingsError
from tandem.orchestrator.fencing import Fencer
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.plans import CHANGE_ROLE, FENCE, failover_plan, switchover_plan
from tandem.orchestrator.settings import OrchestratorFile, load_file

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "orchestrator.toml"


# -- the plan -------------------------------------------------------------------------------


def test_a_failover_fences_the_old_active_right_after_the_pivot() -> None:
    plan = failover_plan("primary", "secondary", 4, timeout_s=7)
    assert [s.name for s in plan] == [
        "change role",
        "fence old Active",
        "apply receive queue",
        "expose",
        "start intercepting",
        "start applications",
    ]
    pivot, fence = plan[0], plan[1]
    assert pivot.command == CHANGE_ROLE and pivot.pivot
    assert (fence.node, fence.command, fence.epoch, fence.timeout_s) == ("primary", FENCE, 5, 7)
    assert fence.compensation is None and not fence.pivot
    assert all(s.node == "secondary" for s in plan if s is not fence)
    assert all(s.epoch == 5 for s in plan)


def test_a_failover_from_no_active_has_nothing_to_fence() -> None:
    plan = failover_plan(None, "secondary", 0, timeout_s=7)
    assert FENCE not in [s.command for s in plan]
    assert plan[0].command == CHANGE_ROLE and plan[1].name == "apply receive queue"


def test_a_switchover_does_not_fence_the_old_active_hides_itself() -> None:
    plan = switchover_plan("primary", "secondary", 1, timeout_s=7)
    assert FENCE not in [s.command for s in plan]
    assert [s.name for s in plan].index("hide") < [s.name for s in plan].index("change role")


# -- the config -----------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "orchestrator.toml"
    path.write_text(text)
    return path


def test_the_example_file_parses_with_its_groups_and_fencing() -> None:
    file = load_file(EXAMPLE)
    assert [g.name for g in file.groups] == ["erp"]
    methods = {(f.cluster, f.node): f.method for f in file.fencing}
    assert methods == {
        ("erp-db", None): "guard",
        ("erp-app", "primary"): "command",
        ("erp-app", "secondary"): "vmware",
    }


def test_a_node_table_wins_over_its_cluster_table_and_the_default_is_the_guard(
    tmp_path: Path,
) -> None:
    file = load_file(
        write(
            tmp_path,
            """
[[fencing]]
cluster = "erp"
method = "command"
command = ["fence", "{cluster}", "{node}"]
timeout_s = 3
on_failure = "expose"

[[fencing]]
cluster = "erp"
node = "secondary"
method = "guard"
clock_allowance_s = 0.5
""",
        )
    )
    primary = file.fencing_for("erp", "primary")
    assert primary.method == "command" and primary.command == ["fence", "{cluster}", "{node}"]
    assert primary.timeout_s == 3 and primary.on_failure == "expose"
    secondary = file.fencing_for("erp", "secondary")
    assert secondary.method == "guard" and secondary.clock_allowance_s == 0.5
    other = file.fencing_for("crm", "primary")
    assert other.method == "guard" and other.clock_allowance_s == 0.25
    assert other.on_failure == "needs_operator" and other.timeout_s is None


@pytest.mark.parametrize(
    ("table", "field", "problem"),
    [
        ('method = "stonith"', "fencing.0.method", "'guard', 'command' or 'vmware'"),
        ('on_failure = "pray"', "fencing.0.on_failure", "'needs_operator' or 'expose'"),
        ("timeout_s = -1", "fencing.0.timeout_s", "greater than 0"),
        ("clock_allowance_s = -0.1", "fencing.0.clock_allowance_s", "greater than or equal"),
        ('colour = "red"', "fencing.0.colour", "Extra inputs are not permitted"),
        (
            'method = "command"',
            "fencing.0",
            'command: required (an argv list) with method "command"',
        ),
        ('method = "command"\ncommand = []', "fencing.0", "command: required"),
        ('command = ["x"]', "fencing.0", 'command: only for method "command"'),
        ('vm = "vm-1"\nnode = "a"', "fencing.0", 'vm: only for method "vmware"'),
        ('method = "vmware"\nvm = "vm-1"', "fencing.0", "vm: names one VM, so give the node too"),
        ('node = "Bad Node"', "fencing.0.node", ""),
        ("command = 3", "fencing.0.command", "valid list"),
    ],
)
def test_a_bad_fencing_field_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, table: str, field: str, problem: str
) -> None:
    path = write(tmp_path, f'[[fencing]]\ncluster = "erp"\n{table}\n')
    with pytest.raises(SettingsError) as info:
        load_file(path)
    text = str(info.value)
    assert str(path) in text
    line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"{field}:")), None)
    assert line is not None, text
    assert problem in line, text


def test_two_tables_for_the_same_node_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, '[[fencing]]\ncluster = "erp"\n\n[[fencing]]\ncluster = "erp"\n')
    with pytest.raises(SettingsError) as info:
        load_file(path)
    assert str(path) in str(info.value)
    assert "fencing: " in str(info.value) and "two [[fencing]] tables for cluster erp" in str(
        info.value
    )


# -- the guard's verdict --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fencer_with(seen: Seen | None, clock: Clock) -> Fencer:
    liveness = Liveness(bus=None, default_timeout_s=1.0, clock=clock)  # type: ignore[arg-type]
    if seen is not None:
        liveness.seen[("erp", "primary")] = seen
    return Fencer(None, liveness, OrchestratorFile())  # type: ignore[arg-type]


def lease(**kw: Any) -> Seen:
    base: dict[str, Any] = {"lease_revision": 7, "lease_ttl_s": 1.5, "lease_role": "active"}
    return Seen(**(base | kw))


def known_up_to(fencer: Fencer, at: float) -> None:
    """The lease watch has delivered every write stored before ``at``."""
    fencer.liveness.watching_since = fencer.liveness.started
    fencer.liveness.leases.known_until = at


def test_the_guard_counts_silence_from_first_sight_to_the_last_read() -> None:
    clock = Clock()
    fencer = fencer_with(lease(lease_at=100.0), clock)
    known_up_to(fencer, 101.7)
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == ""  # 1.7 < 1.5 + 0.25
    clock.now = 500.0  # time alone proves nothing: the watch has not caught up since
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == ""
    known_up_to(fencer, 101.8)
    verdict = fencer.guard_verdict("erp", "primary", 2, 0.25)
    assert verdict == (
        "primary's lease silent for 1.8s (ttl 1.5s + 0.25s allowance): its guard has hidden it"
    )


def test_the_guard_takes_a_passive_lease_at_the_new_epoch_as_hidden() -> None:
    clock = Clock()
    seen = lease(lease_at=100.0, lease_role="passive", lease_epoch=1)
    fencer = fencer_with(seen, clock)
    known_up_to(fencer, 100.1)
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == ""  # passive, but at the old epoch
    seen.lease_epoch = 2
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == (
        "primary hid itself (lease: passive at epoch 2)"
    )
    seen.lease_role = "active"
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == ""


def test_the_guard_knows_nothing_before_the_lease_is_read() -> None:
    clock = Clock()
    assert fencer_with(None, clock).guard_verdict("erp", "primary", 2, 0.25) == ""
    clock.now = 500.0
    unread = fencer_with(Seen(heartbeat_at=50.0), clock)
    assert unread.guard_verdict("erp", "primary", 2, 0.25) == ""  # the watch never caught up
    known_up_to(unread, 499.0)
    unread.liveness.watching_since = None  # blind now (its connection away)
    assert unread.guard_verdict("erp", "primary", 2, 0.25) == ""


def test_a_lease_never_found_counts_from_the_watch_start_with_the_default_ttl() -> None:
    clock = Clock()
    fencer = fencer_with(Seen(), clock)
    known_up_to(fencer, 101.3)  # the watch has seen every write until then: none of it
    assert fencer.liveness.started == 100.0
    assert fencer.guard_verdict("erp", "primary", 2, 0.25) == (
        "primary's lease silent for 1.3s (ttl 1s + 0.25s allowance; no lease value seen, its "
        "ttl taken as 1s): its guard has hidden it"
    )


class LeaseWatch:
    """Stands in for the lease bucket's watch: it catches up at once, unless ``away`` (what
    an orchestrator whose lease stream is electing a leader sees)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.away = False
        self.known_until: float | None = None
        self.stall_s = 3.0

    async def check(self) -> None:
        if not self.away:
            self.known_until = self.clock()


class Connection:
    is_connected = True


class BusWithConnection:
    nc = Connection()


async def test_a_silence_the_orchestrator_could_not_hear_is_not_a_nodes() -> None:
    """While the leases cannot be followed nobody is gone, and after that the watch starts
    over: a node is gone only after a whole failover timeout of silence seen with open eyes."""
    clock = Clock()
    bus = BusWithConnection()
    liveness = Liveness(bus, default_timeout_s=1.0, clock=clock)  # type: ignore[arg-type]
    liveness.leases = LeaseWatch(clock)  # type: ignore[assignment]
    liveness.watch("erp", "primary")
    await liveness.follow_leases()
    clock.now += 0.5
    bus.nc.is_connected = False  # the orchestrator's bus goes away
    await liveness.follow_leases()
    clock.now += 5.0
    assert liveness.gone("erp", "primary") == ""  # blind: nothing is known
    bus.nc.is_connected = True
    await liveness.follow_leases()  # sees again; the lease has not moved
    assert liveness.gone("erp", "primary") == ""  # silence counts from here
    clock.now += 1.1
    await liveness.follow_leases()
    assert liveness.gone("erp", "primary").startswith("primary silent for 1.1s")


async def test_a_watch_that_stalls_delays_a_verdict_and_never_fakes_one() -> None:
    """Heartbeats stop and the watch stops delivering: the lease may still be renewed, so
    the node is not gone until the watch has caught up past a whole timeout of silence."""
    clock = Clock()
    liveness = Liveness(BusWithConnection(), default_timeout_s=1.0, clock=clock)  # type: ignore[arg-type]
    watch = liveness.leases = LeaseWatch(clock)  # type: ignore[assignment]
    liveness.watch("erp", "primary")
    await liveness.follow_leases()
    clock.now += 1.0
    await liveness.follow_leases()
    liveness._on_lease("node.erp.primary", 7, b"{}", False)  # renewed, seen now
    watch.away = True
    clock.now += 2.0  # no heartbeat for 2 s, and the watch is behind: unknown
    await liveness.follow_leases()
    assert liveness.gone("erp", "primary") == ""
    clock.now += 2.0  # behind past its stall bound: blind
    await liveness.follow_leases()
    assert liveness.watching_since is None
    watch.away = False
    await liveness.follow_leases()  # caught up: the lease did not move, but counts from here
    assert liveness.gone("erp", "primary") == ""
    clock.now += 1.0
    await liveness.follow_leases()
    assert liveness.gone("erp", "primary").startswith("primary silent for 1.0s")
