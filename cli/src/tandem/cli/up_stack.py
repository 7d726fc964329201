"""A ``tandem up`` stack's identity: its store's lock, its name, its discovery file.

One ``tandem up`` per store: a second one on the same store finds the lock held and says
which stack runs there (its name, pid and API) instead of starting a second bus on the same
files. A name is one stack's: a second stack of the same name is refused too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from tandem.cli.stacks import (
    Stack,
    alive,
    find,
    process_start,
    running,
    stack_file,
    stacks_dir,
    state_root,
)
from tandem.events.private_files import write_private

log = logging.getLogger(__name__)

LOCK_NAME = "up.lock"


class AlreadyRunning(Exception):
    """Another ``tandem up`` holds the store or the name: the message says which."""


def _describe(stack: Stack) -> str:
    api = stack.get("api_url")
    return f"stack {stack.name!r}, pid {stack.pid}" + (f", API {api}" if api else "")


def lock_store(root: Path) -> IO[str]:
    """Hold ``<root>/up.lock`` for this process's life (released when it exits, however it
    exits). Raises ``AlreadyRunning`` naming the stack that holds it."""
    path = root / LOCK_NAME
    handle = path.open("a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; the name check still applies
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        stack = find("store_dir", str(root))
        if stack is not None:
            what, use = _describe(stack), f"tandem --stack {stack.name} ..."
        else:
            what, use = f"pid {holder or '?'} (still starting?)", "tandem --stack NAME ..."
        raise AlreadyRunning(
            f"a tandem up is already running on store {root}: {what}. Use that one "
            f"({use}), stop it (Ctrl-C where it runs), or give another --store-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def check_name_free(name: str) -> None:
    """Refuse a name a live stack already has (it would replace its discovery file)."""
    for stack in running():
        if stack.name == name and stack.pid != os.getpid():
            store = stack.get("store_dir") or "?"
            raise AlreadyRunning(
                f"a tandem up stack named {name!r} is already running ({_describe(stack)}, "
                f"store {store}): give this one another --name"
            )


def write_discovery(name: str, state: dict[str, Any]) -> Path:
    """``<state>/tandem/stacks/<name>.json``, 0600 in 0700 folders: it holds the API tokens."""
    folder = stacks_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for part in (state_root(), folder):
        with contextlib.suppress(OSError):
            os.chmod(part, 0o700)
    path = stack_file(name)
    pid = os.getpid()
    body = {"name": name, "pid": pid, "pid_start": process_start(pid), **state}
    write_private(path, json.dumps(body, indent=2))
    return path


def remove_discovery(path: Path) -> None:
    """Remove this process's discovery file (not one a later stack of that name wrote)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    pid = state.get("pid") if isinstance(state, dict) else None
    if pid == os.getpid() or (isinstance(pid, int) and not alive(pid)):
        with contextlib.suppress(OSError):
            path.unlink()


def stack_ports() -> set[int]:
    """The ports the running stacks hold (their API's, their demo's): one may not listen on
    them yet, and a stack started meanwhile must not take them."""
    ports: set[int] = set()
    for stack in running():
        held = stack.state.get("ports")
        if isinstance(held, list):
            ports.update(p for p in held if isinstance(p, int))
        with contextlib.suppress(ValueError, TypeError):
            port = urlsplit(stack.get("api_url") or "").port
            if port is not None:
                ports.add(port)
    return ports
