"""The delivery ledger: what each route did with each event, on disk before the ack.

``ledger.jsonl`` in the state folder, one line per (event id, route): ``delivered``,
``failed`` (given up) or ``suppressed`` (silenced, repeated, rate limited...), each line
written and fsynced before the JetStream message is acknowledged. A message delivered again
(a restart, even after SIGKILL) finds its routes here and is not sent again. The one window
left: a process killed after a send and before its line is written sends that notification
again after the restart, with the same event id.

The file is cut back to its last ``keep`` lines when it passes ``2 * keep`` at open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Outcome = Literal["delivered", "failed", "suppressed"]


class Ledger:
    def __init__(self, folder: Path, *, keep: int = 50_000) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "ledger.jsonl"
        self._done: dict[tuple[str, str], Outcome] = {}
        lines = self._read()
        if len(lines) > 2 * keep:
            lines = lines[-keep:]
            self._rewrite(lines)
        for record in lines:
            self._done[(record["e"], record["r"])] = record["o"]  # type: ignore[assignment]
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = asyncio.Lock()

    def _read(self) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for number, line in enumerate(text.splitlines(), 1):
            try:
                record = json.loads(line)
                if isinstance(record, dict) and {"e", "r", "o"} <= record.keys():
                    out.append(record)
                    continue
            except ValueError:
                pass
            log.warning("%s:%d: not a ledger record (torn by a crash?): skipped", self.path, number)
        return out

    def _rewrite(self, lines: list[dict[str, str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def outcome(self, event_id: str, route: str) -> Outcome | None:
        return self._done.get((event_id, route))

    def __len__(self) -> int:
        return len(self._done)

    async def record(self, event_id: str, route: str, outcome: Outcome, detail: str = "") -> None:
        """Append and fsync one line (in a thread); returns once it is on disk."""
        line = {
            "e": event_id,
            "r": route,
            "o": outcome,
            "at": datetime.now(UTC).isoformat(),
            "why": detail[:300],
        }
        data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
        # Known at once: a write that fails (a full disk) is tried again by the dispatcher,
        # which must not send again what was sent meanwhile.
        self._done[(event_id, route)] = outcome
        async with self._lock:
            await asyncio.to_thread(self._append, data)

    def _append(self, data: bytes) -> None:
        os.write(self._fd, data)
        os.fsync(self._fd)

    def close(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
