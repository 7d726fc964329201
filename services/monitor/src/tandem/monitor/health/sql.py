"""SQL check through any DB-API 2 driver: a query must answer in time, the newest write must be
young enough (the white paper's SQL example).

The work runs in a thread; the connection is opened and closed on every check. If the check is
cancelled (timeout), the connection's ``interrupt()`` (sqlite3) or ``cancel()`` (psycopg) is
called when the driver has one; a check started while the previous query still runs fails at
once instead of piling up threads.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample, failed_sample
from tandem.monitor.health.checkbase import CheckBase, elapsed_ms

log = logging.getLogger(__name__)


def write_time(value: object) -> float:
    """A unix timestamp from a number, a datetime (naive = UTC) or an ISO-8601 string."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a time: {text[:40]!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    raise ValueError(f"not a time: {type(value).__name__} {value!r}"[:80])


class SqlCheckConfig(CheckBase):
    plugin: Literal["sql"] = "sql"
    #: The DB-API 2 module, e.g. ``sqlite3``, ``psycopg``; must be importable.
    driver: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
    connect_args: list[Any] = Field(default_factory=list)
    connect_kwargs: dict[str, Any] = Field(default_factory=dict)
    query: str = Field(default="SELECT 1", min_length=1)
    #: Slower than this makes the sample WARNING (``query_ms`` times execute + fetch).
    max_query_ms: float | None = Field(default=None, ge=0)
    #: Returns the newest write time in its first column of its first row.
    freshness_query: str | None = Field(default=None, min_length=1)
    #: A newest write older than this makes the sample CRITICAL.
    max_age_s: float | None = Field(default=None, gt=0)

    @field_validator("driver")
    @classmethod
    def _importable(cls, value: str) -> str:
        try:
            found = importlib.util.find_spec(value) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ValueError(f"no Python module named {value!r} (the DB-API driver)")
        return value

    @model_validator(mode="after")
    def _age_needs_query(self) -> SqlCheckConfig:
        if self.max_age_s is not None and self.freshness_query is None:
            raise ValueError("max_age_s needs a freshness_query")
        return self


@dataclass
class _Outcome:
    query_ms: float
    newest: object = None
    has_newest_row: bool = False


class SqlCheck:
    """Metrics: ``up`` (1 when the query answered), ``query_ms``, ``age_s`` (freshness query)."""

    kind = "sql"

    def __init__(self, config: SqlCheckConfig) -> None:
        self.config = config
        self._running = False
        self._conn: Any = None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        """True while a query runs in the worker thread (also after its check was cancelled)."""
        return self._running

    def _work(self) -> _Outcome:
        cfg = self.config
        self._running = True
        try:
            module = importlib.import_module(cfg.driver)
            conn = module.connect(*cfg.connect_args, **cfg.connect_kwargs)
            with self._lock:
                self._conn = conn
            try:
                cursor = conn.cursor()
                start = time.perf_counter()
                cursor.execute(cfg.query)
                if cursor.description is not None:
                    cursor.fetchall()
                outcome = _Outcome(query_ms=elapsed_ms(start, time.perf_counter()))
                if cfg.freshness_query is not None:
                    cursor.execute(cfg.freshness_query)
                    row = cursor.fetchone()
                    if row is not None and len(row) > 0:
                        outcome.newest, outcome.has_newest_row = row[0], True
                cursor.close()
                return outcome
            finally:
                with self._lock:
                    self._conn = None
                conn.close()
        finally:
            self._running = False

    def _interrupt(self) -> None:
        with self._lock:
            conn = self._conn
        for name in ("interrupt", "cancel"):
            method = getattr(conn, name, None)
            if callable(method):
                try:
                    method()
                except Exception:
                    log.debug("sql %s() after cancellation failed", name, exc_info=True)
                return

    async def check(self) -> Sample:
        cfg = self.config
        if self._running:
            return failed_sample(f"sql {cfg.driver}: the previous check is still running")
        try:
            outcome = await asyncio.to_thread(self._work)
        except asyncio.CancelledError:
            await asyncio.to_thread(self._interrupt)
            raise
        except ImportError as exc:
            return failed_sample(f"sql driver {cfg.driver} cannot be imported: {exc}")
        except Exception as exc:
            return Sample(
                status=HealthStatus.CRITICAL,
                metrics={"up": 0.0},
                message=f"sql {cfg.driver} failed: {type(exc).__name__}: {exc}",
            )
        return self._judge(outcome)

    def _judge(self, outcome: _Outcome) -> Sample:
        cfg = self.config
        metrics = {"up": 1.0, "query_ms": outcome.query_ms}
        status = HealthStatus.OK
        notes = [f"query answered in {outcome.query_ms:.0f} ms"]
        if cfg.max_query_ms is not None and outcome.query_ms > cfg.max_query_ms:
            status = HealthStatus.WARNING
            notes[0] += f" (limit {cfg.max_query_ms:g} ms)"
        if cfg.freshness_query is not None:
            if not outcome.has_newest_row or outcome.newest is None:
                status = HealthStatus.CRITICAL
                notes.append("the freshness query found no write")
            else:
                try:
                    age = max(0.0, time.time() - write_time(outcome.newest))
                except ValueError as exc:
                    status = HealthStatus.CRITICAL
                    notes.append(f"the freshness query returned {exc}")
                else:
                    metrics["age_s"] = age
                    note = f"newest write is {age:.0f}s old"
                    if cfg.max_age_s is not None and age > cfg.max_age_s:
                        status = HealthStatus.CRITICAL
                        note += f" (limit {cfg.max_age_s:g}s)"
                    notes.append(note)
        message = f"sql {cfg.driver}: " + "; ".join(notes)
        return Sample(status=status, metrics=metrics, message=message)
