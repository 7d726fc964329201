"""Failure detectors for peer heartbeats: a fixed timeout, and the phi accrual detector.

Both are pure: every call takes ``now`` (monotonic seconds) so tests drive time explicitly.
With no heartbeat yet a detector never suspects: "never seen" is the caller's decision (it
knows how long the peer has had to show up), not a failure the detector can measure.

The phi accrual detector (Hayashibara et al., 2004; the Akka/Cassandra variant) keeps a sliding
window of inter-arrival times and turns the current silence into a suspicion level
``phi = -log10(P(next heartbeat arrives later than now))`` under a normal approximation. A
jittery link widens the distribution, so the same silence means less; a steady one narrows it,
so the detector reacts faster than any fixed timeout that must cover the worst jitter.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

_LN10 = math.log(10.0)
#: Where log(1 + exp(z)) == z in double precision (exp(-34) is far below half an ulp of 34).
_LINEAR_FROM = 34.0


class FailureDetector(Protocol):
    """What the monitor asks of a detector, whatever its kind."""

    @property
    def last_seen(self) -> float | None: ...

    def heartbeat(self, now: float) -> None: ...

    def suspect(self, now: float) -> bool: ...

    def explain(self, now: float) -> str: ...


class FixedTimeoutDetector:
    """Suspect once the silence is strictly longer than ``timeout_s``."""

    def __init__(self, timeout_s: float, *, interval_s: float | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.timeout_s = timeout_s
        #: Only used to explain the timeout in intervals; it does not change the decision.
        self.interval_s = interval_s
        self._last_seen: float | None = None

    @property
    def last_seen(self) -> float | None:
        return self._last_seen

    def heartbeat(self, now: float) -> None:
        # A late-delivered, older heartbeat must not move the clock backwards.
        if self._last_seen is None or now > self._last_seen:
            self._last_seen = now

    def silence(self, now: float) -> float:
        return 0.0 if self._last_seen is None else max(0.0, now - self._last_seen)

    def suspect(self, now: float) -> bool:
        return self._last_seen is not None and self.silence(now) > self.timeout_s

    def explain(self, now: float) -> str:
        if self._last_seen is None:
            return "no heartbeat yet"
        timeout = f"timeout {self.timeout_s:.2f}s"
        if self.interval_s:
            intervals = self.timeout_s / self.interval_s
            timeout += f" = {intervals:g} intervals of {self.interval_s:.2f}s"
        silence = self.silence(now)
        if self.suspect(now):
            return f"no heartbeat for {silence:.2f}s ({timeout})"
        return f"last heartbeat {silence:.2f}s ago ({timeout})"


class PhiAccrualDetector:
    """Phi accrual failure detector over a sliding window of heartbeat inter-arrival times."""

    def __init__(
        self,
        threshold: float = 8.0,
        window: int = 200,
        min_std_s: float = 0.1,
        acceptable_pause_s: float = 0.0,
        first_interval_s: float = 1.0,
    ) -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window!r}")
        if not min_std_s > 0:
            raise ValueError(f"min_std_s must be > 0, got {min_std_s!r}")
        if acceptable_pause_s < 0:
            raise ValueError(f"acceptable_pause_s must be >= 0, got {acceptable_pause_s!r}")
        if not first_interval_s > 0:
            raise ValueError(f"first_interval_s must be > 0, got {first_interval_s!r}")
        self.threshold = threshold
        self.min_std_s = min_std_s
        self.acceptable_pause_s = acceptable_pause_s
        self.first_interval_s = first_interval_s
        self._intervals: deque[float] = deque(maxlen=window)
        self._last_seen: float | None = None

    @property
    def last_seen(self) -> float | None:
        return self._last_seen

    @property
    def intervals(self) -> tuple[float, ...]:
        return tuple(self._intervals)

    def heartbeat(self, now: float) -> None:
        if self._last_seen is None:
            # Bootstrap as Akka does: two synthetic intervals with mean first_interval_s and
            # std mean/4, so the first real intervals are judged against a sane prior instead
            # of a zero-variance guess; real samples dilute and then push them out.
            mean = self.first_interval_s
            self._intervals.extend((mean - mean / 4, mean + mean / 4))
            self._last_seen = now
            return
        interval = now - self._last_seen
        if interval <= 0:
            # Duplicate or reordered delivery: a zero interval would drag the mean down and
            # make the detector trigger-happy, so it is not a sample.
            log.debug(
                "ignoring heartbeat at %s, not after the last one at %s", now, self._last_seen
            )
            return
        self._intervals.append(interval)
        self._last_seen = now

    def stats(self) -> tuple[float, float]:
        """Mean and (clamped) standard deviation of the inter-arrival window."""
        n = len(self._intervals)
        if n == 0:
            mean = self.first_interval_s
            return mean, max(mean / 4, self.min_std_s)
        mean = math.fsum(self._intervals) / n
        variance = math.fsum((x - mean) ** 2 for x in self._intervals) / n
        return mean, max(math.sqrt(variance), self.min_std_s)

    def silence(self, now: float) -> float:
        return 0.0 if self._last_seen is None else max(0.0, now - self._last_seen)

    def phi(self, now: float) -> float:
        """Suspicion level; 0.0 before the first heartbeat."""
        if self._last_seen is None:
            return 0.0
        mean, std = self.stats()
        return phi_of(self.silence(now), mean + self.acceptable_pause_s, std)

    def suspect(self, now: float) -> bool:
        return self._last_seen is not None and self.phi(now) >= self.threshold

    def explain(self, now: float) -> str:
        if self._last_seen is None:
            return "no heartbeat yet"
        phi = self.phi(now)
        mean, std = self.stats()
        relation = ">=" if phi >= self.threshold else "<"
        pause = (
            f", acceptable pause {self.acceptable_pause_s:.2f}s" if self.acceptable_pause_s else ""
        )
        return (
            f"phi {phi:.1f} {relation} {self.threshold:.1f} after {self.silence(now):.2f}s of "
            f"silence; mean interval {mean:.2f}s, std {std:.2f}s{pause}"
        )


def phi_of(silence: float, mean: float, std: float) -> float:
    """``-log10(P(X > silence))`` for X ~ N(mean, std), logistic approximation of the CDF.

    With ``y = (silence - mean) / std`` the tail is ``1 / (1 + exp(z))`` where
    ``z = y * (1.5976 + 0.070566 * y**2)`` (the approximation Akka uses), so
    ``phi = log10(1 + exp(z))``. Computed that way rather than as Akka's ``-log10(e / (1 + e))``
    because the latter underflows to ``log10(0)`` after a long silence, exactly when the answer
    matters most. Past ``z = 34``, ``log(1 + exp(z))`` equals ``z`` to double precision, so the
    switch below is seamless and avoids overflow. The usual stable softplus,
    ``z + log1p(exp(-z))``, is avoided on purpose: its two rounded terms move in opposite
    directions and make phi dip by an ulp as silence grows; each step here is monotone.
    """
    y = (silence - mean) / std
    z = y * (1.5976 + 0.070566 * y * y)
    softplus = z if z >= _LINEAR_FROM else math.log1p(math.exp(z))
    return softplus / _LN10


class DetectorConfig(BaseModel):
    """How a node decides that a peer is gone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["fixed", "phi"] = "fixed"
    #: Fixed detector: the timeout is the heartbeat interval times this.
    timeout_intervals: float = Field(default=4, gt=0)
    phi_threshold: float = Field(default=8.0, gt=0)
    window: int = Field(default=200, ge=2)
    #: Floor on the measured spread: a perfectly regular link would otherwise make phi jump
    #: to infinity on the first late heartbeat.
    min_std_s: float = Field(default=0.1, gt=0)
    #: Extra silence tolerated on top of the mean (GC pauses, a busy host).
    acceptable_pause_s: float = Field(default=0, ge=0)


def make_detector(config: DetectorConfig, interval_s: float) -> FailureDetector:
    """A fresh detector for one peer whose heartbeats are expected every ``interval_s``."""
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    if config.kind == "fixed":
        return FixedTimeoutDetector(interval_s * config.timeout_intervals, interval_s=interval_s)
    return PhiAccrualDetector(
        threshold=config.phi_threshold,
        window=config.window,
        min_std_s=config.min_std_s,
        acceptable_pause_s=config.acceptable_pause_s,
        first_interval_s=interval_s,
    )
