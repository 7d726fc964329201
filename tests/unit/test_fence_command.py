"""The ``command`` fencing method with real shell scripts: exit 0 fences, anything else (or a
run past ``timeout_s``, killed with its children) fails with the output's tail; the alert and
``on_failure``. No bus: the alert goes to the publish function the runner would give."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tandem.events.catalog import AlertRaised
from tandem.events.catalog.vocabulary import Severity
from tandem.orchestrator.fencing import FenceFailed, Fencer, run_fence_command
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.plans import failover_plan
from tandem.orchestrator.settings import FencingConfig, OrchestratorFile
from tandem.orchestrator.state_records import SagaRecord


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[Any, Any, int]] = []

    async def __call__(self, saga: SagaRecord, cls: Any, payload: Any, epoch: int) -> None:
        self.events.append((cls, payload, epoch))


def saga(timeout_s: float) -> SagaRecord:
    return SagaRecord(
        id="saga-1",
        kind="failover",
        cluster="erp",
        from_node="primary",
        to_node="secondary",
        plan=failover_plan("primary", "secondary", 1, timeout_s=timeout_s),
        started_at=datetime.now(UTC),
    )


class Fencing:
    """A Fencer with one ``[[fencing]]`` table, a failover saga and the alerts it publishes."""

    def __init__(self, table: FencingConfig, timeout_s: float = 5.0) -> None:
        liveness = Liveness(bus=None, default_timeout_s=1.0)  # type: ignore[arg-type]
        file = OrchestratorFile(fencing=[table])
        self.fencer = Fencer(None, liveness, file, command_retry_s=0.2)  # type: ignore[arg-type]
        self.saga = saga(timeout_s)
        self.published = Published()

    async def fence(self) -> str:
        return await self.fencer.fence(self.saga, self.saga.plan[1], self.published)


def command(argv: list[str], **kw: Any) -> FencingConfig:
    return FencingConfig(cluster="erp", method="command", command=argv, **kw)


async def test_exit_0_fences_with_the_placeholders_replaced(tmp_path: Path) -> None:
    out = tmp_path / "argv"
    ok = script(tmp_path, "fence-ok", f'echo "$@" > {out}\necho "powered off $2"\n')
    fencing = Fencing(command([str(ok), "--cluster={cluster}", "{node}"]))
    reason = await fencing.fence()
    assert out.read_text() == "--cluster=erp primary\n"
    assert (
        reason == f"fence command {ok} --cluster=erp primary exited 0; stdout: powered off primary"
    )
    assert fencing.published.events == []


async def test_a_failing_command_is_tried_again_then_fails_with_its_output_and_an_alert(
    tmp_path: Path,
) -> None:
    count = tmp_path / "count"
    fail = script(
        tmp_path, "fence-fail", f'echo run >> {count}\necho "no route to BMC" >&2\nexit 3\n'
    )
    fencing = Fencing(command([str(fail), "{node}"]), timeout_s=1.0)
    with pytest.raises(FenceFailed) as info:
        await fencing.fence()
    text = str(info.value)
    runs = len(count.read_text().splitlines())
    assert 2 <= runs <= 6  # tried again within the step's deadline, not endlessly
    assert text.startswith("fencing primary (the old Active of erp) by command failed: ")
    assert text.endswith(
        f"fence command {fail} primary ({runs} attempts): exited 3; stderr: no route to BMC"
    )
    [(cls, alert, epoch)] = fencing.published.events
    assert cls is AlertRaised and epoch == 2
    assert alert.code == "fence.failed" and alert.severity is Severity.CRITICAL
    assert alert.message.startswith(text)
    assert alert.message.endswith("; secondary is not exposed: it needs an operator")
    assert alert.details == {"node": "primary", "method": "command", "on_failure": "needs_operator"}


async def test_a_command_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # nohup: the child survives its shell's death, so only the kill of the group stops it.
    slow = script(
        tmp_path,
        "fence-slow",
        f"echo started\nnohup sleep 30 >/dev/null 2>&1 &\necho $! > {pid_file}\nwait\n",
    )
    started = time.monotonic()
    ok, detail = await run_fence_command([str(slow)], 0.5)
    assert time.monotonic() - started < 5
    assert not ok
    assert detail == "still running after 0.5s: killed; stdout: started"
    child = int(pid_file.read_text())
    await asyncio.sleep(0.1)
    assert not alive(child)  # the sleep went with its process group


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not ours is not running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def test_timeout_s_bounds_each_run_and_the_step_fails_after_them(tmp_path: Path) -> None:
    slow = script(tmp_path, "fence-slow", "sleep 30\n")
    started = time.monotonic()
    with pytest.raises(FenceFailed) as info:
        await Fencing(command([str(slow)], timeout_s=0.3), timeout_s=1.0).fence()
    assert time.monotonic() - started < 5
    assert "still running after 0.3s: killed" in str(info.value)


async def test_a_command_that_cannot_run_fails_with_the_reason(tmp_path: Path) -> None:
    ok, detail = await run_fence_command([str(tmp_path / "missing")], 1.0)
    assert not ok and detail == "cannot be run: No such file or directory"


async def test_on_failure_expose_completes_the_step_saying_so_with_a_warning(
    tmp_path: Path,
) -> None:
    fail = script(tmp_path, "fence-fail", "exit 1\n")
    fencing = Fencing(command([str(fail)], on_failure="expose"), timeout_s=0.5)
    reason = await fencing.fence()
    assert reason.startswith("fencing primary (the old Active of erp) by command failed: ")
    assert reason.endswith("; the operator chose to expose anyway (on_failure = expose)")
    [(_, alert, _)] = fencing.published.events
    assert alert.code == "fence.failed" and alert.severity is Severity.WARNING
    assert "secondary is exposed anyway (two Actives are possible)" in alert.message
