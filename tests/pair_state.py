"""What the system tests and the benchmarks ask of a pair from the outside: is it ready for
the next fault (read from the orchestrator's cluster view), and which of our processes are
left over after a run. Used by tests/chaos and bench/failover_rig.py (which puts tests/ on
its path)."""

from __future__ import annotations

import contextlib
import http.client
import os
from pathlib import Path
from typing import Any

import psutil


def pair_ready(view: dict[str, Any] | None, check: str) -> tuple[bool, str]:
    """From the cluster view: the Active alive, playing active, its ``check`` ok; another
    node alive, passive, neither out of sync nor being synchronized (the orchestrator's guard
    refuses a move to such a node; a new target is out of sync until verified); no saga
    running. Returns (ready, why not)."""
    if view is None:
        return False, "no cluster view"
    nodes = {n["name"]: n for n in view.get("nodes", [])}
    active = nodes.get(view.get("active") or "")
    if active is None:
        return False, f"no Active in the view (active={view.get('active')})"
    if view.get("saga"):
        return False, f"saga {view['saga']} running"
    if not (active["alive"] and active["role"] == "active"):
        return False, f"Active {active['name']} alive={active['alive']} role={active['role']}"
    if active["checks"].get(check) != "ok":
        return False, f"Active's check {check}: {active['checks'].get(check)}"
    others = [n for name, n in nodes.items() if name != active["name"]]
    if not any(
        n["alive"]
        and n["role"] == "passive"
        and n.get("replication") not in ("out_of_sync", "syncing")
        for n in others
    ):
        said = [(n["name"], n["alive"], n["role"], n.get("replication")) for n in others]
        return False, f"no Passive ready (name, alive, role, replication): {said}"
    return True, ""


def kill_leftovers(root: Path, keep: set[int]) -> list[str]:
    """SIGKILL every process (not in ``keep``) naming ``root`` on its command line: demo apps
    the agents started in sessions of their own, guards. Only ours: they name our folder."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
        except psutil.Error:
            continue
        if proc.pid in keep or proc.pid == os.getpid():
            continue
        if any(str(root) in part for part in cmdline):
            found.append(f"pid {proc.pid}: {' '.join(cmdline)[:120]}")
            with contextlib.suppress(psutil.Error):
                proc.kill()
    return found


def http_status(
    port: int, path: str = "/health", timeout: float = 0.3, host: str = "127.0.0.1"
) -> int | None:
    """One GET on a fresh connection to host:port; its status, or None (any failure)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
