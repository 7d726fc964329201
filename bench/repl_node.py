"""One replicator node (or a bare FUSE passthrough) in its own process, for bench/replication.py.

    python bench/repl_node.py '<json spec>'

Spec keys: ``kind`` ("node" or "passthrough"), ``log_level``, and
- node: ``url`` (the bus) and ``settings`` (ReplicatorSettings fields); the node says it is live
  with a ``ReplicationStarted`` event on the bus, as in production;
- passthrough: ``source`` (and optional ``mountpoint``): the same ``InterceptCapture`` as the
  intercept source node, with a sink that discards every op (no journal, no bus); prints
  ``READY`` once mounted.

Each node runs in a process of its own, as the replicator service does on each node: the
source and the target (and the benchmark's writers) do not share one interpreter lock.
SIGTERM or SIGINT stops it cleanly (the node's task is cancelled, which unmounts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from tandem.replicator.ops import Op


class _Discard:
    """An ``OpSink`` that drops every op: FUSE passthrough cost without journaling."""

    def submit(self, op: Op) -> None:
        pass


def run_passthrough(spec: dict[str, Any]) -> int:
    from tandem.replicator.allocator import tune_allocator
    from tandem.replicator.intercept import InterceptCapture

    tune_allocator()  # as a replicator node does: the baseline gets the same allocator
    stop = threading.Event()
    # Our own handlers first: libfuse takes SIGTERM over when it is at its default.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    capture = InterceptCapture(Path(spec["source"]), _Discard(), spec.get("mountpoint"))
    capture.start()
    try:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            if not capture.running:
                sys.stderr.write("the FUSE loop ended by itself\n")
                return 1
    finally:
        capture.stop()
    return 0


async def run_node(spec: dict[str, Any]) -> None:
    from tandem.events.bus import Bus
    from tandem.events.settings import load_bus_settings, load_stream_settings
    from tandem.replicator.service import run
    from tandem.replicator.settings import ReplicatorSettings

    settings = ReplicatorSettings(**spec["settings"])
    bus = await Bus.connect(load_bus_settings(servers=spec["url"]), name=f"bench-{settings.node}")
    try:
        await bus.provision(load_stream_settings(), update_existing=False)
        task = asyncio.create_task(run(settings, bus))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await bus.close()


def main() -> int:
    spec = json.loads(sys.argv[1])
    logging.basicConfig(
        level=spec.get("log_level", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if spec["kind"] == "passthrough":
        return run_passthrough(spec)
    # run_node installs its handlers before the node's task first runs (before it mounts).
    asyncio.run(run_node(spec))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
