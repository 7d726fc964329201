"""The CLI's help and its small commands without processes (issue 18 item 9): ``-h``
everywhere, examples and exit codes in every command's help, flags shown as flags; the
``events tail`` window; ``tandem logs`` on a store's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tandem.cli import logs
from tandem.cli.events_tail import UnknownEventType, check_event_type, window
from tandem.cli.helptext import polish
from tandem.cli.main import app


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command (typer vendors click: its groups are no ``click.Group``)."""
    if hasattr(command, "commands"):
        found = []
        for name, sub in command.commands.items():
            found += command_paths(sub, (*prefix, name))
        return found
    return [prefix]


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    return polish(app)


def test_every_command_takes_dash_h_and_ends_with_its_exit_codes(cli: typer.Typer) -> None:
    runner = CliRunner()
    paths = command_paths(typer.main.get_command(cli))
    assert ("events", "tail") in paths and ("logs",) in paths and len(paths) > 15
    for path in paths:
        result = runner.invoke(cli, [*path, "-h"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "Exit codes" in result.output, (path, result.output)
        # A flag takes no value: no "<bool>" beside it.
        assert "<bool>" not in result.output, (path, result.output)


def test_examples_are_in_the_help(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["events", "tail", "-h"], env={"COLUMNS": "200"})
    assert "Examples:" in result.output and "tandem events tail --count 1" in result.output
    assert "--json" in result.output and "--full" in result.output
    root = CliRunner().invoke(cli, ["-h"], env={"COLUMNS": "200"})
    assert root.exit_code == 0 and "--stack" in root.output


def test_the_tail_window_counts_from_the_end() -> None:
    assert window(None, None) == 10
    assert window(None, 50) == 50  # --count 50 alone: the last 50
    assert window(10, None) == 10
    assert window(10, 1) == 1  # --count 1: the newest, not the oldest of the last 10
    assert window(100000, 9) == 9
    assert window(0, 5) == 0  # --history 0: only new ones


def test_an_unknown_type_names_the_close_ones() -> None:
    assert check_event_type("RoleChanged") == "RoleChanged"
    with pytest.raises(UnknownEventType, match="did you mean RoleChanged"):
        check_event_type("rolechanged")
    with pytest.raises(UnknownEventType, match="unknown event type 'Nothing-like-it'"):
        check_event_type("Nothing-like-it")


def store_with_logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    (tmp_path / "nats").mkdir()
    for name in ("orchestrator", "dns_updater", "agent-primary"):
        (tmp_path / "logs" / f"{name}.log").write_text(
            "".join(f"{name} line {i}\n" for i in range(30))
        )
    (tmp_path / "nats" / "nats.log").write_text("server ready\n")
    return tmp_path


def test_logs_are_picked_by_service_node_or_bus(tmp_path: Path) -> None:
    files = logs.log_files(store_with_logs(tmp_path))
    assert set(files) == {"orchestrator", "dns_updater", "agent-primary", "nats"}
    assert list(logs.pick(files, "primary")) == ["agent-primary"]
    assert list(logs.pick(files, "dns-updater")) == ["dns_updater"]
    assert list(logs.pick(files, "bus")) == ["nats"]
    assert logs.pick(files, None) == files
    with pytest.raises(LookupError, match=r"no log named 'tertiary'.*agent-primary"):
        logs.pick(files, "tertiary")


def test_logs_shows_the_last_lines_and_follows_what_is_appended(tmp_path: Path) -> None:
    store = store_with_logs(tmp_path)
    runner = CliRunner()
    one = runner.invoke(app, ["logs", "orchestrator", "-n", "2", "--store-dir", str(store)])
    assert one.exit_code == 0
    assert one.output == "orchestrator line 28\norchestrator line 29\n"
    every = runner.invoke(app, ["logs", "-n", "1", "--store-dir", str(store)])
    assert "agent-primary | agent-primary line 29" in every.output
    assert "nats          | server ready" in every.output
    missing = runner.invoke(app, ["logs", "tertiary", "--store-dir", str(store)])
    assert missing.exit_code == 2 and "its logs: agent-primary" in missing.output

    path = store / "logs" / "orchestrator.log"
    _, offset = logs.last_lines(path, 0)
    seen: list[tuple[str, str]] = []
    rounds = iter(range(4))

    def step(_: float) -> None:
        n = next(rounds)
        if n == 0:
            with path.open("a") as out:
                out.write("appended\npart")
        elif n == 1:
            with path.open("a") as out:
                out.write("ial\n")
        elif n == 2:
            path.write_text("a new run\n")  # truncated: read from the start again

    logs.follow(
        {"orchestrator": path},
        {"orchestrator": offset},
        lambda source, line: seen.append((source, line)),
        stop=lambda: len(seen) >= 3,
        sleep=step,
    )
    assert [line for _, line in seen] == ["appended", "partial", "a new run"]
