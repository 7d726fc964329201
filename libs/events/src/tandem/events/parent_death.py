"""A child process that dies with its parent (Linux ``PR_SET_PDEATHSIG``), even when the
parent is SIGKILLed: nothing it spawned is left running, orphaned, beside its restart."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM, parent: int | None = None) -> None:
    """In the child: get ``sig`` when the parent dies. With ``parent`` (the spawner's pid): a
    spawner that died between the fork and this call sends nothing, so a child that sees
    another parent ends at once."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
        if parent is not None and os.getppid() != parent:
            os._exit(1)


def parent_death(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for a child of this process: ``die_with_parent`` of this pid."""
    parent = os.getpid()
    return lambda: die_with_parent(sig, parent)
