"""Network checks: can this node still reach up to three well-known targets (gateway, DNS,
a peer site)? When every target fails, the node is probably isolated rather than its peer
dead, which is what keeps an isolated node from declaring a failover on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import icmplib
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

MAX_TARGETS = 3
#: Extra time granted to a probe beyond its own timeout before the watch gives up on it, so a
#: probe that honours its timeout reports its own (better) reason.
PROBE_GRACE_S = 1.0


class NetworkTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["icmp", "tcp"]
    host: str = Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")
    #: Required for tcp, forbidden for icmp.
    port: int | None = Field(default=None, ge=1, le=65535)
    #: Defaults to ``kind:host[:port]``, e.g. ``tcp:127.0.0.1:9`` (filled in before validation).
    name: str = Field(default="", max_length=300)

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            kind, host, port = data.get("kind"), data.get("host"), data.get("port")
            if isinstance(host, str) and ":" in host:
                host = f"[{host}]"  # IPv6: keep the port separator unambiguous
            data = {**data, "name": f"{kind}:{host}" + (f":{port}" if port is not None else "")}
        return data

    @model_validator(mode="after")
    def _port_matches_kind(self) -> NetworkTarget:
        if self.kind == "tcp" and self.port is None:
            raise ValueError(f"port is required for tcp target {self.host}")
        if self.kind == "icmp" and self.port is not None:
            raise ValueError(f"port is not allowed for icmp target {self.host}")
        return self


class NetworkConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    targets: list[NetworkTarget] = Field(default_factory=list, max_length=MAX_TARGETS)
    interval_s: float = Field(default=5, gt=0)
    timeout_s: float = Field(default=5, gt=0)
    #: Rounds in a row with every target failing before the node calls itself isolated.
    fail_after: int = Field(default=1, ge=1)

    @field_validator("targets")
    @classmethod
    def _unique_names(cls, targets: list[NetworkTarget]) -> list[NetworkTarget]:
        names = [target.name for target in targets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"target names must be unique; repeated: {', '.join(duplicates)}")
        return targets


#: ``(target, timeout_s) -> (reachable, detail)``; injectable so the watch is testable.
Probe = Callable[[NetworkTarget, float], Awaitable[tuple[bool, str]]]


async def probe(target: NetworkTarget, timeout_s: float) -> tuple[bool, str]:
    """Probe one target; never raises (except cancellation)."""
    if target.kind == "tcp":
        assert target.port is not None  # guaranteed by NetworkTarget's validation
        return await _probe_tcp(target.host, target.port, timeout_s)
    return await _probe_icmp(target.host, timeout_s)


async def _probe_tcp(host: str, port: int, timeout_s: float) -> tuple[bool, str]:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, f"timed out after {timeout_s:g}s"
    except ConnectionRefusedError:
        return False, "refused"
    except socket.gaierror as exc:
        return False, f"name lookup failed: {exc.strerror or exc}"
    except OSError as exc:
        return False, exc.strerror or f"{type(exc).__name__}: {exc}"
    elapsed_ms = (time.monotonic() - started) * 1000
    writer.close()
    # Only the connect matters; a slow or failing close must not turn success into failure.
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    return True, f"connected in {elapsed_ms:.1f} ms"


async def _probe_icmp(host: str, timeout_s: float) -> tuple[bool, str]:
    # Raw sockets need root; otherwise icmplib uses datagram ICMP sockets, which the kernel
    # allows only for groups in net.ipv4.ping_group_range.
    privileged = os.geteuid() == 0
    try:
        result = await icmplib.async_ping(host, count=1, timeout=timeout_s, privileged=privileged)
    except icmplib.NameLookupError:
        return False, "name lookup failed"
    except icmplib.SocketPermissionError:
        return False, "not permitted to open an ICMP socket (run as root or set ping_group_range)"
    except (icmplib.ICMPLibError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    if result.is_alive:
        return True, f"replied in {result.avg_rtt:.1f} ms"
    return False, f"no reply within {timeout_s:g}s"


@dataclass(frozen=True)
class NetworkVerdict:
    """The outcome of one round over all targets (names in configuration order)."""

    taken_at: float
    reachable: list[str]
    unreachable: list[str]
    #: Every target failed for ``fail_after`` rounds in a row (never with zero targets).
    isolated: bool
    #: First round, or ``isolated`` or the reachable set differs from the previous round.
    changed: bool
    reason: str
    details: dict[str, str] = field(default_factory=dict)
    failed_rounds: int = 0


class NetworkWatch:
    """Runs rounds of probes and remembers enough to say when the picture changed."""

    def __init__(self, config: NetworkConfig, probe: Probe = probe) -> None:
        self.config = config
        self._probe = probe
        self._failed_rounds = 0
        self._previous: tuple[frozenset[str], bool] | None = None

    async def round(self, now: float) -> NetworkVerdict:
        targets = self.config.targets
        results = await asyncio.gather(*(self._guarded(target) for target in targets))
        details = {
            target.name: detail for target, (_, detail) in zip(targets, results, strict=True)
        }
        reachable = [t.name for t, (ok, _) in zip(targets, results, strict=True) if ok]
        unreachable = [t.name for t, (ok, _) in zip(targets, results, strict=True) if not ok]

        all_failed = bool(targets) and not reachable
        self._failed_rounds = self._failed_rounds + 1 if all_failed else 0
        isolated = all_failed and self._failed_rounds >= self.config.fail_after

        current = (frozenset(reachable), isolated)
        changed = current != self._previous
        self._previous = current
        reason = self._reason(reachable, unreachable, details, isolated)
        if changed:
            log.info("network: %s", reason)
        return NetworkVerdict(
            taken_at=now,
            reachable=reachable,
            unreachable=unreachable,
            isolated=isolated,
            changed=changed,
            reason=reason,
            details=details,
            failed_rounds=self._failed_rounds,
        )

    async def _guarded(self, target: NetworkTarget) -> tuple[bool, str]:
        # A probe (especially an injected one) must not break the round or hang it.
        timeout_s = self.config.timeout_s
        try:
            async with asyncio.timeout(timeout_s + PROBE_GRACE_S):
                return await self._probe(target, timeout_s)
        except TimeoutError:
            return False, f"timed out after {timeout_s:g}s"
        except Exception as exc:
            log.warning("network probe of %s raised", target.name, exc_info=True)
            return False, f"probe failed: {type(exc).__name__}: {exc}"

    def _reason(
        self,
        reachable: list[str],
        unreachable: list[str],
        details: dict[str, str],
        isolated: bool,
    ) -> str:
        total = len(reachable) + len(unreachable)
        if total == 0:
            return "no network targets configured"
        failures = ", ".join(f"{name} {details[name]}" for name in unreachable)
        if not reachable:
            subject = "the only network target is" if total == 1 else f"all {total} network targets"
            if isolated:
                rounds = self.config.fail_after
                streak = f" for {self._failed_rounds} rounds" if rounds > 1 else ""
                return f"{subject} unreachable{streak}: {failures}"
            return (
                f"{subject} unreachable (round {self._failed_rounds} of "
                f"{self.config.fail_after} before isolation): {failures}"
            )
        if not unreachable:
            return (
                f"all {total} network targets reachable"
                if total > 1
                else ("the only network target is reachable")
            )
        return f"{len(reachable)} of {total} network targets reachable; unreachable: {failures}"
