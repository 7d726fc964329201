from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.monitor.detector import (
    DetectorConfig,
    FixedTimeoutDetector,
    PhiAccrualDetector,
    make_detector,
)

# Intervals as multiples of 1/64 s: exact in binary, so "same mean" really is the same mean.
TICK = 1 / 64


def fed(intervals: list[float], **kwargs: float) -> PhiAccrualDetector:
    """A phi detector that saw heartbeats separated by ``intervals``, starting at t=100."""
    detector = PhiAccrualDetector(**kwargs)  # type: ignore[arg-type]
    now = 100.0
    detector.heartbeat(now)
    for interval in intervals:
        now += interval
        detector.heartbeat(now)
    return detector


def first_suspicion(detector: PhiAccrualDetector, horizon: float = 1e6) -> float:
    """Silence after which the detector first suspects (bisection on the monotone phi)."""
    last = detector.last_seen
    assert last is not None
    low, high = 0.0, horizon
    assert detector.suspect(last + high)
    for _ in range(200):
        middle = (low + high) / 2
        if detector.suspect(last + middle):
            high = middle
        else:
            low = middle
    return high


# --- fixed timeout ------------------------------------------------------------------------


def test_fixed_detector_suspects_exactly_after_the_timeout() -> None:
    detector = FixedTimeoutDetector(1.0)
    detector.heartbeat(10.0)
    assert not detector.suspect(10.5)
    assert not detector.suspect(11.0)  # the boundary itself is still on time
    assert detector.suspect(11.0 + 1e-9)
    assert detector.suspect(20.0)


def test_fixed_detector_is_reset_by_a_heartbeat_but_not_by_an_older_one() -> None:
    detector = FixedTimeoutDetector(1.0)
    detector.heartbeat(10.0)
    detector.heartbeat(12.0)
    assert not detector.suspect(12.5)
    detector.heartbeat(11.0)  # delivered late; must not move the clock backwards
    assert detector.last_seen == 12.0
    assert detector.suspect(13.5)


def test_no_heartbeat_yet_is_never_suspected() -> None:
    for detector in (FixedTimeoutDetector(1.0), PhiAccrualDetector()):
        assert detector.last_seen is None
        assert not detector.suspect(1e9)
        assert detector.explain(1e9) == "no heartbeat yet"


def test_fixed_explanation_names_silence_timeout_and_intervals() -> None:
    detector = make_detector(DetectorConfig(kind="fixed", timeout_intervals=4), 0.25)
    detector.heartbeat(10.0)
    assert detector.suspect(11.2)
    assert detector.explain(11.2) == (
        "no heartbeat for 1.20s (timeout 1.00s = 4 intervals of 0.25s)"
    )


# --- phi accrual --------------------------------------------------------------------------

interval_lists = st.lists(
    st.integers(min_value=1, max_value=64 * 5).map(lambda n: n * TICK), min_size=0, max_size=60
)


@settings(max_examples=300)
@given(
    intervals=interval_lists,
    t1=st.floats(min_value=0, max_value=1e4, allow_nan=False),
    dt=st.floats(min_value=0, max_value=1e4, allow_nan=False),
    window=st.integers(min_value=2, max_value=50),
    min_std=st.floats(min_value=1e-3, max_value=1.0),
)
def test_phi_never_decreases_while_silence_grows(
    intervals: list[float], t1: float, dt: float, window: int, min_std: float
) -> None:
    detector = fed(intervals, window=window, min_std_s=min_std)
    last = detector.last_seen
    assert last is not None
    assert detector.phi(last + t1) <= detector.phi(last + t1 + dt)


@settings(max_examples=300)
@given(
    mean_ticks=st.integers(min_value=8, max_value=128),
    spread=st.data(),
    pairs=st.integers(min_value=1, max_value=40),
    past_mean=st.floats(min_value=1e-3, max_value=30.0),
)
def test_phi_adapts_to_jitter(
    mean_ticks: int, spread: st.DataObject, pairs: int, past_mean: float
) -> None:
    # Same mean interval; the jittery link alternates mean-b, mean+b with b > a.
    a = spread.draw(st.integers(min_value=0, max_value=mean_ticks - 2))
    b = spread.draw(st.integers(min_value=a + 1, max_value=mean_ticks - 1))
    mean = mean_ticks * TICK

    def history(d: int) -> list[float]:
        return [(mean_ticks - d) * TICK, (mean_ticks + d) * TICK] * pairs

    kwargs = {"min_std_s": 1e-3, "first_interval_s": mean, "window": 2 * pairs + 2}
    steady, jittery = fed(history(a), **kwargs), fed(history(b), **kwargs)
    assert steady.stats()[0] == jittery.stats()[0] == mean
    assert steady.stats()[1] < jittery.stats()[1]

    silence = mean + past_mean
    assert jittery.phi(jittery.last_seen + silence) < steady.phi(steady.last_seen + silence)  # type: ignore[operator]
    assert first_suspicion(jittery) >= first_suspicion(steady)


@settings(max_examples=300)
@given(
    interval_ticks=st.integers(min_value=1, max_value=64 * 5),
    count=st.integers(min_value=0, max_value=300),
    fraction=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
    threshold=st.floats(min_value=0.5, max_value=16.0),
    min_std=st.floats(min_value=1e-4, max_value=1.0),
)
def test_regular_heartbeats_are_never_suspected_before_the_mean(
    interval_ticks: int, count: int, fraction: float, threshold: float, min_std: float
) -> None:
    interval = interval_ticks * TICK
    detector = fed(
        [interval] * count, threshold=threshold, min_std_s=min_std, first_interval_s=interval
    )
    assert not detector.suspect(detector.last_seen + fraction * interval)  # type: ignore[operator]


def test_phi_suspects_a_long_silence_and_explains_itself() -> None:
    detector = fed([0.25] * 50, min_std_s=0.03, first_interval_s=0.25)
    last = detector.last_seen
    assert last is not None
    assert not detector.suspect(last + 0.25)
    assert detector.suspect(last + 2.1)
    assert detector.phi(last + 1e6) > detector.threshold  # no overflow or log10(0) on huge gaps
    text = detector.explain(last + 2.1)
    assert text.startswith("phi ") and ">= 8.0 after 2.10s of silence" in text
    assert "mean interval 0.25s" in text


def test_acceptable_pause_delays_suspicion() -> None:
    eager = fed([1.0] * 20)
    patient = fed([1.0] * 20, acceptable_pause_s=3.0)
    assert first_suspicion(patient) == pytest.approx(first_suspicion(eager) + 3.0, rel=1e-6)


def test_bootstrap_uses_the_first_interval_before_real_samples() -> None:
    detector = PhiAccrualDetector(first_interval_s=2.0, min_std_s=0.01)
    detector.heartbeat(0.0)
    assert detector.stats() == pytest.approx((2.0, 0.5))
    assert not detector.suspect(2.0)
    assert detector.suspect(10.0)


def test_duplicate_heartbeats_are_not_zero_intervals() -> None:
    detector = fed([1.0, 1.0])
    before = detector.intervals
    detector.heartbeat(detector.last_seen)  # type: ignore[arg-type]
    assert detector.intervals == before


def test_make_detector_builds_each_kind() -> None:
    fixed = make_detector(DetectorConfig(), 0.5)
    assert isinstance(fixed, FixedTimeoutDetector) and fixed.timeout_s == 2.0
    phi = make_detector(DetectorConfig(kind="phi", phi_threshold=10, window=20), 0.5)
    assert isinstance(phi, PhiAccrualDetector)
    assert phi.threshold == 10 and phi.first_interval_s == 0.5


def test_detector_config_rejects_unknown_kind_and_fields() -> None:
    with pytest.raises(ValidationError, match="kind"):
        DetectorConfig(kind="magic")
    with pytest.raises(ValidationError, match="timeout"):
        DetectorConfig(timeout=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="window"):
        DetectorConfig(window=1)
