"""Where the bus is: --bus, else TANDEM_BUS_SERVERS, else a running ``tandem up``, else 4222."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "nats://127.0.0.1:4222"


def state_file() -> Path:
    """Where a running ``tandem up`` records its bus URL for the other commands."""
    base = os.environ.get("TANDEM_STATE_DIR") or os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "tandem" / "up.json"


def read_up_state() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_bus_url(flag: str | None) -> str:
    if flag:
        return flag
    env = os.environ.get("TANDEM_BUS_SERVERS")
    if env:
        return env
    state = read_up_state()
    if state and isinstance(state.get("bus_url"), str):
        return str(state["bus_url"])
    return DEFAULT_URL
