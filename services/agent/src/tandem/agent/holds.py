"""An operator's hold on stopped applications (``tandem app stop``), kept across restarts.

A stop by an operator means "leave it stopped": an agent that restarts (a crash, an upgrade,
a supervisor) and starts the applications of its role again would undo it behind the
operator's back. The hold is written with the epoch it was taken at; it applies again only
if the agent comes back Active at that same epoch (a role change since, or a saga's start,
took it back).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: In the node's state dir.
HOLD_FILE = "held-by-operator.json"


@dataclass(frozen=True)
class Hold:
    epoch: int
    applications: frozenset[str]


def read_hold(path: Path) -> Hold | None:
    try:
        raw = json.loads(path.read_text())
        return Hold(int(raw["epoch"]), frozenset(str(a) for a in raw["applications"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Unreadable: the applications start as their role wants (the operator is told).
        log.warning("%s unreadable (%s): no application is held", path, exc)
        return None


def write_hold(path: Path, epoch: int, applications: frozenset[str]) -> None:
    """Durably, before the answer reaches the operator; no applications: no file."""
    if not applications:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump({"epoch": epoch, "applications": sorted(applications)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
