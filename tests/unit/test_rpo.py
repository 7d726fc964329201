"""The recovery point against its target: of the target that would take over."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.settings import SettingsError
from tandem.orchestrator.rpo import rpo_of
from tandem.orchestrator.settings import load_file
from tandem.orchestrator.views import NodeView


def node(name: str, *, alive: bool = True, lag_s: float | None = 0.0, **kw: object) -> NodeView:
    return NodeView(name=name, alive=alive, lag_oldest_age_s=lag_s, **kw)  # type: ignore[arg-type]


def test_the_least_behind_target_alive_decides() -> None:
    nodes = [node("a"), node("b", lag_s=12.0), node("c", lag_s=3.0), node("d", alive=False)]
    rpo = rpo_of("a", nodes, 5)
    assert (rpo.now_s, rpo.by, rpo.meeting) == (3.0, "c", True)
    assert "c is 3.0s behind, within the 5s target" == rpo.why
    late = rpo_of("a", [node("a"), node("b", lag_s=12.0)], 5)
    assert late.meeting is False and "over the 5s target" in late.why


def test_nothing_replicated_is_not_meeting_and_unknown_is_said() -> None:
    alone = rpo_of("a", [node("a"), node("b", alive=False)], 5)
    assert alone.meeting is False and "no target is alive" in alone.why
    out = rpo_of("a", [node("a"), node("b", replication=ReplicaState.OUT_OF_SYNC)], 5)
    assert out.meeting is False and out.why == "out of sync: b"
    unknown = rpo_of("a", [node("a"), node("b", lag_s=None)], 5)
    assert unknown.meeting is None and unknown.now_s is None
    assert rpo_of(None, [node("a")], 5).meeting is None


def test_a_cluster_policy_gives_its_own_target_and_a_bad_one_names_the_field(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[clusters]]\nname = "db"\nrpo_target_s = 5\n')
    assert load_file(good).rpo_target_for("db", 60) == 5
    assert load_file(good).rpo_target_for("web", 60) == 60
    bad = tmp_path / "bad.toml"
    bad.write_text('[[clusters]]\nname = "db"\nrpo_target_s = 0\n')
    with pytest.raises(SettingsError) as err:
        load_file(bad)
    assert "bad.toml" in str(err.value) and "rpo_target_s" in str(err.value)


def test_the_example_config_sets_a_clusters_target() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "orchestrator.toml"
    assert load_file(example).rpo_target_for("erp-db", 60) == 5
