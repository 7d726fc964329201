"""The CLI side of history and the overview, pure parts: ``--since`` (a time or a duration
back), the history table, and the lines that say what failed under ``tandem status``."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from tandem.cli.api_models import Cluster
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
    seen = {"code": "fence.failed", "message": "m", "node": "orch", "state": "acknowledged"}
    acked = Cluster.model_validate({"name": "demo", "alerts": [seen]})
    assert problem_lines(acked) == ["demo: alert fence.failed on orch: m (acknowledged)"]


def _cluster_json() -> dict[str, object]:
    return {
        "name": "demo",
        "active": "primary",
        "epoch": 3,
        "service": "serving",
        "service_reason": "primary serves; secondary in sync",
        "nodes": [
            {
                "name": "primary",
                "role": "active",
                "alive": True,
                "role_since": (datetime.now(UTC) - timedelta(minutes=12, seconds=5)).isoformat(),
                "heartbeat_age_s": 0.2,
                "lease_age_s": 0.1,
            },
            {
                "name": "secondary",
                "role": "passive",
                "alive": False,
                "heartbeat_age_s": 42.0,
                "failover_mode": "managed",
            },
        ],
    }


def test_status_shows_time_in_role_heartbeat_and_lease_ages() -> None:
    from tandem.cli import status_view

    buffer = io.StringIO()
    status_view.render_status(
        Console(file=buffer, width=250), [Cluster.model_validate(_cluster_json())], {}
    )
    lines = buffer.getvalue().splitlines()
    header = next(line for line in lines if "identity" in line)
    for column in ("in role", "heartbeat", "lease"):
        assert column in header
    primary = next(line for line in lines if "primary *" in line)
    assert "12m0" in primary and "0.2s ago" in primary and "0.1s ago" in primary
    secondary = next(line for line in lines if "passive" in line)
    assert "42.0s ago" in secondary and "managed failover" in secondary


def test_watch_redraws_until_stopped_and_lists_one_line_per_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import httpx

    from tandem.cli import operate, overview
    from tandem.cli.api_client import ApiClient

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=[_cluster_json()])

    def factory(url: str, token: str | None, timeout: float) -> ApiClient:
        return ApiClient(url, token, timeout, transport=httpx.MockTransport(answer))

    monkeypatch.setattr(operate, "client_factory", factory)
    monkeypatch.setattr(overview, "sleep", lambda _s: None)
    buffer = io.StringIO()
    out, err = Console(file=buffer, width=250), Console(file=io.StringIO())
    code = overview.run_watch(
        out, err, api="http://api", token="t" * 20, cluster=None, every_s=2, rounds=2
    )
    assert code == 0 and seen == ["/api/v1/clusters", "/api/v1/clusters"]
    assert "every 2s, read at" in buffer.getvalue() and "primary serves" in buffer.getvalue()
    buffer.truncate(0)
    assert overview.run_list(out, err, api="http://api", token="t" * 20) == 0
    (line,) = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert "demo  serving" in line and "epoch 3" in line
    assert "primary*" in line and "secondary (not alive)" in line
