"""The fixture the chaos tests share: a started ``ChaosRun`` (the real topology) that is
always closed, its findings logged, and its logs kept when ``TANDEM_CHAOS_KEEP=1``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from chaos_checkers import Violation
from chaos_run import ChaosRun
from chaos_topology import Topology

log = logging.getLogger(__name__)


def run_topology(topo: Topology | None = None) -> Iterator[ChaosRun]:
    topo = topo or Topology(keep=os.environ.get("TANDEM_CHAOS_KEEP") == "1")
    run = ChaosRun(topo)
    try:
        run.start()
        yield run
    finally:
        at_stop = run.close()
        for v in at_stop:
            log.warning("at stop: %s", v)
        if topo.keep:
            log.warning("chaos logs kept in %s", topo.root)


def findings(results: list[dict[str, Any]], *checkers: str) -> list[str]:
    """Every violation of the named checkers (all when none named), one line each, with the
    scenario it happened in."""
    out = []
    for r in results:
        for v in r["violations"]:
            if not checkers or v["checker"] in checkers:
                out.append(f"{r['name']}: {Violation(v['checker'], v['message'])}")
    return out


def saga_states(result: dict[str, Any]) -> dict[str, str]:
    """saga id -> its end state (running, completed, failed) as the stream tells it."""
    return {s: str(o.get("state", "?")) for s, o in result["sagas"].items()}
