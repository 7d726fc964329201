"""The role records of ``tandem_roles`` as they change, followed by one watch of the bucket.

The orchestrator brings its record up to them (a first Active that claimed epoch 1 by
itself, a role changed by another leader): reading every cluster's record each second cost
one request per cluster; a watch costs one delivery per change. Writes of the record
(compare-and-set) still read the key itself: this copy only tells what changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import ValidationError

from tandem.events.bucket_watch import BucketWatch
from tandem.events.bus import Bus
from tandem.events.roles import RoleRecord
from tandem.events.subjects import ROLES_BUCKET

log = logging.getLogger(__name__)


class RoleRecords:
    def __init__(self, bus: Bus, *, check_every_s: float = 1.0) -> None:
        #: The newest record of each cluster that has one.
        self.records: dict[str, RoleRecord] = {}
        self.watch = BucketWatch(bus, ROLES_BUCKET, self._on_write, check_every_s=check_every_s)
        self._invalid: set[str] = set()

    async def run(self) -> None:
        await self.watch.run()

    def _on_write(self, key: str, revision: int, value: bytes, deleted: bool) -> None:
        if deleted:
            self.records.pop(key, None)
            return
        try:
            self.records[key] = RoleRecord.model_validate_json(value)
        except ValidationError as exc:
            if key not in self._invalid:  # a record only an operator's hand could have made
                log.warning("role record of %s is invalid (revision %s): %s", key, revision, exc)
                self._invalid.add(key)
            return
        self._invalid.discard(key)

    def newer_than(self, epoch_of: Callable[[str], int]) -> list[tuple[str, RoleRecord]]:
        """The clusters whose record is at a newer epoch than ``epoch_of`` says, by name."""
        return sorted(
            (name, record)
            for name, record in list(self.records.items())
            if record.epoch > epoch_of(name)
        )
