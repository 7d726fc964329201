"""HTTP check: does a URL answer with an expected status (and body) in time (httpx).

Each check opens a fresh connection (a new client) so it measures what a new user would see.
Proxy environment variables are ignored: a health check talks to the service directly. The TLS
context (loading CA certificates blocks) is built once, in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from typing import Literal

import httpx
from pydantic import Field, field_validator

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample
from tandem.monitor.health.checkbase import CheckBase, elapsed_ms

log = logging.getLogger(__name__)

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class HttpCheckConfig(CheckBase):
    plugin: Literal["http"] = "http"
    url: str
    method: Method = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    #: Compiled at validation (an invalid regex is a validation error on this field).
    body_match: re.Pattern[str] | None = None
    #: Slower than this (whole response, body included) makes the sample WARNING.
    warn_latency_ms: float | None = Field(default=None, ge=0)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("url must be an absolute http:// or https:// URL")
        return value

    @field_validator("expect_status")
    @classmethod
    def _status_codes(cls, value: list[int]) -> list[int]:
        bad = [code for code in value if not 100 <= code <= 599]
        if bad:
            raise ValueError(f"not HTTP status codes: {bad}")
        return value


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed, from the OS error under httpx's wrapping when there is one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


class HttpCheck:
    """Metrics: ``up`` (1 when status and body are as expected), ``status``, ``latency_ms``.

    ``status`` and ``latency_ms`` are present whenever the server answered at all.
    """

    kind = "http"

    def __init__(self, config: HttpCheckConfig) -> None:
        self.config = config
        self._tls: ssl.SSLContext | None = None

    async def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            verify = self.config.verify_tls
            self._tls = await asyncio.to_thread(httpx.create_ssl_context, verify, None, False)
        return self._tls

    def _down(self, why: str, metrics: dict[str, float] | None = None) -> Sample:
        cfg = self.config
        return Sample(
            status=HealthStatus.CRITICAL,
            metrics={"up": 0.0, **(metrics or {})},
            message=f"http {cfg.method} {cfg.url} {why}",
        )

    async def check(self) -> Sample:
        cfg = self.config
        timeout = httpx.Timeout(cfg.timeout_s)
        tls = await self._tls_context()
        start = time.perf_counter()
        try:
            async with httpx.AsyncClient(verify=tls, timeout=timeout, trust_env=False) as client:
                start = time.perf_counter()
                response = await client.request(cfg.method, cfg.url)
        except httpx.TimeoutException:
            return self._down(f"did not answer within {cfg.timeout_s:g}s")
        except httpx.ConnectError as exc:
            return self._down(f"cannot connect: {connect_reason(exc)}")
        except httpx.HTTPError as exc:
            return self._down(f"failed: {type(exc).__name__}: {exc}")
        latency_ms = elapsed_ms(start, time.perf_counter())
        metrics = {"status": float(response.status_code), "latency_ms": latency_ms}
        code = response.status_code
        if code not in cfg.expect_status:
            expected = ", ".join(str(c) for c in cfg.expect_status)
            return self._down(f"answered {code} (expected {expected})", metrics)
        if cfg.body_match is not None and not cfg.body_match.search(response.text):
            return self._down(
                f"answered {code} but the body does not match /{cfg.body_match.pattern}/", metrics
            )
        metrics["up"] = 1.0
        if cfg.warn_latency_ms is not None and latency_ms > cfg.warn_latency_ms:
            return Sample(
                status=HealthStatus.WARNING,
                metrics=metrics,
                message=f"http {cfg.method} {cfg.url} answered {code} in {latency_ms:.0f} ms "
                f"(warn above {cfg.warn_latency_ms:g} ms)",
            )
        return Sample(
            status=HealthStatus.OK,
            metrics=metrics,
            message=f"http {cfg.method} {cfg.url} answered {code} in {latency_ms:.0f} ms",
        )
