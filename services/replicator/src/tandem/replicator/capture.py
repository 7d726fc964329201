"""The interface between capture backends and the send queue.

A backend (``intercept``: FUSE passthrough; ``watch``: file notifications + block hashes)
turns what an application does under the protected root into ``Op`` values and hands them,
in the order they took effect, to an ``OpSink``. ``OpSink.submit`` is thread-safe and may
block (back-pressure when the send queue is full): a backend never drops an operation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tandem.replicator.ops import Op


class OpSink(Protocol):
    def submit(self, op: Op) -> None:
        """Take one operation (already applied to the source). Thread-safe; may block."""


class Capture(Protocol):
    """A running capture backend."""

    name: str

    def start(self) -> None:
        """Begin capturing (returns once capture is live)."""

    def stop(self) -> None:
        """Stop capturing; every operation that took effect has been submitted on return."""

    def flush(self, timeout: float) -> None:
        """Return once every change made before the call has been submitted (a drain needs
        it: a capture that learns of changes late, like ``watch``, may still hold some)."""

    def read_root(self) -> Path:
        """Where the service itself reads the protected folder (verify): never through a
        mount it serves, which a killed process could not answer (see intercept_mounts)."""


class ListSink:
    """An ``OpSink`` that keeps operations in a list (tests, tools)."""

    def __init__(self) -> None:
        import threading

        self.ops: list[Op] = []
        self._lock = threading.Lock()

    def submit(self, op: Op) -> None:
        with self._lock:
            self.ops.append(op)
