"""The CLI side of history and the overview, pure parts: ``--since`` (a time or a duration
back), the history table, and the lines that say what failed under ``tandem status``."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from tandem.cli.api_client import Cluster
from tandem.cli.history import SagaSummary, history_table, parse_since
from tandem.cli.overview import problem_lines

NOW = datetime(2026, 12, 3, 6, 0, tzinfo=UTC)


def test_since_is_a_duration_back_or_a_time() -> None:
    assert parse_since("2h", NOW) == NOW - timedelta(hours=2)
    assert parse_since("1d", NOW) == NOW - timedelta(days=1)
    assert parse_since("2026-12-03T05:00:00+00:00", NOW) == NOW - timedelta(hours=1)
    naive = parse_since("2026-12-03T05:00:00", NOW)
    assert naive.tzinfo is not None  # read as local time
    with pytest.raises(ValueError, match=r"neither a time .* nor a duration"):
        parse_since("yesterday", NOW)


def test_the_history_table_shows_who_why_how_long_and_the_outcome() -> None:
    rows = [
        SagaSummary(
            id="s-2",
            kind="failover",
            cluster="demo",
            from_node="primary",
            to_node="secondary",
            reason="primary silent for 2.1s",
            who="orchestrator",
            automatic=True,
            started_at=NOW,
            ended_at=NOW + timedelta(seconds=3.2),
            duration_s=3.2,
            outcome="completed",
        ),
        SagaSummary(
            id="s-1",
            kind="switchover",
            cluster="demo",
            from_node="secondary",
            to_node="primary",
            reason="patching",
            who="operator:ab12cd",
            started_at=NOW - timedelta(hours=1),
            outcome="cancelled",
            outcome_reason="cancelled by operator:ab12cd: wrong target",
        ),
    ]
    buffer = io.StringIO()
    Console(file=buffer, width=250).print(history_table(rows))
    text = buffer.getvalue()
    failover = next(line for line in text.splitlines() if "s-2" in line)
    for part in ("failover (auto)", "primary -> secondary", "orchestrator", "3.2s", "completed"):
        assert part in failover
    switchover = next(line for line in text.splitlines() if "s-1" in line)
    assert "cancelled: cancelled by operator:ab12cd: wrong target" in switchover


def test_status_says_what_failed_and_how_to_resume_a_stopped_saga() -> None:
    cluster = Cluster.model_validate(
        {
            "name": "demo",
            "alerts": [{"code": "saga.stuck", "message": "expose failed", "node": "orch"}],
            "last_saga": {
                "id": "s-9",
                "kind": "switchover",
                "state": "needs_operator",
                "reason": "step 5 (expose) failed after the role changed",
            },
        }
    )
    alert, saga = problem_lines(cluster)
    assert alert == "demo: alert saga.stuck on orch: expose failed"
    assert saga.startswith("demo: last switchover s-9 needs operator: step 5 (expose) failed")
    assert saga.endswith("once fixed: tandem saga resume s-9")
    ok = Cluster.model_validate({"name": "demo", "last_saga": {"id": "s", "state": "completed"}})
    assert problem_lines(ok) == []
