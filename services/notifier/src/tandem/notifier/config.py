"""The notifier's TOML file (``TANDEM_NOTIFIER_CONFIG``; see ``examples/notifier.toml``).

Routes, each with what it selects (``[routes.match]``) and where it sends (``[routes.channel]``,
``type`` = ``email``, ``webhook``, ``hook`` or ``file``), its retries, repeat interval and rate
limit. Secrets (the SMTP password, the webhook's HMAC key) are only read from files, named
relative to the config file's directory, and kept as ``SecretStr``: never in a log line or a
repr. A bad file fails with the file, the field and what is wrong (``SettingsError``).
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tandem.events.catalog.vocabulary import Severity
from tandem.events.names import ClusterName
from tandem.events.settings import SettingsError, describe_validation_error, read_toml

SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
Kind = Literal["alert", "role_change"]
ALL_KINDS: tuple[Kind, ...] = ("alert", "role_change")
RouteName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _secret_from_file(value: Any, info: ValidationInfo) -> Any:
    """Read the secret in the file ``value`` names (relative to the config's directory)."""
    if value is None or isinstance(value, SecretStr):
        return value
    if not isinstance(value, str | Path):
        raise ValueError("must be the path of a file holding the secret")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc.strerror}") from None
    if not text:
        raise ValueError(f"{path}: is empty")
    return SecretStr(text)


class Match(_Model):
    """What a route selects; every part given must match (an empty list: anything)."""

    #: Alerts of at least this severity (role changes are selected by ``kinds``).
    severity: Severity = Severity.INFO
    clusters: list[ClusterName] = Field(default_factory=list)
    #: Groups of clusters, by name, from the top-level ``[groups]`` table.
    groups: list[str] = Field(default_factory=list)
    #: Alert codes, exact or shell patterns (``dns.*``).
    codes: list[str] = Field(default_factory=list)
    kinds: list[Kind] = Field(default_factory=lambda: list(ALL_KINDS), min_length=1)

    def code_matches(self, code: str) -> bool:
        return not self.codes or any(fnmatch.fnmatchcase(code, p) for p in self.codes)


class EmailChannel(_Model):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    #: The SMTP password, read from this file.
    password_file: SecretStr | None = None
    sender: str = Field(alias="from", min_length=3)
    to: list[str] = Field(min_length=1)
    #: Where the mail links to (the console or the orchestrator's API).
    console_url: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    #: The CA certificate that signed the SMTP server's (default: the system's CAs).
    ca_file: Path | None = None

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _secret = field_validator("password_file", mode="before")(_secret_from_file)

    @model_validator(mode="after")
    def _auth(self) -> EmailChannel:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together (SMTP AUTH needs both)")
        return self


class WebhookChannel(_Model):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    #: The HMAC-SHA256 key of the ``X-Tandem-Signature`` header, read from this file.
    hmac_key_file: SecretStr | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    _secret = field_validator("hmac_key_file", mode="before")(_secret_from_file)


class HookChannel(_Model):
    type: Literal["hook"]
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=30.0, gt=0)


class FileChannel(_Model):
    """JSON lines (the webhook's body, one per notification), appended and fsynced."""

    type: Literal["file"]
    path: Path


Channel = Annotated[
    EmailChannel | WebhookChannel | HookChannel | FileChannel, Field(discriminator="type")
]


class RateLimit(_Model):
    """At most ``max`` notifications per cluster in ``per_s`` seconds on a route; the rest
    are held back (counted, and the next notification says how many). By default email and
    webhook routes have one (10 in 5 minutes), hook and file routes none: a hook is never
    skipped for being frequent."""

    max: int = Field(default=10, ge=1)
    per_s: float = Field(default=300.0, gt=0)


class Route(_Model):
    name: RouteName
    match: Match = Field(default_factory=Match)
    channel: Channel
    #: Attempts after the first one, with backoff from ``backoff_s`` doubling to ``max_backoff_s``.
    retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=1.0, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    #: A firing alert raised again is not sent again before this long.
    repeat_interval_s: float = Field(default=4 * 3600.0, ge=0)
    send_resolved: bool = True
    #: A firing alert waits this long (from its raise) for its clear: one cleared meanwhile
    #: (a flapping check) is not sent, nor is its clear. 0: sent at once.
    group_wait_s: float = Field(default=0.0, ge=0, le=600)
    #: None: the channel's default (``RateLimit()`` for email and webhook, none otherwise).
    rate_limit: RateLimit | None = None
    #: Notifications given up in a row before ``notifier.route_failing`` is raised.
    failing_after: int = Field(default=1, ge=1)

    @property
    def limit(self) -> RateLimit | None:
        if self.rate_limit is not None:
            return self.rate_limit
        if self.channel.type in ("email", "webhook"):
            return RateLimit()
        return None


class NotifierConfig(_Model):
    #: The URL notifications link to (Alertmanager's ``externalURL``).
    external_url: str = ""
    #: Groups of clusters that routes match by name: ``{ erp = ["erp-db", "erp-app"] }``.
    groups: dict[str, list[ClusterName]] = Field(default_factory=dict)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> NotifierConfig:
        seen: set[str] = set()
        for index, route in enumerate(self.routes):
            if route.name in seen:
                raise ValueError(f"routes.{index}.name: {route.name} is used twice")
            seen.add(route.name)
            for group in route.match.groups:
                if group not in self.groups:
                    raise ValueError(f"routes.{index}.match.groups: no group {group!r} in [groups]")
        return self

    def clusters_of(self, groups: list[str]) -> set[str]:
        return {c for g in groups for c in self.groups.get(g, [])}


def _relative_paths(data: Any, base: Path) -> Any:
    """File channels' paths relative to the config file's directory."""
    for route in data.get("routes", []) if isinstance(data, dict) else []:
        channel = route.get("channel") if isinstance(route, dict) else None
        if isinstance(channel, dict) and channel.get("type") == "file":
            path = channel.get("path")
            if isinstance(path, str) and not Path(path).expanduser().is_absolute():
                channel["path"] = str(base / path)
    return data


def load_config(path: Path) -> NotifierConfig:
    """Read and validate ``path``; ``SettingsError`` names the file, the field, the problem."""
    data = read_toml(path, "TANDEM_NOTIFIER_CONFIG")
    try:
        data = _relative_paths(data, path.parent)
        return NotifierConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path))) from None
