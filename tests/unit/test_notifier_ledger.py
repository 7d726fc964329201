"""The notifier's files: the delivery ledger and the state survive a restart, and a line torn
by a crash is skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from notifier_rig import raised, silence
from tandem.notifier.book import Book, now_utc
from tandem.notifier.ledger import Ledger


async def test_the_ledger_is_read_again_and_a_torn_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(tmp_path)
    await ledger.record("e1", "mail", "delivered", "250 OK")
    await ledger.record("e1", "hook", "failed", "exit 3")
    await ledger.record("e2", "mail", "suppressed", "silenced by s1")
    ledger.close()
    with (tmp_path / "ledger.jsonl").open("a") as f:
        f.write('{"e": "e3", "r": "ma')  # a crash in the middle of a write
    again = Ledger(tmp_path)
    assert again.outcome("e1", "mail") == "delivered"
    assert again.outcome("e1", "hook") == "failed"
    assert again.outcome("e2", "mail") == "suppressed"
    assert again.outcome("e3", "mail") is None and len(again) == 3
    assert "torn by a crash" in caplog.text
    again.close()


async def test_the_ledger_is_cut_back_to_its_last_lines(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path, keep=5)
    for i in range(12):
        await ledger.record(f"e{i}", "r", "delivered")
    ledger.close()
    again = Ledger(tmp_path, keep=5)
    assert len(again) == 5 and again.outcome("e11", "r") == "delivered"
    assert again.outcome("e0", "r") is None
    again.close()


async def test_the_state_survives_a_restart(tmp_path: Path) -> None:
    book = Book(tmp_path)
    alert = raised()
    book.fold(alert)
    book.sent(alert.fingerprint, "mail", now_utc())
    book.fold(silence({"cluster": "demo"}, seconds=60))
    book.failing_routes.add("hook")
    book.done_seq["demo"] = 42
    await book.save()
    again = Book(tmp_path)
    entry = again.alerts[alert.fingerprint]
    assert entry.firing and "mail" in entry.sent and entry.last_event == alert.id
    assert again.fold(alert) == book.alerts[alert.fingerprint].before  # the same decision
    assert "s1" in again.silences and again.failing_routes == {"hook"}
    assert again.handled("demo", 42) and not again.handled("demo", 43)


def test_an_unreadable_state_starts_empty_with_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state.json").write_text("{not json")
    with caplog.at_level(logging.ERROR):
        book = Book(tmp_path)
    assert not book.alerts and "cannot be read" in caplog.text
