"""Configuration of the protected applications of a node, their start order and their control."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tandem.agent.control.base import ServiceControl
from tandem.agent.control.process import ProcessControl
from tandem.agent.control.procfiles import lookup_group, lookup_user
from tandem.agent.control.runner import Runner, run_command
from tandem.agent.control.systemd import SystemdControl
from tandem.agent.control.windows import WindowsServiceControl

# Fields that only mean something when the agent spawns the process itself.
_PROCESS_ONLY = (
    "start", "stop", "cwd", "env", "pid_file", "stop_signal", "log_file", "user", "group",
    "stale_files",
)  # fmt: skip
# systemd unit names: letters, digits and ":-_.\@"; no leading '-' so it cannot pass as an option.
_SYSTEMD_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]{0,255}$")
# Windows service key names: no slashes, quotes or control characters, and no leading '-' or '/'
# so that sc.exe cannot take it for an option.
_WINDOWS_SERVICE = re.compile(r'^[^\x00-\x1f"/\\\-][^\x00-\x1f"/\\]{0,255}$')


class RestartPolicy(BaseModel):
    """How the monitor restarts a failed application (stored here, applied by the monitor)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tries: int = Field(default=3, ge=0)
    #: The pause before the first new try; each next pause is ``backoff`` times longer, at
    #: most ``max_delay_s``.
    delay_s: float = Field(default=2.0, ge=0)
    backoff: float = Field(default=2.0, ge=1.0)
    max_delay_s: float = Field(default=30.0, ge=0)
    #: No new try starts once this long has passed since the first (None: tries alone).
    deadline_s: float | None = Field(default=None, gt=0)


class ApplicationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    control: Literal["process", "systemd", "windows"] = "process"
    # control="process"
    start: list[str] | None = None
    stop: list[str] | None = None
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    pid_file: Path | None = None
    stop_signal: Literal["TERM", "INT", "HUP", "QUIT"] = "TERM"
    log_file: Path | None = None
    #: The user (name or numeric id) the application and its stop command run as; group: its
    #: group (default: the user's primary group). Supplementary groups are the user's own.
    #: Unset: the agent's own user. Dropping to another user needs a root agent.
    user: str | None = None
    group: str | None = None
    #: Files a dead instance leaves behind that would block a start (a lock or pid file such as
    #: postgres's ``postmaster.pid``), relative to ``cwd`` or absolute: removed before a start
    #: once the application's previous instance is known dead, never while it runs.
    stale_files: list[Path] = Field(default_factory=list)
    # control="systemd" / "windows": the unit or service name
    unit: str | None = None
    # every control: grace before a forced stop, and the bound on a start
    stop_grace_s: float = Field(default=10.0, gt=0)
    start_timeout_s: float = Field(default=30.0, gt=0)
    #: process: a start counts once the process is still alive this long after spawning (a
    #: command that fails at once is caught; the health checks catch the rest).
    settle_s: float = Field(default=0.3, gt=0)
    depends_on: list[str] = Field(default_factory=list)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)

    @field_validator("start", "stop")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value or not value[0]:
            raise ValueError("must be a non-empty argv list whose first item is the program")
        if any("\x00" in arg for arg in value):
            raise ValueError("arguments must not contain NUL characters")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in value if not k or "=" in k or "\x00" in k)
        if bad:
            raise ValueError(f"invalid environment variable names: {bad!r}")
        return value

    @field_validator("stale_files", mode="before")
    @classmethod
    def _stale_files(cls, value: object) -> object:
        if isinstance(value, list):
            for item in value:
                if isinstance(item, str | PurePath) and str(item).strip() == "":
                    raise ValueError("an entry is empty")
                if isinstance(item, str) and "\x00" in item:
                    raise ValueError(f"{item!r} contains a NUL character")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApplicationConfig:
        where = f"application {self.name!r}"
        if self.control == "process":
            if self.start is None:
                raise ValueError(f"{where}: field 'start' is required when control='process'")
            _check_identity(where, self.user, self.group)
            _check_stale_files(where, self.stale_files, self.cwd)
            if self.unit is not None:
                raise ValueError(
                    f"{where}: field 'unit' applies only to control='systemd' or 'windows'"
                )
        else:
            if not self.unit:
                raise ValueError(f"{where}: field 'unit' is required when control={self.control!r}")
            pattern = _SYSTEMD_UNIT if self.control == "systemd" else _WINDOWS_SERVICE
            if not pattern.match(self.unit):
                raise ValueError(
                    f"{where}: field 'unit' is not a valid {self.control} name: {self.unit!r}"
                )
            misplaced = [f for f in _PROCESS_ONLY if f in self.model_fields_set]
            if misplaced:
                raise ValueError(
                    f"{where}: field(s) {', '.join(misplaced)} apply only to control='process'"
                )
        if self.name in self.depends_on:
            raise ValueError(f"{where}: field 'depends_on' lists the application itself")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError(f"{where}: field 'depends_on' lists an application twice")
        return self


def _check_identity(where: str, user: str | None, group: str | None) -> None:
    """``user`` and ``group`` must name an existing user and group of this machine."""
    if group is not None and user is None:
        raise ValueError(f"{where}: field 'group' needs field 'user' (the user the app runs as)")
    if user is not None:
        try:
            lookup_user(user)
        except KeyError:
            raise ValueError(
                f"{where}: field 'user': no such user {user!r} on this machine"
            ) from None
    if group is not None:
        try:
            lookup_group(group)
        except KeyError:
            raise ValueError(
                f"{where}: field 'group': no such group {group!r} on this machine"
            ) from None


def _check_stale_files(where: str, files: list[Path], cwd: Path | None) -> None:
    for path in files:
        if path.is_absolute():
            if os.path.normpath(path) == "/":
                raise ValueError(f"{where}: field 'stale_files': {str(path)!r} is not a file")
            continue
        # Any '..' is refused, not only one that climbs out: through a symlinked directory
        # even 'a/../x' may land outside (the kernel resolves 'a' first).
        if ".." in path.parts or os.path.normpath(path) == ".":
            raise ValueError(
                f"{where}: field 'stale_files': {str(path)!r} may leave the application's cwd "
                "(a relative path without '..' naming a file under it is needed)"
            )
        if cwd is None:
            raise ValueError(
                f"{where}: field 'stale_files': {str(path)!r} is relative, which needs field 'cwd'"
            )


def dependency_order(apps: list[ApplicationConfig]) -> list[ApplicationConfig]:
    """Order ``apps`` so each comes after what it depends on; ties keep the configured order."""
    by_name: dict[str, ApplicationConfig] = {}
    for app in apps:
        if app.name in by_name:
            raise ValueError(f"application {app.name!r} is configured twice")
        by_name[app.name] = app
    for app in apps:
        unknown = [d for d in app.depends_on if d not in by_name]
        if unknown:
            raise ValueError(
                f"application {app.name!r} depends on unknown application(s): {', '.join(unknown)}"
            )
    ordered: list[ApplicationConfig] = []
    placed: set[str] = set()
    remaining = list(apps)
    while remaining:
        # The first ready one in configured order, so the result is stable and predictable.
        ready = next((a for a in remaining if set(a.depends_on) <= placed), None)
        if ready is None:
            raise ValueError(f"dependency cycle: {' -> '.join(_find_cycle(remaining))}")
        ordered.append(ready)
        placed.add(ready.name)
        remaining.remove(ready)
    return ordered


def _find_cycle(blocked: list[ApplicationConfig]) -> list[str]:
    """A cycle among ``blocked`` (each of which waits on another of them), as a closed path."""
    deps = {a.name: list(a.depends_on) for a in blocked}
    path = [blocked[0].name]
    while True:
        # Every blocked app has an unplaced dependency, and unplaced means blocked.
        nxt = next(d for d in deps[path[-1]] if d in deps)
        if nxt in path:
            return [*path[path.index(nxt) :], nxt]
        path.append(nxt)


def make_control(
    app: ApplicationConfig, state_dir: Path, runner: Runner = run_command
) -> ServiceControl:
    """The control for ``app``; ``state_dir`` holds the agent's pid files for spawned apps."""
    if app.control == "process":
        return ProcessControl(app, state_dir, settle_s=app.settle_s)
    assert app.unit is not None  # guaranteed by the validator
    if app.control == "systemd":
        return SystemdControl(
            app.unit,
            runner=runner,
            start_timeout_s=app.start_timeout_s,
            stop_timeout_s=app.stop_grace_s,
        )
    return WindowsServiceControl(
        app.unit,
        runner=runner,
        start_timeout_s=app.start_timeout_s,
        stop_grace_s=app.stop_grace_s,
    )
