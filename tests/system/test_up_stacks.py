"""Two `tandem up` stacks on one host (issue 18 item 8), real processes: each its own name and
0600 discovery file; a second `tandem up` on a store in use says which stack runs there; a
command with no choice between two stacks refuses naming both, a chosen one says where it
acts; `tandem logs` reads a stack's logs; a `tandem up` killed hard (SIGKILL) leaves nothing
running: its nats-server, its services and what they started die with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.system

TANDEM = [sys.executable, "-m", "tandem.cli"]


def tandem(
    env: dict[str, str], *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TANDEM, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def start_up(env: dict[str, str], store: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TANDEM, "up", "--nats-port", "0", "--store-dir", str(store), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it returns something true (no speed asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def discovery(path: Path) -> dict | None:  # type: ignore[type-arg]
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("services") else None


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.timeout(300)
def test_two_stacks_on_one_host_and_a_hard_kill(
    tmp_path: Path, nats_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith(("TANDEM_BUS_", "TANDEM_API_"))]:
        monkeypatch.delenv(key)
    for key in ("TANDEM_SECRETS_DIR", "TANDEM_STACK"):
        monkeypatch.delenv(key, raising=False)
    state_dir = tmp_path / "state"
    env = {**os.environ, "TANDEM_STATE_DIR": str(state_dir), "COLUMNS": "200"}
    stacks = state_dir / "tandem" / "stacks"
    a = start_up(env, tmp_path / "demo-a")
    procs = [a]
    try:
        state_a = until(lambda: discovery(stacks / "demo-a.json"), 120, "stack demo-a")
        # The second one started once the first is up, as an operator would.
        b = start_up(env, tmp_path / "demo-b", "--no-demo", "--name", "other")
        procs.append(b)
        state_b = until(lambda: discovery(stacks / "other.json"), 120, "stack other")
        assert state_a["name"] == "demo-a" and state_a["pid"] == a.pid
        assert state_b["name"] == "other" and state_a["api_url"] != state_b["api_url"]
        for path in (stacks / "demo-a.json", stacks / "other.json"):
            assert path.stat().st_mode & 0o777 == 0o600
        assert stacks.stat().st_mode & 0o777 == 0o700
        assert state_a["viewer_token"] and state_a["operator_token"]

        # A second `tandem up` on a store in use: says which stack runs there, exit 2.
        again = tandem(env, "up", "--nats-port", "0", "--store-dir", str(tmp_path / "demo-a"))
        assert again.returncode == 2, again.stdout + again.stderr
        said = " ".join(again.stdout.split())
        assert "a tandem up is already running on store" in said
        assert f"stack 'demo-a', pid {a.pid}, API {state_a['api_url']}" in said

        # Two stacks and no choice: refused, naming both.
        refused = tandem(env, "status")
        assert refused.returncode == 2, refused
        text = " ".join(refused.stderr.replace("│", " ").split())
        assert f"demo-a (pid {a.pid}" in text and f"other (pid {b.pid}" in text, text

        # Chosen: a read (with the stack's viewer token), a mutation (with its operator
        # token, recorded as the operator's) saying where it acts.
        chosen = {**env, "TANDEM_STACK": "demo-a"}
        until(lambda: tandem(chosen, "status").returncode == 0, 90, "status of demo-a")
        paused = tandem(env, "--stack", "demo-a", "pause", "demo", "--reason", "test")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert f"acting on stack demo-a ({state_a['api_url']})" in paused.stderr
        resumed = tandem(chosen, "resume", "demo")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        audit = tandem(
            chosen, "events", "tail", "--type", "OperatorActionRecorded", "--json",
            "--history", "20", "--idle-timeout", "2",
        )  # fmt: skip
        assert audit.returncode == 0, audit.stderr
        actors = {json.loads(line)["payload"]["actor"] for line in audit.stdout.splitlines()}
        assert any(actor.startswith("operator:") for actor in actors), audit.stdout

        # The logs of the chosen stack: one service's, and every one prefixed.
        logs = tandem(chosen, "logs", "orchestrator", "-n", "5")
        assert logs.returncode == 0 and logs.stdout.strip(), logs
        every = tandem(env, "logs", "--stack", "demo-a", "-n", "1")
        assert {"orchestrator", "agent-primary", "nats"} <= {
            line.split(" | ")[0].strip() for line in every.stdout.splitlines()
        }, every.stdout
        unknown = tandem(chosen, "logs", "teleporter")
        assert unknown.returncode == 2 and "agent-primary" in unknown.stderr, unknown

        # SIGKILL: no chance to stop anything itself; its children die with it.
        children = until(lambda: [p for p in descendants(a.pid) if p.is_running()], 10, "children")
        names = {" ".join(p.cmdline()) for p in children}
        assert any("nats-server" in n for n in names), names
        assert any("tandem.agent" in n or "agent" in n for n in names), names
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)

        def all_gone() -> bool:
            return not [p for p in children if p.is_running() and p.status() != "zombie"]

        until(all_gone, 90, "every child of the killed tandem up to end")
        # Its discovery file stays behind, but names a dead pid: the one left is chosen.
        assert (stacks / "demo-a.json").exists()
        alone = tandem(env, "status")
        assert alone.returncode == 0, alone.stdout + alone.stderr
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        outputs = [proc.communicate(timeout=90)[0] for proc in procs]
    assert b.returncode == 0, outputs[1]
    said_b = " ".join(outputs[1].split())
    assert "Tandem is up: stack other" in said_b
    assert f"also running on this host: demo-a (pid {a.pid}" in said_b, said_b
    assert not (stacks / "other.json").exists()


def test_a_child_started_with_parent_death_ends_with_its_spawner() -> None:
    # What `tandem up` gives nats-server and each service, on its own: a spawner SIGKILLed.
    code = (
        "import subprocess, sys, time; from tandem.cli.supervisor import parent_death; "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
        "preexec_fn=parent_death()); print(child.pid, flush=True); time.sleep(300)"
    )
    spawner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert spawner.stdout is not None
    child = psutil.Process(int(spawner.stdout.readline()))
    assert child.is_running()
    spawner.kill()
    spawner.wait(timeout=30)

    def gone() -> bool:
        return not child.is_running() or child.status() == psutil.STATUS_ZOMBIE

    until(gone, 30, "the child to end with its spawner")
