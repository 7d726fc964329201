"""Control of a protected application on one node: start, stop and status, whatever runs it
(a process the agent spawns, a systemd unit or a Windows service)."""

from tandem.agent.control.base import AppState, AppStatus, ControlError, ServiceControl
from tandem.agent.control.config import (
    ApplicationConfig,
    RestartPolicy,
    dependency_order,
    make_control,
)
from tandem.agent.control.process import ProcessControl
from tandem.agent.control.runner import Runner, run_command
from tandem.agent.control.systemd import SystemdControl
from tandem.agent.control.windows import WindowsServiceControl

__all__ = [
    "AppState",
    "AppStatus",
    "ApplicationConfig",
    "ControlError",
    "ProcessControl",
    "RestartPolicy",
    "Runner",
    "ServiceControl",
    "SystemdControl",
    "WindowsServiceControl",
    "dependency_order",
    "make_control",
    "run_command",
]
