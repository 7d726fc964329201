"""Configuration of health checks: one tagged union over every plugin's config, and the factory.

``HealthCheckConfig`` is discriminated by ``plugin``; ``build_plugin`` turns a validated config
into its plugin. ``CheckBase`` (the fields common to all checks) lives in ``checkbase`` so the
plugin modules can import it without importing this module.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from tandem.monitor.health.base import HealthPlugin
from tandem.monitor.health.checkbase import CheckBase
from tandem.monitor.health.command import CommandCheck, CommandCheckConfig
from tandem.monitor.health.http import HttpCheck, HttpCheckConfig
from tandem.monitor.health.perf import PerfCheck, PerfCheckConfig
from tandem.monitor.health.process import ProcessCheck, ProcessCheckConfig
from tandem.monitor.health.service import ServiceCheck, ServiceCheckConfig
from tandem.monitor.health.sql import SqlCheck, SqlCheckConfig
from tandem.monitor.health.tcp import TcpCheck, TcpCheckConfig

__all__ = [
    "CheckBase",
    "HealthCheckConfig",
    "build_plugin",
    "parse_check_config",
]

HealthCheckConfig = Annotated[
    Union[  # noqa: UP007 - a named Union reads better in pydantic's error messages
        ProcessCheckConfig,
        ServiceCheckConfig,
        TcpCheckConfig,
        HttpCheckConfig,
        CommandCheckConfig,
        SqlCheckConfig,
        PerfCheckConfig,
    ],
    Field(discriminator="plugin"),
]

_ADAPTER: TypeAdapter[HealthCheckConfig] = TypeAdapter(HealthCheckConfig)


def parse_check_config(data: Any) -> HealthCheckConfig:
    """Validate one check's configuration (a mapping with a ``plugin`` key)."""
    return _ADAPTER.validate_python(data)


def build_plugin(config: HealthCheckConfig) -> HealthPlugin:
    """The plugin for a validated config."""
    if isinstance(config, ProcessCheckConfig):
        return ProcessCheck(config)
    if isinstance(config, ServiceCheckConfig):
        return ServiceCheck(config)
    if isinstance(config, TcpCheckConfig):
        return TcpCheck(config)
    if isinstance(config, HttpCheckConfig):
        return HttpCheck(config)
    if isinstance(config, CommandCheckConfig):
        return CommandCheck(config)
    if isinstance(config, SqlCheckConfig):
        return SqlCheck(config)
    if isinstance(config, PerfCheckConfig):
        return PerfCheck(config)
    raise TypeError(f"no health plugin for {type(config).__name__}")
