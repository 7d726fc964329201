from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from helpers import alert
from tandem.events.catalog import Ping
from tandem.events.catalog.commands import PingPayload


def test_events_are_frozen() -> None:
    event = alert()
    with pytest.raises(ValidationError):
        event.epoch = 5  # type: ignore[misc]


def test_ids_are_time_ordered_and_unique() -> None:
    ids = [alert(n=i).id for i in range(500)]
    assert len(set(ids)) == 500
    assert ids == sorted(ids)


def test_occurred_at_is_stored_in_utc() -> None:
    local = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    event = alert(occurred_at=local)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == local


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        alert(occurred_at=datetime(2026, 1, 2, 3, 4, 5))


def test_negative_epoch_is_refused() -> None:
    with pytest.raises(ValidationError, match="epoch"):
        alert(epoch=-1)


def test_unknown_envelope_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="colour"):
        alert(colour="red")


def test_caused_links_an_event_to_its_saga() -> None:
    cmd = Ping(cluster="demo", node="primary", correlation_id="saga-1", payload=PingPayload())
    event = alert().caused(cmd)
    assert event.correlation_id == "saga-1"
    assert event.causation_id == cmd.id
    first = alert()
    assert alert().caused(first).correlation_id == first.id
