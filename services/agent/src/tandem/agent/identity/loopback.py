"""A stand-in public identity for the demo and the tests, on one machine.

On a real node the identity is an IP address plumbed onto an interface; here "exposed" is a
small JSON file naming the address. The product rule "the public IP lives only in memory on the
Active: a node that restarts comes up hidden" is kept by ``reset_on_start``, which the agent
calls when it starts: whatever a previous run left behind is hidden again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path

from tandem.agent.identity.base import IdentityStatus
from tandem.agent.identity.publicport import PublicPort

log = logging.getLogger(__name__)


class LoopbackIdentity:
    def __init__(
        self, state_file: Path, address: str = "127.0.0.1", public: PublicPort | None = None
    ) -> None:
        self.state_file = state_file
        self.address = address
        #: With a public port, exposing also listens on it (only one node can).
        self.public = public
        self._lock = asyncio.Lock()

    async def status(self) -> IdentityStatus:
        return await asyncio.to_thread(self._read)

    async def expose(self) -> IdentityStatus:
        async with self._lock:
            current = await asyncio.to_thread(self._read)
            listening = self.public is None or self.public.listening
            if current.exposed and current.address == self.address and listening:
                return current.model_copy(update={"detail": "already exposed"})
            if self.public is not None:
                await self.public.start()  # raises when another node still holds the port
            await asyncio.to_thread(self._write)
            log.info("identity %s exposed (%s)", self.address, self.state_file)
            return IdentityStatus(exposed=True, address=self.address, detail="exposed")

    async def hide(self) -> IdentityStatus:
        async with self._lock:
            if self.public is not None:
                await self.public.stop()
            removed = await asyncio.to_thread(self._remove)
            if not removed:
                return IdentityStatus(exposed=False, detail="already hidden")
            log.info("identity %s hidden (%s)", self.address, self.state_file)
            return IdentityStatus(exposed=False, detail="hidden")

    async def reset_on_start(self) -> IdentityStatus:
        """Hide whatever a previous run exposed: a node that (re)starts comes up hidden."""
        hidden = await self.hide()
        if hidden.detail == "hidden":
            log.warning("identity was still exposed from a previous run; hidden at start")
            return hidden.model_copy(update={"detail": "hidden at start (was exposed)"})
        return hidden.model_copy(update={"detail": "hidden at start"})

    def _read(self) -> IdentityStatus:
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            address = data["address"]
            if not isinstance(address, str):
                raise TypeError("address is not a string")
        except FileNotFoundError:
            return IdentityStatus(exposed=False, detail="hidden")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Written atomically by us, so this is outside tampering: say so, count it as hidden.
            return IdentityStatus(
                exposed=False, detail=f"state file {self.state_file} is unreadable: {exc}"
            )
        return IdentityStatus(exposed=True, address=address, detail="exposed")

    def _write(self) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        payload = {"address": self.address, "exposed_at": datetime.now(UTC).isoformat()}
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def _remove(self) -> bool:
        try:
            self.state_file.unlink()
        except FileNotFoundError:
            return False
        return True
