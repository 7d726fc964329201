"""``tandem status``, ``switchover``, ``failover`` and ``group switchover`` (the CLI side).

The orchestrator's HTTP layer is stood in for by an ``httpx.MockTransport`` serving the JSON
its views produce (shapes as in ``tandem.orchestrator.views``); the real orchestrator API is
exercised by the system tests elsewhere. Time is faked for the wait loop: no test sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from tandem.cli import actions, main, operate, status_view
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_models import Saga
from tandem.cli.api_target import DEFAULT_API_URL, resolve_api_url, resolve_token

API = "http://orchestrator.test:8700"
TOKEN = "op-token"


# -- the stand-in orchestrator ---------------------------------------------------------------


def node(name: str, identity: str, role: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "identity": identity,
        "role": role,
        "health": "ok",
        "checks": {"disk": "ok"},
        "alive": True,
        "last_heartbeat_at": "2025-11-25T10:00:00Z",
        "isolated": False,
        "fenced": False,
        "replication": "in_sync" if role == "passive" else None,
        "lag_batches": 0,
        "lag_bytes": 0,
        "awaiting_operator": False,
        **extra,
    }


def cluster_json(name: str = "demo", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "active": "primary",
        "epoch": 7,
        "nodes": [
            node("primary", "primary", "active"),
            node("secondary", "secondary", "passive", lag_bytes=1536, lag_batches=2),
        ],
        "saga": None,
        "pending_failover": None,
        "health": "ok",
        "service": "serving",
        "service_reason": "primary serves; secondary in sync",
        **extra,
    }


def step(index: int, name: str, node_: str, state: str, reason: str = "") -> dict[str, Any]:
    return {
        "index": index,
        "name": name,
        "node": node_,
        "command": name,
        "state": state,
        "reason": reason,
        "started_at": None,
        "ended_at": None,
    }


def saga_json(state: str, steps: list[dict[str, Any]], reason: str = "") -> dict[str, Any]:
    return {
        "id": "s-1",
        "kind": "switchover",
        "cluster": "demo",
        "from_node": "primary",
        "to_node": "secondary",
        "state": state,
        "reason": reason,
        "started_at": "2025-11-25T10:00:00Z",
        "ended_at": None,
        "steps": steps,
    }


RUNNING = saga_json(
    "running",
    [step(0, "stop_app", "primary", "running"), step(1, "promote", "secondary", "pending")],
)
COMPLETED = saga_json(
    "completed",
    [step(0, "stop_app", "primary", "completed"), step(1, "promote", "secondary", "completed")],
)
FAILED = saga_json(
    "failed",
    [
        step(0, "stop_app", "primary", "compensated"),
        step(1, "promote", "secondary", "failed", "disk full"),
    ],
    reason="step promote failed on secondary: disk full",
)


@dataclass
class FakeOrchestrator:
    """Answers like the orchestrator API; records every request."""

    clusters: list[dict[str, Any]] = field(default_factory=lambda: [cluster_json()])
    #: The saga's successive states, one per GET (the last one repeats).
    saga_states: list[dict[str, Any]] = field(default_factory=lambda: [RUNNING, COMPLETED])
    #: (status, body) answered to every POST instead of a 202.
    post_error: tuple[int, Any] | None = None
    #: Answer every request with this status and detail.
    error: tuple[int, str] | None = None
    unreachable: bool = False
    requests: list[httpx.Request] = field(default_factory=list)
    saga_reads: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if self.error:
            return httpx.Response(self.error[0], json={"detail": self.error[1]})
        path = request.url.path
        if request.method == "POST":
            if self.post_error:
                return httpx.Response(self.post_error[0], json={"detail": self.post_error[1]})
            return httpx.Response(202, json={"saga_id": "s-1", "status_url": "/api/v1/sagas/s-1"})
        if path == "/api/v1/clusters":
            return httpx.Response(200, json=self.clusters)
        if path.startswith("/api/v1/clusters/"):
            name = path.rsplit("/", 1)[1]
            for c in self.clusters:
                if c["name"] == name:
                    return httpx.Response(200, json=c)
            return httpx.Response(404, json={"detail": f"no cluster {name}"})
        if path == "/api/v1/sagas/s-1":
            answer = self.saga_states[min(self.saga_reads, len(self.saga_states) - 1)]
            self.saga_reads += 1
            return httpx.Response(200, json=answer)
        return httpx.Response(404, json={"detail": "Not Found"})

    def posts(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST"]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Cli:
    orchestrator: FakeOrchestrator
    time: FakeTime
    out: io.StringIO
    err: io.StringIO
    factory_calls: list[tuple[str, str | None]]

    def __call__(self, *args: str) -> int:
        result = CliRunner().invoke(main.app, list(args))
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code

    @property
    def stdout(self) -> str:
        return self.out.getvalue()

    @property
    def stderr(self) -> str:
        return self.err.getvalue()


def _console(buffer: io.StringIO) -> Console:
    return Console(file=buffer, width=200, color_system=None, force_terminal=False)


@pytest.fixture(autouse=True)
def no_outside_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No TANDEM_API_* of the environment, no state file of a real running ``tandem up``."""
    monkeypatch.delenv("TANDEM_API_URL", raising=False)
    monkeypatch.delenv("TANDEM_API_TOKEN", raising=False)
    monkeypatch.setenv("TANDEM_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    orchestrator = FakeOrchestrator()
    fake_time = FakeTime()
    out, err = io.StringIO(), io.StringIO()
    calls: list[tuple[str, str | None]] = []
    transport = httpx.MockTransport(orchestrator)

    def factory(url: str, token: str | None, timeout: float) -> ApiClient:
        calls.append((url, token))
        return ApiClient(url, token, timeout, transport=transport)

    monkeypatch.setattr(operate, "client_factory", factory)
    monkeypatch.setattr(operate, "clock", fake_time.clock)
    monkeypatch.setattr(operate, "sleep", fake_time.sleep)
    console, err_console = _console(out), _console(err)
    for module in (main, actions):  # status prints from main, the operations from actions
        monkeypatch.setattr(module, "console", console)
        monkeypatch.setattr(module, "err", err_console)
    monkeypatch.setenv("TANDEM_API_URL", API)
    monkeypatch.setenv("TANDEM_API_TOKEN", TOKEN)
    yield Cli(orchestrator, fake_time, out, err, calls)


def line_cells(line: str) -> list[str]:
    """The cells of a table row (separated by at least two spaces)."""
    return [cell for cell in re.split(r"\s{2,}", line.strip()) if cell]


# -- status -----------------------------------------------------------------------------------


def test_status_shows_every_node_and_a_pending_failover(cli: Cli) -> None:
    cli.orchestrator.clusters = [
        cluster_json(),
        cluster_json(
            "billing",
            active=None,
            nodes=[
                node("b1", "primary", "active", alive=False, health="critical"),
                node("b2", "secondary", "passive", lag_bytes=5 << 20, replication="syncing"),
            ],
            pending_failover={
                "failed_node": "b1",
                "to": "b2",
                "reason": "heartbeats lost",
                "recommended_at": "2025-11-25T10:05:00Z",
            },
            health="critical",
            service="down",
            service_reason="nobody serves: no node is Active",
        ),
    ]
    assert cli("status") == 0
    lines = cli.stdout.splitlines()
    header = next(line for line in lines if "identity" in line)
    for column in ("cluster", "node", "role", "health", "alive", "lag", "epoch"):
        assert column in header
    primary = next(line for line in lines if line.startswith("demo") and "*" in line)
    assert line_cells(primary)[:2] == ["demo", "primary *"]
    assert "active" in primary and "ok" in primary and "yes" in primary and "0 B" in primary
    secondary = next(line for line in lines if "secondary" in line and "passive" in line)
    assert "1.5 KiB" in secondary and "*" not in secondary and " 7 " in secondary
    b1 = next(line for line in lines if " b1 " in line)
    assert line_cells(b1)[:3] == ["billing", "b1", "primary"]
    assert "critical" in b1 and "no" in b1 and "*" not in b1  # the orchestrator names no Active
    b2 = next(line for line in lines if " b2 " in line)
    assert "*" not in b2
    assert "5.0 MiB" in b2 and "syncing" in b2
    pending = next(line for line in lines if "failover pending" in line)
    assert pending.startswith("billing: failover pending: b1 failed (heartbeats lost)")
    assert "recommended to b2 since 2025-11-25 10:05:00 UTC" in pending
    assert "tandem failover billing --confirm --to b2" in pending
    assert not any(line.startswith("demo:") for line in lines)
    (request,) = cli.orchestrator.requests
    assert request.url == f"{API}/api/v1/clusters?limit=1000"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_status_prints_each_clusters_service_first_and_no_ok_where_nobody_serves(
    cli: Cli,
) -> None:
    why = "nobody serves: primary's application checks fail (db critical)"
    cli.orchestrator.clusters = [
        cluster_json(),
        cluster_json(
            "crm",
            service="down",
            service_reason="nobody serves: primary fenced itself at 10:00:00: lease lost",
        ),
        cluster_json(
            "erp",
            service="needs_operator",
            service_reason=f"needs an operator: failover s-9 stopped for an operator; {why}",
        ),
    ]
    assert cli("status") == 0
    lines = cli.stdout.splitlines()
    assert lines[:3] == [
        "demo  serving  primary serves; secondary in sync",
        "crm  down  nobody serves: primary fenced itself at 10:00:00: lease lost",
        f"erp  needs operator  needs an operator: failover s-9 stopped for an operator; {why}",
    ]
    demo_rows = [line for line in lines[3:] if "demo" in line or "secondary" in line][:2]
    assert all(" ok " in line for line in demo_rows)
    for name in ("crm", "erp"):
        start = next(i for i, line in enumerate(lines) if i >= 3 and line.startswith(name))
        rows = lines[start : start + 2]
        assert all("checks pass" in row for row in rows)
        assert not any(re.search(r"\bok\b", row) for row in rows)


def test_status_of_an_older_orchestrator_without_service_does_not_say_ok(cli: Cli) -> None:
    old = cluster_json()
    del old["service"], old["service_reason"]
    cli.orchestrator.clusters = [old]
    assert cli("status") == 0
    lines = cli.stdout.splitlines()
    assert lines[0] == "demo  unknown  the orchestrator does not say whether anyone serves"
    assert not any(re.search(r"\bok\b", line) for line in lines)


def test_status_shows_the_targets_replication_state() -> None:
    from tandem.cli.api_models import Cluster

    cluster = Cluster.model_validate(
        cluster_json(
            service="degraded",
            service_reason="primary serves; but secondary is catching up",
            nodes=[
                node("primary", "primary", "active"),
                node("secondary", "secondary", "passive", replica_state="catching_up"),
            ],
        )
    )
    buffer = io.StringIO()
    status_view.render_status(_console(buffer), [cluster], {})
    secondary = next(line for line in buffer.getvalue().splitlines() if "passive" in line)
    assert "catching up" in secondary


def test_status_shows_a_targets_lag_in_bytes_batches_and_the_age_of_its_oldest() -> None:
    from tandem.cli.api_models import Cluster

    cluster = Cluster.model_validate(
        cluster_json(
            nodes=[
                node("primary", "primary", "active", lag_oldest_age_s=0.0),
                node(
                    "secondary",
                    "secondary",
                    "passive",
                    lag_bytes=1536,
                    lag_batches=3,
                    lag_oldest_age_s=4.12,
                ),
            ],
        )
    )
    buffer = io.StringIO()
    status_view.render_status(_console(buffer), [cluster], {})
    lines = buffer.getvalue().splitlines()
    secondary = next(line for line in lines if "passive" in line)
    assert "1.5 KiB, 3 batches, oldest 4.1s" in secondary
    primary = next(line for line in lines if "active" in line and "primary *" in line)
    assert "0 B" in primary and "oldest" not in primary and "batch" not in primary


def test_human_seconds() -> None:
    assert status_view.human_seconds(0.04) == "0.0s"
    assert status_view.human_seconds(59.4) == "59.4s"
    assert status_view.human_seconds(725) == "12m05s"
    assert status_view.human_seconds(3 * 3600 + 12 * 60 + 9) == "3h12m"


@pytest.mark.parametrize(
    ("service", "colour"),
    [("serving", "32"), ("degraded", "33"), ("down", "31"), ("needs_operator", "31")],
)
def test_the_service_is_coloured(service: str, colour: str) -> None:
    from tandem.cli.api_models import Cluster

    cluster = Cluster.model_validate(cluster_json(service=service, service_reason="why"))
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system="standard", force_terminal=True)
    status_view.render_status(console, [cluster], {})
    first = buffer.getvalue().splitlines()[0]
    assert f"\x1b[1;{colour}m{service.replace('_', ' ')}\x1b[0m" in first


def test_status_names_a_running_saga_and_its_step(cli: Cli) -> None:
    cli.orchestrator.clusters = [cluster_json(saga="s-1")]
    assert cli("status", "--cluster", "demo") == 0
    assert cli.orchestrator.requests[0].url.path == "/api/v1/clusters/demo"
    saga_line = next(line for line in cli.stdout.splitlines() if line.startswith("demo:"))
    assert saga_line == (
        "demo: switchover s-1 (primary -> secondary): step 1/2 stop_app on primary (running)"
    )


def test_status_of_an_unknown_cluster_prints_the_detail_and_exits_2(cli: Cli) -> None:
    assert cli("status", "--cluster", "nope") == 2
    assert "404 no cluster nope" in cli.stderr


@pytest.mark.parametrize("code", [401, 403])
def test_status_refused_exits_2_with_the_api_detail(cli: Cli, code: int) -> None:
    cli.orchestrator.error = (code, "missing or unknown bearer token")
    assert cli("status") == 2
    assert "missing or unknown bearer token" in cli.stderr
    assert "--token" in cli.stderr


def test_status_unreachable_exits_3_and_says_where(cli: Cli) -> None:
    cli.orchestrator.unreachable = True
    assert cli("status", "--api", "http://10.9.9.9:8700") == 3
    assert "cannot reach the Tandem API at http://10.9.9.9:8700" in cli.stderr
    assert "Connection refused" in cli.stderr
    assert cli.factory_calls == [("http://10.9.9.9:8700", TOKEN)]


def test_a_server_error_exits_1(cli: Cli) -> None:
    cli.orchestrator.error = (503, "not the leader")
    assert cli("status") == 1
    assert "503 not the leader" in cli.stderr


def test_status_with_no_cluster_says_so(cli: Cli) -> None:
    cli.orchestrator.clusters = []
    assert cli("status") == 0
    assert "knows no cluster" in cli.stdout


# -- switchover and the wait loop ---------------------------------------------------------------


def test_switchover_waits_until_the_saga_completes(cli: Cli) -> None:
    cli.orchestrator.saga_states = [RUNNING, RUNNING, COMPLETED]
    code = cli("switchover", "demo", "--to", "secondary", "--reason", "patching")
    assert code == 0, cli.stderr
    (post,) = cli.orchestrator.posts()
    assert post.url.path == "/api/v1/clusters/demo/switchover"
    assert json.loads(post.content) == {"to": "secondary", "reason": "patching"}
    assert cli.orchestrator.saga_reads == 3
    assert cli.time.sleeps == [0.2, 0.2]
    assert "saga s-1" in cli.stdout
    assert "1. stop_app on primary  ok" in cli.stdout
    assert "2. promote on secondary  ok" in cli.stdout
    assert "switchover of demo completed: secondary is Active" in cli.stdout


def test_switchover_that_fails_exits_1_with_the_sagas_reason(cli: Cli) -> None:
    cli.orchestrator.saga_states = [RUNNING, FAILED]
    assert cli("switchover", "demo") == 1
    assert json.loads(cli.orchestrator.posts()[0].content)["to"] is None
    assert "2. promote on secondary  FAILED: disk full" in cli.stdout
    assert "1. stop_app on primary  undone" in cli.stdout
    assert "switchover of demo failed: step promote failed on secondary: disk full" in cli.stderr


STUCK = saga_json(
    "needs_operator",
    [
        step(0, "change role", "secondary", "completed"),
        step(1, "expose", "secondary", "failed", "address in use"),
    ],
    reason="step 1 (expose) failed after the role changed: address in use",
)


def test_a_saga_stuck_past_the_pivot_ends_the_wait_and_says_it_needs_an_operator(
    cli: Cli,
) -> None:
    cli.orchestrator.saga_states = [RUNNING, STUCK]
    assert cli("switchover", "demo") == 1
    assert cli.orchestrator.saga_reads == 2  # not waited out to the timeout
    assert "2. expose on secondary  FAILED: address in use" in cli.stdout
    assert "stopped past the role change and needs an operator" in cli.stderr


def test_switchover_wait_times_out_and_says_so(cli: Cli) -> None:
    cli.orchestrator.saga_states = [RUNNING]
    assert cli("switchover", "demo", "--timeout", "1") == 1
    assert "timed out after 1 s waiting for saga s-1" in cli.stderr
    assert "stop_app on primary (running)" in cli.stderr
    assert cli.time.now == pytest.approx(1.0)
    assert all(s <= 0.2 + 1e-9 for s in cli.time.sleeps)
    assert cli.orchestrator.saga_reads == 6  # at 0, 0.2, ..., 1.0


def test_no_wait_returns_once_accepted(cli: Cli) -> None:
    assert cli("switchover", "demo", "--no-wait") == 0
    assert cli.orchestrator.saga_reads == 0
    assert "saga s-1" in cli.stdout and "/api/v1/sagas/s-1" in cli.stdout


@pytest.mark.parametrize(
    ("code", "detail", "shown"),
    [
        (409, "saga s-0 is running on demo", "409 saga s-0 is running on demo"),
        (
            422,
            [{"loc": ["body", "to"], "msg": "no node 'x' in demo", "type": "value_error"}],
            "422 to: no node 'x' in demo",
        ),
    ],
)
def test_a_refused_switchover_prints_the_detail_and_exits_2(
    cli: Cli, code: int, detail: Any, shown: str
) -> None:
    cli.orchestrator.post_error = (code, detail)
    assert cli("switchover", "demo", "--to", "x") == 2
    assert "switchover of demo refused" in cli.stderr and shown in cli.stderr
    assert cli.orchestrator.saga_reads == 0


def test_switchover_unreachable_exits_3(cli: Cli) -> None:
    cli.orchestrator.unreachable = True
    assert cli("switchover", "demo") == 3
    assert f"cannot reach the Tandem API at {API}" in cli.stderr


def test_failover_without_confirm_exits_2_and_sends_nothing(cli: Cli) -> None:
    assert cli("failover", "demo") == 2
    assert "a failover needs --confirm" in cli.stderr
    assert cli.orchestrator.requests == []


def test_failover_with_confirm(cli: Cli) -> None:
    assert cli("failover", "demo", "--confirm", "--to", "secondary", "--reason", "site A") == 0
    (post,) = cli.orchestrator.posts()
    assert post.url.path == "/api/v1/clusters/demo/failover"
    assert json.loads(post.content) == {"to": "secondary", "confirm": True, "reason": "site A"}


def test_group_switchover(cli: Cli) -> None:
    assert cli("group", "switchover", "erp", "--reason", "maintenance") == 0
    (post,) = cli.orchestrator.posts()
    assert post.url.path == "/api/v1/groups/erp/switchover"
    assert json.loads(post.content) == {"reason": "maintenance"}
    assert "group switchover of erp completed" in cli.stdout


# -- wait_for_saga on its own ---------------------------------------------------------------


def _fetcher(answers: list[Any]) -> Callable[[str], Saga]:
    it = iter(answers)

    def fetch(saga_id: str) -> Saga:
        answer = next(it)
        if isinstance(answer, Exception):
            raise answer
        return Saga.model_validate(answer)

    return fetch


def test_wait_retries_an_unreachable_or_failing_api_until_the_deadline() -> None:
    t = FakeTime()
    seen: list[str] = []
    fetch = _fetcher(
        [RUNNING, ApiUnreachable(API, "refused"), ApiError(503, "no leader"), COMPLETED]
    )
    result = operate.wait_for_saga(
        fetch, "s-1", 5, sleep=t.sleep, clock=t.clock, on_update=lambda s: seen.append(s.state)
    )
    assert not result.timed_out and result.saga is not None
    assert result.saga.state == "completed"
    assert seen == ["running", "completed"]
    assert t.sleeps == [0.2, 0.2, 0.2]


def test_wait_reports_the_last_error_on_timeout() -> None:
    t = FakeTime()
    fetch = _fetcher([RUNNING, *[ApiUnreachable(API, "refused")] * 10])
    result = operate.wait_for_saga(fetch, "s-1", 0.5, sleep=t.sleep, clock=t.clock)
    assert result.timed_out and result.saga is not None and result.saga.state == "running"
    assert result.error is not None and "refused" in result.error
    assert t.now == pytest.approx(0.5)


def test_wait_raises_a_4xx() -> None:
    t = FakeTime()
    with pytest.raises(ApiError) as info:
        operate.wait_for_saga(
            _fetcher([ApiError(404, "no saga")]), "s-1", 5, sleep=t.sleep, clock=t.clock
        )
    assert info.value.status == 404


def test_human_bytes() -> None:
    assert status_view.human_bytes(0) == "0 B"
    assert status_view.human_bytes(1023) == "1023 B"
    assert status_view.human_bytes(1536) == "1.5 KiB"
    assert status_view.human_bytes(3 << 30) == "3.0 GiB"


# -- where the API is, and the token --------------------------------------------------------


def _write_state(tmp_path: Path, **state: Any) -> None:
    path = tmp_path / "state" / "tandem" / "up.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": os.getpid(), **state}))


def test_api_url_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_api_url(None) == DEFAULT_API_URL == "http://127.0.0.1:8700"
    _write_state(tmp_path, api_url="http://127.0.0.1:8765")
    assert resolve_api_url(None) == "http://127.0.0.1:8765"
    monkeypatch.setenv("TANDEM_API_URL", "http://env:1")
    assert resolve_api_url(None) == "http://env:1"
    assert resolve_api_url("http://flag:2") == "http://flag:2"


def test_token_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_token(None) is None
    _write_state(tmp_path, operator_token="from-up", viewer_token="viewer")
    assert resolve_token(None) == "from-up"
    monkeypatch.setenv("TANDEM_API_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("from-flag") == "from-flag"


def test_a_state_file_without_a_live_pid_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tandem" / "up.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"api_url": "http://stale:1", "operator_token": "stale"}))
    assert resolve_api_url(None) == DEFAULT_API_URL
    assert resolve_token(None) is None


def test_the_client_sends_no_authorization_without_a_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    with ApiClient(API + "/", None, transport=httpx.MockTransport(handler)) as client:
        assert client.clusters() == []
    assert "authorization" not in seen[0].headers
    assert str(seen[0].url) == f"{API}/api/v1/clusters?limit=1000"


def test_the_client_reads_every_page_of_clusters_by_the_link_header() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        after = request.url.params.get("after")
        if after is None:
            link = '</api/v1/clusters?limit=1000&after=b>; rel="next"'
            body = [{"name": "a"}, {"name": "b"}]
            return httpx.Response(200, json=body, headers={"Link": link, "X-Total-Count": "3"})
        return httpx.Response(200, json=[{"name": "c"}], headers={"X-Total-Count": "3"})

    with ApiClient(API, TOKEN, transport=httpx.MockTransport(handler)) as client:
        assert [c.name for c in client.clusters()] == ["a", "b", "c"]
    assert seen == [
        f"{API}/api/v1/clusters?limit=1000",
        f"{API}/api/v1/clusters?limit=1000&after=b",
    ]


def test_the_client_follows_no_next_page_elsewhere_nor_the_same_one_twice() -> None:
    def elsewhere(request: httpx.Request) -> httpx.Response:
        link = '<http://evil.test/api/v1/clusters?after=a>; rel="next"'
        return httpx.Response(200, json=[{"name": "a"}], headers={"Link": link})

    transport = httpx.MockTransport(elsewhere)
    with (
        ApiClient(API, TOKEN, transport=transport) as client,
        pytest.raises(ApiError, match="elsewhere"),
    ):
        client.clusters()
    calls: list[httpx.Request] = []

    def looping(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        link = '</api/v1/clusters?limit=1000>; rel="next"'  # itself: not followed again
        return httpx.Response(200, json=[{"name": "a"}], headers={"Link": link})

    with ApiClient(API, TOKEN, transport=httpx.MockTransport(looping)) as client:
        assert [c.name for c in client.clusters()] == ["a"]
    assert len(calls) == 1


def test_an_unreadable_answer_is_an_api_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"not": "a list"}))
    with (
        ApiClient(API, TOKEN, transport=transport) as client,
        pytest.raises(ApiError, match="unexpected answer to GET /api/v1/clusters"),
    ):
        client.clusters()
