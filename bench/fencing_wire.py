"""Fencing on the wire, for the failover benchmark's results: runs the network-namespace test
``tests/system/test_fencing_netns.py`` (real agents with the ``lan`` identity; a client
sampling ARP and HTTP on the public IP every 20 ms through a SIGSTOP of the Active's agent, a
SIGKILL of it, a bus partition of the Active and a SIGKILL of its node guard) and adds what
its sampler saw to ``bench/results/failover.json``: ``metrics.split_windows`` (probes that
both nodes answered; target 0) and, per scenario, the probes, how many the old Active answered
after the new one had, and the longest outage the client saw.

    python bench/fencing_wire.py [--out bench/results/failover.json]

Needs root (network namespaces, nftables). Run after bench/failover.py, which writes the file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEST = "tests/system/test_fencing_netns.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/failover.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "fencing.json"
        env = {**os.environ, "TANDEM_FENCING_REPORT": str(report), "TANDEM_REQUIRE_ALL": "1"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
            env=env,
            check=False,
        )
        if not report.exists():
            sys.stderr.write(f"fencing_wire: {TEST} wrote no figures (exit {done.returncode})\n")
            return 1
        figures = json.loads(report.read_text())
    result = json.loads(args.out.read_text()) if args.out.exists() else {"metrics": {}}
    result.setdefault("metrics", {})["split_windows"] = figures["split_windows"]
    result.setdefault("details", {})["split_windows"] = figures
    target = {"value": figures["split_windows"], "max": 0, "measured": True}
    target["met"] = figures["split_windows"] == 0
    result.setdefault("targets", {})["split_windows"] = target
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"split_windows {figures['split_windows']} of {figures['probes']} probes\n")
    return 0 if done.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
