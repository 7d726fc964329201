"""Bus connection and stream settings (pydantic-settings; built by functions, never at import).

Environment variables: ``TANDEM_BUS_SERVERS`` (comma-separated URLs), ``TANDEM_BUS_USER``,
``TANDEM_BUS_PASSWORD``, ``TANDEM_BUS_TOKEN``, ``TANDEM_BUS_CREDS_FILE``,
``TANDEM_BUS_NKEY_SEED_FILE``, ``TANDEM_BUS_TLS_CA_FILE``, ``TANDEM_BUS_TLS_CERT_FILE``,
``TANDEM_BUS_TLS_KEY_FILE``, ``TANDEM_BUS_INBOX_PREFIX``, ``TANDEM_BUS_INSECURE_BUS``, ...;
streams: ``TANDEM_STREAMS_REPLICAS``, ``TANDEM_STREAMS_EVENTS_MAX_AGE_S`` and the other fields
of ``StreamSettings``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DAY = 86_400.0
S = TypeVar("S", bound=BaseSettings)
#: Subject tokens without wildcards: where replies and push deliveries come.
_INBOX_PREFIX = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_:-]+)*")


class SettingsError(ValueError):
    """Invalid configuration. The message names the source, each bad field and the problem."""


class BusSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_BUS_", extra="forbid")

    servers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"]
    )
    name: str = "tandem"
    user: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    creds_file: Path | None = None
    nkey_seed_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: The name the server's certificate must carry, when it is not the host of the URL (a
    #: server reached by an address its certificate does not list).
    tls_server_name: str | None = None
    #: The identity's own inbox prefix (``tandem.events.bus_identities``), which only it may
    #: subscribe to; None: nats-py's shared ``_INBOX``.
    inbox_prefix: str | None = None
    #: True lets a client use a server that lets anyone in without a login (issue 17); by
    #: default such a server is refused. Only for a throw-away bus.
    insecure_bus: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0)
    #: -1 reconnects for ever: a node agent must come back when the bus does.
    max_reconnect_attempts: int = -1
    reconnect_wait_s: float = Field(default=0.5, gt=0)
    request_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("servers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                return json.loads(value)  # the JSON list form of a nested env override
            except json.JSONDecodeError:
                return value
        if isinstance(value, str):
            return [s.strip() for s in value.split(",") if s.strip()]
        return value

    @field_validator("servers")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one server URL is needed")
        for url in value:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{url!r} is not a nats://, tls://, ws:// or wss:// URL")
        return value

    @field_validator("inbox_prefix")
    @classmethod
    def _inbox(cls, value: str | None) -> str | None:
        if value is not None and not _INBOX_PREFIX.fullmatch(value):
            raise ValueError(f"{value!r} is not a subject prefix (tokens joined by '.')")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> BusSettings:
        if self.password is not None and self.user is None:
            raise ValueError("password is set but user is not")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        for field in (
            "creds_file",
            "nkey_seed_file",
            "tls_ca_file",
            "tls_cert_file",
            "tls_key_file",
        ):
            path = getattr(self, field)
            if path is not None and not path.is_file():
                raise ValueError(f"{field}: {path} is not a readable file")
        return self


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_STREAMS_", extra="forbid")

    #: 3 on a production NATS cluster (R3), 1 on a single embedded server.
    replicas: int = Field(default=1, ge=1, le=5)
    events_max_age_s: float = Field(default=365 * DAY, gt=0)
    journal_max_age_s: float = Field(default=7 * DAY, gt=0)
    journal_max_bytes: int = Field(default=-1)
    dlq_max_age_s: float = Field(default=90 * DAY, gt=0)
    #: Window in which a re-published event id is recognised and stored once.
    duplicate_window_s: float = Field(default=600.0, gt=0)


def load_bus_settings(source: str = "environment", **overrides: Any) -> BusSettings:
    return load_settings(BusSettings, source, **overrides)


def load_stream_settings(source: str = "environment", **overrides: Any) -> StreamSettings:
    return load_settings(StreamSettings, source, **overrides)


def load_settings(cls: type[S], source: str = "environment", **overrides: Any) -> S:
    """Build settings of ``cls``; raise ``SettingsError`` naming ``source`` and each bad field."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, source, cls)) from None


def read_toml(path: Path, named_by: str = "") -> dict[str, Any]:
    """A config file's tables; ``SettingsError`` says which file and why it cannot be used
    (``named_by``: the variable that names the file, said when it does not exist)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        named = f" ({named_by})" if named_by else ""
        raise SettingsError(f"{path}: no such file{named}") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None


def describe_validation_error(
    exc: ValidationError, source: str, cls: type[BaseSettings] | None = None
) -> str:
    """One line per problem: where it came from, the field (and its env variable), what is wrong."""
    prefix = cls.model_config.get("env_prefix", "") if cls is not None else ""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "(whole)"
        known = err["type"] != "extra_forbidden"  # an unknown field has no variable
        env = (
            f" (env {_env_name(cls, prefix, err['loc'])})"
            if prefix and err["loc"] and known
            else ""
        )
        lines.append(f"  {field}{env}: {err['msg']}")
    return "\n".join(lines)


def _env_name(cls: type[BaseSettings] | None, prefix: str, loc: tuple[Any, ...]) -> str:
    """The variable that sets the field at ``loc``: nested fields joined by the model's
    ``env_nested_delimiter`` (``TANDEM_NODE_HEARTBEAT__INTERVAL_S``); list items and union
    branches end the path, as one variable sets the whole list."""
    delimiter = cls.model_config.get("env_nested_delimiter") if cls is not None else None
    names = [str(loc[0])]
    if delimiter:
        fields: Any = cls.model_fields if cls is not None else {}
        annotation = fields[names[0]].annotation if names[0] in fields else None
        for part in loc[1:]:
            inner = getattr(annotation, "model_fields", None)
            if not isinstance(part, str) or inner is None or part not in inner:
                break
            names.append(part)
            annotation = inner[part].annotation
    return prefix + (delimiter or "").join(n.upper() for n in names)
