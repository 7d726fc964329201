"""TCP check: can a connection be opened to host:port within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample
from tandem.monitor.health.checkbase import CheckBase, elapsed_ms

log = logging.getLogger(__name__)


class TcpCheckConfig(CheckBase):
    plugin: Literal["tcp"] = "tcp"
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


class TcpCheck:
    """Metrics: ``up`` (1/0) and, when connected, ``connect_ms``."""

    kind = "tcp"

    def __init__(self, config: TcpCheckConfig) -> None:
        self.config = config

    @property
    def target(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    def _down(self, why: str) -> Sample:
        return Sample(
            status=HealthStatus.CRITICAL, metrics={"up": 0.0}, message=f"tcp {self.target} {why}"
        )

    async def check(self) -> Sample:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.timeout_s):
                _, writer = await asyncio.open_connection(self.config.host, self.config.port)
        except TimeoutError:
            return self._down(f"did not accept a connection within {self.config.timeout_s:g}s")
        except ConnectionRefusedError:
            return self._down("refused the connection")
        except socket.gaierror as exc:
            return self._down(f"cannot be resolved: {exc.strerror or exc}")
        except OSError as exc:
            return self._down(f"is unreachable: {exc.strerror or exc}")
        connect_ms = elapsed_ms(start, time.perf_counter())
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Sample(
            status=HealthStatus.OK,
            metrics={"up": 1.0, "connect_ms": connect_ms},
            message=f"tcp {self.target} accepted a connection in {connect_ms:.0f} ms",
        )
