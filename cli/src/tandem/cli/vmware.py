"""``tandem vmware``: vCenter operations with the vmware_bridge's config file.

``tandem vmware clone-secondary --vm SRC --name NEW [--host H] [--datastore D] [--config F]``
clones VM SRC (a VM name, MoRef ``vm-123``, instance UUID, or ``cluster/node`` of the
config's ``[vms]`` map) into a new, powered-off VM NEW in SRC's folder, on host H and
datastore D (default: SRC's), in the resource pool of H's cluster (SRC's own pool when H is
in SRC's cluster). A progress bar follows the vCenter task. The config is ``--config`` or
``TANDEM_VMWARE_BRIDGE_CONFIG``.

Exit codes: 0 cloned; 1 the clone task failed or timed out; 2 refused (bad config, unknown
VM, host or datastore, NEW already exists); 3 vCenter unreachable or the login refused.
A failure prints one line on stderr.

Runnable on its own: ``python -m tandem.cli.vmware clone-secondary ...``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from tandem.cli.operate import EXIT_FAILED, EXIT_REFUSED, EXIT_UNREACHABLE

if TYPE_CHECKING:
    from tandem.vmware_bridge.clone import ClonePlan
    from tandem.vmware_bridge.connection import VCenter

CONFIG_ENV = "TANDEM_VMWARE_BRIDGE_CONFIG"

vmware_app = typer.Typer(
    help="VMware operations through vCenter (with the vmware_bridge config file).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


@vmware_app.callback()
def _group() -> None:
    """VMware operations through vCenter (with the vmware_bridge config file)."""
    # A callback keeps clone-secondary a sub-command even while it is the only one.


class VmwareFailure(Exception):
    """Why the command fails, in one line, and its exit code."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code = code


def _one_line(text: str) -> str:
    return " ".join(text.split())


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help=f"The vmware_bridge config file (default: ${CONFIG_ENV})."),
]


@vmware_app.command("clone-secondary")
def clone_secondary(
    vm: Annotated[
        str,
        typer.Option("--vm", help="The VM to clone: name, MoRef, instance UUID or cluster/node."),
    ],
    name: Annotated[str, typer.Option("--name", help="The name of the new VM.")],
    host: Annotated[
        str | None, typer.Option("--host", help="Host of the new VM (default: the source's).")
    ] = None,
    datastore: Annotated[
        str | None,
        typer.Option("--datastore", help="Datastore of the new VM (default: the source's)."),
    ] = None,
    config: ConfigOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout", help="Give up waiting after this many seconds (default: task_timeout_s)."
        ),
    ] = None,
) -> None:
    """Clone a VM into a new secondary (powered off, same folder)."""
    try:
        plan, task, ok = _clone(vm, name, host, datastore, config, timeout)
    except VmwareFailure as exc:
        err.print(escape(_one_line(str(exc))), soft_wrap=True, highlight=False)
        raise typer.Exit(exc.code) from None
    console.print(
        f"{escape(plan.describe())}: done ({escape(ok)}, task {task})",
        soft_wrap=True,
        highlight=False,
    )


def _config_path(config: Path | None) -> Path:
    if config is not None:
        return config
    env = os.environ.get(CONFIG_ENV)
    if not env:
        raise VmwareFailure(EXIT_REFUSED, f"no config: give --config or set {CONFIG_ENV}")
    return Path(env)


def _clone(
    vm: str,
    name: str,
    host: str | None,
    datastore: str | None,
    config: Path | None,
    timeout: float | None,
) -> tuple[ClonePlan, str, str]:
    # The bridge (and pyVmomi) load only for this command.
    from pyVmomi import vmodl

    from tandem.events.settings import SettingsError
    from tandem.vmware_bridge.clone import plan_clone, start_clone
    from tandem.vmware_bridge.config import load_config
    from tandem.vmware_bridge.connection import VCenter, VCenterError, describe_fault
    from tandem.vmware_bridge.inventory import NotFound

    # What goes wrong is said in one line on stderr: no log lines around it.
    logging.getLogger("tandem.vmware_bridge").addHandler(logging.NullHandler())
    try:
        cfg = load_config(_config_path(config))
        ref = cfg.vm_for(None, vm)
    except SettingsError as exc:
        raise VmwareFailure(EXIT_REFUSED, "; ".join(str(exc).splitlines())) from None
    except LookupError as exc:
        raise VmwareFailure(EXIT_REFUSED, str(exc)) from None
    vc = VCenter(cfg.vcenter)
    try:
        plan = vc.run(lambda s: plan_clone(s, ref, name, host, datastore))
        task = vc.run(lambda s: start_clone(s, plan))
        ok = _follow(vc, plan, task, timeout or cfg.vcenter.task_timeout_s)
        return plan, task, ok
    except NotFound as exc:
        raise VmwareFailure(EXIT_REFUSED, f"not cloned: {exc}") from None
    except VCenterError as exc:
        raise VmwareFailure(EXIT_UNREACHABLE, str(exc)) from None
    except vmodl.MethodFault as exc:
        raise VmwareFailure(
            EXIT_FAILED, f"clone of {vm} failed: vCenter: {describe_fault(exc)}"
        ) from None
    finally:
        vc.close()


def _follow(vc: VCenter, plan: ClonePlan, task: str, timeout_s: float) -> str:
    """Follow the clone task with a progress bar; returns the new VM's MoRef."""
    from pyVmomi import vim

    from tandem.vmware_bridge.clone import task_info
    from tandem.vmware_bridge.connection import describe_fault
    from tandem.vmware_bridge.inventory import moid

    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        bar = progress.add_task(f"cloning {plan.source_name} to {plan.name}", total=100)
        while True:
            info = vc.run(lambda s: task_info(s, task))
            if info.progress is not None:
                progress.update(bar, completed=info.progress)
            if info.state == vim.TaskInfo.State.success:
                progress.update(bar, completed=100)
                result = info.result
                return moid(result) if isinstance(result, vim.VirtualMachine) else "new VM"
            if info.state == vim.TaskInfo.State.error:
                why = describe_fault(info.error) if info.error is not None else "no reason given"
                raise VmwareFailure(EXIT_FAILED, f"clone of {plan.source_name} failed: {why}")
            if time.monotonic() >= deadline:
                raise VmwareFailure(
                    EXIT_FAILED,
                    f"clone of {plan.source_name}: task {task} did not finish within "
                    f"{timeout_s:g} s; it may still finish in vCenter",
                )
            time.sleep(min(vc.config.task_poll_s, 1.0))


if __name__ == "__main__":
    vmware_app()
