"""Which ``tandem up`` stack a command talks to.

Each ``tandem up`` has a name (``--name``, default from its store folder) and its own
discovery file ``<state>/tandem/stacks/<name>.json`` (0600, in a 0700 folder; removed at its
exit), where ``<state>`` is ``TANDEM_STATE_DIR``, else ``XDG_RUNTIME_DIR``, else ``~/.cache``.
It holds the stack's bus URL and secrets folder, its API URL and its viewer and operator
tokens. A command takes the stack named by ``--stack`` / ``TANDEM_STACK``, else the only one
running; with two or more running and none chosen it refuses (exit 2) naming them.

A file whose ``pid`` is no longer alive (a ``tandem up`` killed hard) is ignored. The
``up.json`` of an older ``tandem up`` is read as a stack named ``up``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # typer vendors click (0.2x): its command runner knows only its own exceptions
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover  (a typer on click itself)
    from click import ClickException  # type: ignore[assignment]

STACK_ENV = "TANDEM_STACK"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


class StackError(ClickException):
    """No usable stack: the one named is not running, or several run and none was chosen."""

    exit_code = 2


def state_root() -> Path:
    base = os.environ.get("TANDEM_STATE_DIR") or os.environ.get("XDG_RUNTIME_DIR")
    return (Path(base) if base else Path.home() / ".cache") / "tandem"


def stacks_dir() -> Path:
    return state_root() / "stacks"


def legacy_file() -> Path:
    """Where an older ``tandem up`` recorded itself (one per user: the cause of issue 18)."""
    return state_root() / "up.json"


def stack_file(name: str) -> Path:
    return stacks_dir() / f"{name}.json"


def check_stack_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise StackError(
            f"stack name {name!r} is invalid: 1-63 characters of a-z, 0-9 and -, "
            "starting with a letter or digit"
        )
    return name


def default_name(store_dir: Path | None, pid: int) -> str:
    """From the store folder's name (``/srv/demo-a`` -> ``demo-a``); ``tandem-<pid>`` for a
    temporary store or a folder name that makes no valid stack name."""
    if store_dir is not None:
        name = re.sub(r"[^a-z0-9-]+", "-", store_dir.resolve().name.lower()).strip("-")[:63]
        if _NAME.fullmatch(name):
            return name
    return f"tandem-{pid}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (Linux ``/proc``; None elsewhere):
    a stack's pid reused by another process after a hard kill is not that stack."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Stack:
    name: str
    path: Path
    state: dict[str, Any]

    @property
    def pid(self) -> int:
        return int(self.state["pid"])

    def get(self, key: str) -> str | None:
        value = self.state.get(key)
        return value if isinstance(value, str) and value else None

    def describe(self) -> str:
        api = self.get("api_url")
        return f"{self.name} (pid {self.pid}{', ' + api if api else ''})"


def _read(path: Path, name: str) -> Stack | None:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not alive(pid):
        return None
    started = state.get("pid_start")
    if isinstance(started, int) and process_start(pid) not in (None, started):
        return None  # that pid is another process now
    return Stack(str(state.get("name") or name), path, state)


def running() -> list[Stack]:
    """Every live stack, by name."""
    found: dict[str, Stack] = {}
    folder = stacks_dir()
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    for path in paths:
        stack = _read(path, path.stem)
        if stack is not None:
            found.setdefault(stack.name, stack)
    old = _read(legacy_file(), "up")
    if old is not None and not any(s.pid == old.pid for s in found.values()):
        found.setdefault(old.name, old)
    return [found[n] for n in sorted(found)]


def chosen_name(flag: str | None = None) -> str | None:
    return flag or os.environ.get(STACK_ENV) or None


def select(flag: str | None = None) -> Stack | None:
    """The stack a command talks to (see the module's docstring); None when none runs and
    none was named. Raises ``StackError`` for a named stack that is not running, or for a
    choice to make between several."""
    stacks = running()
    name = chosen_name(flag)
    if name is not None:
        for stack in stacks:
            if stack.name == name:
                return stack
        others = ", ".join(s.describe() for s in stacks) or "none"
        raise StackError(f"no tandem up stack named {name!r} is running (running: {others})")
    if len(stacks) <= 1:
        return stacks[0] if stacks else None
    names = ", ".join(s.describe() for s in stacks)
    raise StackError(
        f"{len(stacks)} tandem up stacks are running: {names}; choose one with "
        f"`tandem --stack NAME ...` or {STACK_ENV}=NAME"
    )


def find(key: str, value: str) -> Stack | None:
    """The live stack whose ``key`` is ``value`` (e.g. the one whose bus is a URL)."""
    return next((s for s in running() if s.state.get(key) == value), None)
