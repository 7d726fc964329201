"""Moving one name: the update with retries and backoff, then the authoritative check.

``Mover.move`` returns the attempts it took and the servers that answered the new addresses,
or raises ``MoveFailed`` with the reason and the attempts made. Every wait is bounded by the
configuration (``[retry]``, ``[update]``, ``[verify]``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from tandem.dns_updater.config import DnsUpdaterConfig, NameConfig
from tandem.dns_updater.tsigkey import KeyFiles, TsigKey
from tandem.dns_updater.update import DnsError, Lookup, build_update, lookup, ordered, send_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moved:
    attempts: int
    verified_by: list[str]


class MoveFailed(Exception):
    def __init__(self, reason: str, attempts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class Mover:
    def __init__(self, config: DnsUpdaterConfig, keys: KeyFiles | None = None) -> None:
        self.config = config
        #: The key files, read again when they change (a corrected key needs no restart).
        self.keys = keys or KeyFiles()

    def key_for(self, entry: NameConfig) -> TsigKey:
        return self.keys.current(self.config.key_for(entry))

    async def move(self, entry: NameConfig, addresses: list[str]) -> Moved:
        attempts = await self.push(entry, addresses)
        try:
            verified_by = await self.verify(entry, addresses)
        except MoveFailed as exc:
            raise MoveFailed(exc.reason, attempts) from None
        return Moved(attempts=attempts, verified_by=verified_by)

    async def push(self, entry: NameConfig, addresses: list[str]) -> int:
        """Send the update until a server applies it; the number of attempts it took."""
        retry = self.config.retry
        loop = asyncio.get_running_loop()
        started = loop.time()
        delay = retry.initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._attempt(entry, addresses)
                log.info("%s: update applied (attempt %d)", entry.display_name, attempt)
                return attempt
            except DnsError as exc:
                if not exc.retryable:
                    raise MoveFailed(exc.reason, attempt) from None
                last = exc.reason
            elapsed = loop.time() - started
            if attempt >= retry.attempts or elapsed + delay > retry.deadline_s:
                raise MoveFailed(
                    f"gave up after {attempt} attempt(s) in {elapsed:.1f}s: {last}", attempt
                )
            log.warning(
                "%s: attempt %d failed (%s); next attempt in %gs",
                entry.display_name,
                attempt,
                last,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * retry.multiplier, retry.max_s)

    async def _attempt(self, entry: NameConfig, addresses: list[str]) -> None:
        """One attempt: each update server in turn until one applies the update."""
        update = self.config.update
        errors: list[str] = []
        for server in update.servers:
            key = self.key_for(entry)
            message = build_update(entry.zone, entry.name, entry.ttl, addresses, key)
            try:
                await send_update(
                    message, server, timeout=update.timeout_s, protocol=update.protocol
                )
                return
            except DnsError as exc:
                if not exc.retryable:
                    raise
                errors.append(exc.reason)
        raise DnsError("; ".join(errors), retryable=True)

    async def verify(self, entry: NameConfig, addresses: list[str]) -> list[str]:
        """Wait until every authoritative server answers exactly ``addresses``; their names."""
        settings = self.config.verify
        servers = self.config.verify_servers
        expected = frozenset(ordered(addresses))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout_s
        pending = {str(s): s for s in servers}
        last: dict[str, Lookup] = {}
        while True:
            answers = await asyncio.gather(
                *(lookup(entry.name, s, timeout=settings.query_timeout_s) for s in pending.values())
            )
            for answer in answers:
                last[str(answer.server)] = answer
                if answer.addresses == expected:
                    del pending[str(answer.server)]
            if not pending:
                return [str(s) for s in servers]
            if loop.time() + settings.interval_s > deadline:
                seen = "; ".join(last[name].describe() for name in pending)
                raise MoveFailed(
                    f"the update was applied but not seen within {settings.timeout_s:g}s: "
                    f"{seen} (expected [{', '.join(ordered(addresses))}])",
                    attempts=0,
                )
            await asyncio.sleep(settings.interval_s)

    async def look(self, entry: NameConfig) -> list[Lookup]:
        """What each authoritative server answers for the name now (one round of queries)."""
        timeout = self.config.verify.query_timeout_s
        return list(
            await asyncio.gather(
                *(lookup(entry.name, s, timeout=timeout) for s in self.config.verify_servers)
            )
        )
