"""Registry of event and command types by (type, version), with upcasting of old versions.

Decoding goes: bytes -> JSON object -> upcast to the newest known version of its type ->
validation through a discriminated union keyed by "type@version". Every failure raises
``DecodeError`` with a reason that names the type, version and field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, Union

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from tandem.events.envelope import Command, Event, _Envelope
from tandem.events.errors import DecodeError

E = TypeVar("E", bound=_Envelope)
PayloadUpcaster = Callable[[dict[str, Any]], dict[str, Any]]


class _Family:
    """The types of one family (events or commands) and their union adapter."""

    def __init__(self, base: type[_Envelope]) -> None:
        self.base = base
        self.types: dict[tuple[str, int], type[_Envelope]] = {}
        self.upcasters: dict[tuple[str, int], PayloadUpcaster] = {}
        self._latest: dict[str, int] = {}
        self._adapter: TypeAdapter[Any] | None = None

    def register(self, cls: type[_Envelope]) -> None:
        key = cls.type_key()
        existing = self.types.get(key)
        if existing is not None and existing is not cls:
            raise ValueError(f"{key[0]} v{key[1]} is already registered by {existing.__name__}")
        self.types[key] = cls
        self._latest[key[0]] = max(key[1], self._latest.get(key[0], 0))
        self._adapter = None

    def latest_version(self, type_name: str) -> int | None:
        return self._latest.get(type_name)

    def adapter(self) -> TypeAdapter[Any]:
        if self._adapter is None:
            members = tuple(Annotated[cls, Tag(f"{t}@{v}")] for (t, v), cls in self.types.items())
            union = Annotated[Union[members], Discriminator(_tag)]  # type: ignore[valid-type]  # noqa: UP007
            self._adapter = TypeAdapter(union)
        return self._adapter

    def decode(self, data: bytes | str | dict[str, Any]) -> _Envelope:
        raw = _as_object(data)
        type_name, version = raw.get("type"), raw.get("version")
        what = self.base.kind
        if not isinstance(type_name, str) or not type_name:
            raise DecodeError(f"{what} has no 'type' field")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise DecodeError(f"{what} {type_name!r} has no valid 'version' (got {version!r})")
        latest = self.latest_version(type_name)
        if latest is None:
            raise DecodeError(f"unknown {what} type {type_name!r}")
        if version > latest:
            raise DecodeError(
                f"{what} {type_name!r} version {version} is newer than this build knows "
                f"(latest {latest}): upgrade this service"
            )
        raw = self._upcast(raw, type_name, version, latest)
        try:
            return self.adapter().validate_python(raw)
        except ValidationError as exc:
            raise DecodeError(f"invalid {what} {type_name!r} v{latest}: {_errors(exc)}") from None

    def _upcast(
        self, raw: dict[str, Any], type_name: str, version: int, latest: int
    ) -> dict[str, Any]:
        while version < latest:
            step = self.upcasters.get((type_name, version))
            if step is None:
                raise DecodeError(
                    f"{self.base.kind} {type_name!r} version {version} is no longer supported "
                    f"(no upcaster from v{version} to v{version + 1})"
                )
            payload = raw.get("payload")
            if not isinstance(payload, dict):
                raise DecodeError(
                    f"{self.base.kind} {type_name!r} v{version}: payload is not an object"
                )
            raw = {**raw, "payload": step(dict(payload)), "version": version + 1}
            version += 1
        return raw


def _tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return f"{value.get('type')}@{value.get('version')}"
    if isinstance(value, _Envelope):
        return "{}@{}".format(*value.type_key())
    return None


def _as_object(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(data, dict):
        return data
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError(f"not a JSON object but {type(raw).__name__}")
    return raw


def _errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        # The first location element is the union tag; the field path follows it.
        loc = ".".join(str(p) for p in err["loc"][1:]) or "(envelope)"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


EVENTS = _Family(Event)
COMMANDS = _Family(Command)


def event_type(cls: type[E]) -> type[E]:
    """Class decorator: register a concrete event type."""
    EVENTS.register(cls)
    return cls


def command_type(cls: type[E]) -> type[E]:
    """Class decorator: register a concrete command type."""
    COMMANDS.register(cls)
    return cls


def upcaster(
    type_name: str, from_version: int, *, family: _Family = EVENTS
) -> Callable[[PayloadUpcaster], PayloadUpcaster]:
    """Register a function that turns a payload of ``from_version`` into ``from_version + 1``."""

    def register(fn: PayloadUpcaster) -> PayloadUpcaster:
        family.upcasters[(type_name, from_version)] = fn
        return fn

    return register


def decode_event(data: bytes | str | dict[str, Any]) -> Event:
    """Decode and validate an event; raise ``DecodeError`` with the reason."""
    return EVENTS.decode(data)  # type: ignore[return-value]


def decode_command(data: bytes | str | dict[str, Any]) -> Command:
    """Decode and validate a command; raise ``DecodeError`` with the reason."""
    return COMMANDS.decode(data)  # type: ignore[return-value]
