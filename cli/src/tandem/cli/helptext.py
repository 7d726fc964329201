"""What every ``tandem`` command's ``--help`` ends with: examples and its exit codes.

``polish(app)`` gives each command without an epilog of its own one made of its examples
(``EXAMPLES``, by command path) and its exit codes (``EXIT_CODES``, else the operator
commands' ones). A module that registers a command may give it its own ``epilog=``: it is
kept. ``-h`` is set on the root (click's contexts inherit it), and flags show no ``<bool>``
(``options.flags_without_metavar``).
"""

from __future__ import annotations

import typer
from rich.markup import escape

from tandem.cli.options import flags_without_metavar

#: The operator commands' exit codes (operate.py): most commands follow them.
DEFAULT_EXIT_CODES = "0 done, 1 failed (or timed out), 2 refused or bad input, 3 unreachable"

EXIT_CODES: dict[str, str] = {
    "version": "0",
    "up": "0 stopped by Ctrl-C, 2 another stack holds the store or the name",
    "agent": "0 stopped, 2 bad config, 3 bus unreachable",
    "run": "0 stopped, 2 unknown service or bad config, 3 bus unreachable",
    "events tail": "0 done (or Ctrl-C), 2 bad filter or unknown type, 3 bus unreachable",
    "verify": "0 every replica matches, 1 not, 2 bad input, 3 bus unreachable",
    "bus provision": "0 done, 2 bad input, 3 bus unreachable",
    "logs": "0 done (or Ctrl-C), 2 no such log or no stack",
    "token new": "0",
    "token hash": "0, 2 not a valid token",
    "srm failover": "0 done or already there, 1 failed or timed out, 2 refused, 3 unreachable",
    "srm failback": "0 done or already there, 1 failed or timed out, 2 refused, 3 unreachable",
    "srm write-steps": "0 written, 1 not written (the folder), 2 bad input",
    "vmware clone-secondary": "0 cloned, 1 failed, 2 refused or bad config, 3 vCenter unreachable",
}

EXAMPLES: dict[str, list[str]] = {
    "up": [
        "tandem up",
        "tandem up --store-dir ~/tandem-a --name demo-a --nats-port 0",
    ],
    "run": ["tandem run orchestrator", "tandem run agent --cluster demo --node primary"],
    "agent": ["tandem agent --config /etc/tandem/node.toml --check"],
    "events tail": [
        "tandem events tail",
        "tandem events tail --count 1 --type RoleChanged",
        "tandem events tail --cluster demo --history 50 --full",
        "tandem events tail --json --history 1000 --idle-timeout 2 > events.jsonl",
    ],
    "verify": [
        "tandem verify --cluster demo",
        "tandem verify --source /data --replica /mnt/copy",
    ],
    "bus provision": ["tandem bus provision --first-active billing=db1"],
    "bus secrets": ["tandem bus secrets ./secrets --cluster billing=db1,db2"],
    "status": [
        "tandem status",
        "tandem status --cluster demo",
        "tandem status --watch 2",
        "tandem status --json",
        "tandem --stack demo-a status",
    ],
    "list": ["tandem list"],
    "switchover": ["tandem switchover demo", "tandem switchover demo --to secondary --no-wait"],
    "failover": ["tandem failover demo --confirm", "tandem failover demo --confirm --to secondary"],
    "group switchover": ["tandem group switchover erp --reason 'site maintenance'"],
    "pause": ["tandem pause demo --for 2h --reason 'kernel update'"],
    "resume": ["tandem resume demo"],
    "node standby": ["tandem node standby demo secondary --reason 'disk swap'"],
    "node unstandby": ["tandem node unstandby demo secondary"],
    "dns reconcile": ["tandem dns reconcile", "tandem dns reconcile demo --no-wait"],
    "logs": [
        "tandem logs",
        "tandem logs orchestrator -f",
        "tandem logs primary -n 100 --stack demo-a",
    ],
    "token new": ["tandem token new --role operator"],
    "token hash": ['echo "$TOKEN" | tandem token hash --role viewer'],
    "version": ["tandem version"],
    "srm failover": ["tandem srm failover --group erp --token-file c:\\tandem\\token"],
    "srm failback": ["tandem srm failback --group erp --token-file c:\\tandem\\token"],
    "srm write-steps": [
        "tandem srm write-steps --group erp --dir ./steps --token-file c:\\tandem\\token "
        "--srm-dir c:\\tandem"
    ],
    "vmware clone-secondary": ["tandem vmware clone-secondary --vm db1 --name db2"],
}


def epilog(path: str) -> str:
    lines = []
    examples = EXAMPLES.get(path)
    if examples:
        lines.append("Examples:")
        lines += [f"  {escape(e)}" for e in examples]
        lines.append("")
    lines.append(f"Exit codes: {EXIT_CODES.get(path, DEFAULT_EXIT_CODES)}.")
    return "\n".join(lines)


def _name(info: typer.models.CommandInfo) -> str:
    if info.name:
        return info.name
    callback = info.callback
    return callback.__name__.lower().replace("_", "-") if callback is not None else ""


def polish(app: typer.Typer, prefix: str = "") -> typer.Typer:
    """Set the epilogs of ``app``'s commands and of its sub-apps' (idempotent)."""
    if not prefix:
        flags_without_metavar()
        settings = dict(app.info.context_settings or {})
        settings.setdefault("help_option_names", ["-h", "--help"])
        app.info.context_settings = settings
    for info in app.registered_commands:
        if info.epilog is None:
            info.epilog = epilog(f"{prefix}{_name(info)}")
    for group in app.registered_groups:
        sub = group.typer_instance
        name = group.name or (sub.info.name if sub is not None else None)
        if sub is not None and isinstance(name, str):
            polish(sub, f"{prefix}{name} ")
    return app
