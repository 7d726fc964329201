from __future__ import annotations

import json
import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

import pytest
from pydantic import AwareDatetime, BaseModel

from helpers import alert
from tandem.events import catalog
from tandem.events.envelope import Event, Payload
from tandem.events.errors import DecodeError
from tandem.events.registry import COMMANDS, EVENTS, _Family, decode_command, decode_event, upcaster


def sample(annotation: Any) -> Any:
    """A valid value for a payload field type (enough to exercise the catalog)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return sample(args[0]) if args[0] is not str else "node-a"
    if origin in (typing.Union, types.UnionType):
        return sample(next(a for a in args if a is not type(None)))
    if origin is Literal:
        return args[0]
    if origin is list:
        return [sample(args[0])]
    if origin is dict:
        return {"code": "text"}  # a non-empty mapping (silence matchers must be)
    if annotation is AwareDatetime:
        return datetime.now(UTC)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(iter(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {n: sample(f.annotation) for n, f in annotation.model_fields.items()}
    return {str: "text", int: 1, float: 1.5, bool: True, datetime: datetime.now(UTC)}.get(
        annotation, "text"
    )


def build(cls: type) -> Any:
    payload_cls = cls.model_fields["payload"].annotation
    payload = {
        n: sample(f.annotation) for n, f in payload_cls.model_fields.items() if f.is_required()
    }
    return cls(cluster="demo", node="primary", epoch=4, payload=payload)


@pytest.mark.parametrize("cls", list(EVENTS.types.values()), ids=lambda c: c.__name__)
def test_every_event_type_round_trips(cls: type) -> None:
    event = build(cls)
    decoded = decode_event(event.to_json())
    assert type(decoded) is cls
    assert decoded == event


@pytest.mark.parametrize("cls", list(COMMANDS.types.values()), ids=lambda c: c.__name__)
def test_every_command_type_round_trips(cls: type) -> None:
    command = build(cls)
    decoded = decode_command(command.to_json())
    assert type(decoded) is cls
    assert decoded == command


def test_catalog_covers_what_later_services_need() -> None:
    names = {t for (t, _v) in EVENTS.types}
    for needed in [
        "RoleChanged",
        "HeartbeatLost",
        "HeartbeatRestored",
        "HealthChanged",
        "SagaStarted",
        "SagaStepStarted",
        "SagaStepCompleted",
        "SagaStepFailed",
        "ReplicationStateChanged",
        "DnsUpdated",
        "DnsUpdateFailed",
        "VmRemediationRequested",
        "SwitchoverRequested",
        "FailoverRecommended",
        "AlertRaised",
        "ServiceStarted",
    ]:
        assert needed in names
    assert len(catalog.__all__) == len(EVENTS.types) + len(COMMANDS.types)


def raw(**changes: Any) -> bytes:
    data = json.loads(alert().to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (raw(type=...), "no 'type'"),
        (raw(type="Teleported"), "unknown event type 'Teleported'"),
        (raw(version=...), "no valid 'version'"),
        (raw(version="1"), "no valid 'version'"),
        (raw(version=9), "version 9 is newer"),
        (raw(cluster="Bad Name"), "cluster"),
        (raw(epoch=-2), "epoch"),
        (raw(payload={"code": "x"}), "payload.severity"),
        (
            raw(payload={"code": "x", "severity": "info", "message": "m", "extra": 1}),
            "payload.extra",
        ),
        (raw(occurred_at="yesterday"), "occurred_at"),
    ],
)
def test_bad_input_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(data)
    assert reason in info.value.reason


def test_a_command_is_not_an_event() -> None:
    ping = build(catalog.Ping)
    with pytest.raises(DecodeError, match="unknown event type 'Ping'"):
        decode_event(ping.to_json())


class _V1(Payload):
    host: str


class _V2(Payload):
    hosts: list[str]
    port: int


def test_old_versions_are_upcast_to_the_newest() -> None:
    family = _Family(Event)

    class Moved1(Event):
        type: Literal["Moved"] = "Moved"
        version: Literal[1] = 1
        payload: _V1

    class Moved2(Event):
        type: Literal["Moved"] = "Moved"
        version: Literal[2] = 2
        payload: _V2

    family.register(Moved1)
    family.register(Moved2)
    upcaster("Moved", 1, family=family)(lambda p: {"hosts": [p["host"]], "port": 53})

    old = Moved1(cluster="demo", node="primary", payload=_V1(host="a"))
    new = family.decode(old.to_json())
    assert isinstance(new, Moved2)
    assert new.payload == _V2(hosts=["a"], port=53)
    assert new.id == old.id


def test_a_version_without_an_upcaster_is_refused() -> None:
    family = _Family(Event)

    class Thing2(Event):
        type: Literal["Thing"] = "Thing"
        version: Literal[2] = 2
        payload: _V2

    family.register(Thing2)
    data = {"type": "Thing", "version": 1, "cluster": "demo", "node": "a", "payload": {"host": "x"}}
    with pytest.raises(DecodeError, match="no upcaster from v1"):
        family.decode(data)


def test_two_classes_cannot_claim_the_same_type() -> None:
    family = _Family(Event)

    class A(Event):
        type: Literal["Same"] = "Same"
        version: Literal[1] = 1
        payload: _V1

    class B(Event):
        type: Literal["Same"] = "Same"
        version: Literal[1] = 1
        payload: _V1

    family.register(A)
    with pytest.raises(ValueError, match="already registered"):
        family.register(B)
