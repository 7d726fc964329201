"""The rule alerts a monitor raised and has not cleared yet, kept in a small file of the
node's state folder: an agent restarted while a rule's alert was open still clears it when
the rule's check passes again (without the file it would stay open for good).

The file is written before the alert is sent: a crash between the two leaves a code whose
clear, later, names an alert never raised (folded as nothing), never an alert never cleared.
It is replaced whole (write beside, rename over); not fsynced: a power loss may lose the last
change, which only brings back the behaviour without the file.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE_NAME = "alerted-rules.json"


class AlertedRules:
    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / FILE_NAME if state_dir is not None else None
        self.codes: set[str] = self._load()

    def __contains__(self, code: object) -> bool:
        return code in self.codes

    def add(self, code: str) -> None:
        if code not in self.codes:
            self.codes.add(code)
            self._save()

    def discard(self, code: str) -> None:
        if code in self.codes:
            self.codes.discard(code)
            self._save()

    def _load(self) -> set[str]:
        if self.path is None or not self.path.exists():
            return set()
        try:
            codes = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("%s unreadable (%s): its open rule alerts are forgotten", self.path, exc)
            return set()
        if not isinstance(codes, list):
            log.warning("%s holds no list: its open rule alerts are forgotten", self.path)
            return set()
        return {str(code) for code in codes}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            beside = self.path.with_suffix(".tmp")
            beside.write_text(json.dumps(sorted(self.codes)))
            os.replace(beside, self.path)
        except OSError as exc:  # the alert still goes out; only its clear after a restart
            log.warning("could not record the open rule alerts in %s: %s", self.path, exc)
