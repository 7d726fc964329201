"""The chaos benchmark (issue 15): random fault scenarios from a seed on one real topology (a
3-node NATS cluster with R3 streams, two orchestrators, a pair of node agents protecting the
demo app on loopback), every checker after each scenario; writes ``--out`` (JSON), a Markdown
report and a timeline PNG beside it.

    python bench/chaos.py --scenarios 20 --seed 1 --out bench/results/chaos.json

Everything is real: processes are SIGKILLed / SIGSTOPped and restarted as a supervisor would;
a node's data filesystem (a loop-mounted ext4 image sized for the run's records) is filled
with a ballast file, or its IO throttled (the node's blkio cgroup) for a slow disk.
The harness is in ``tests/chaos/`` (chaos_topology, chaos_nemesis, chaos_checkers, ...).
Exits 0 when the run completed, whatever it found (the findings are in the result); 1 when
the topology could not be built.
"""

from __future__ import annotations

import argparse
import logging
import random
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "tests" / "chaos"), str(HERE.parent / "tests")]

from chaos_disks import disk_mib_for  # noqa: E402
from chaos_nemesis import schedule  # noqa: E402
from chaos_report import markdown, timeline, write_json  # noqa: E402
from chaos_run import ChaosRun  # noqa: E402
from chaos_topology import NODES, Topology  # noqa: E402

log = logging.getLogger("chaos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "chaos.json")
    parser.add_argument("--max-faults", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the run's folder and logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[chaos %(asctime)s] %(name)s %(message)s")
    rng = random.Random(args.seed)
    started = time.time()
    # A SIGTERM (a timeout, a CI cancel) stops like Ctrl-C: the topology is taken down and
    # what was run is written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    run = ChaosRun(Topology(keep=args.keep, disk_mib=disk_mib_for(args.scenarios)))
    try:
        run.start()
    except Exception as exc:
        log.error("the topology could not be built: %s", exc)
        run.close()
        return 1
    extra = []
    try:
        for i in range(args.scenarios):
            faults = schedule(rng, args.max_faults)
            result = run.scenario(f"s{i + 1:03d}", faults)
            log.info(
                "scenario %d/%d: %d violation(s)", i + 1, args.scenarios, len(result["violations"])
            )
    except KeyboardInterrupt:
        log.warning("interrupted: writing what was run")
    finally:
        extra = [v.as_dict() for v in run.close()]
        doc = write_json(args.out, args.seed, run.results, extra, started)
        png = args.out.with_name(args.out.stem + "-timeline.png")
        samples = run.sampler.samples if run.sampler is not None else []
        try:
            timeline(png, run.results, samples, run.stored, NODES)
        except Exception as exc:  # the figures are in the JSON; the picture is a view of them
            log.error("timeline picture not written: %r", exc)
        markdown(args.out.with_suffix(".md"), doc, png)
        if args.keep:
            log.info("logs kept in %s", run.topo.root)
    m = doc["metrics"]
    log.info(
        "%d scenarios, %d faults, %d violations (%s); wrote %s",
        m["scenarios"],
        m["faults_injected"],
        m["violations"],
        m["violations_by_checker"],
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
