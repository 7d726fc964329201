"""API tokens at rest: hashed lines in the tokens file, the warnings about plain tokens and
open modes, ``tandem token new`` / ``hash``, and the 0600 files Tandem writes itself."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tandem.cli import main, up
from tandem.events import api_tokens
from tandem.events.private_files import write_private
from tandem.orchestrator.api.auth import ApiRole, TokenConfigError, load_tokens

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_hashed_line_authenticates_like_the_token_it_hashes(tmp_path: Path) -> None:
    path = write(tmp_path, f"{api_tokens.file_line('operator', OPERATOR)}   # on-call\n")
    store = load_tokens(path, None)
    principal = store.authenticate(OPERATOR)
    assert principal is not None and principal.role is ApiRole.OPERATOR
    # The same actor in the audit as the plain form gives.
    plain = load_tokens(None, f"operator {OPERATOR}").authenticate(OPERATOR)
    assert plain is not None and principal.actor == plain.actor
    assert store.authenticate(api_tokens.hashed(OPERATOR)) is None  # the hash is no token


def test_hashes_in_upper_case_and_in_the_environment_work() -> None:
    line = "viewer " + api_tokens.hashed(VIEWER).upper().replace("SHA256:", "sha256:")
    store = load_tokens(None, f"{line};operator {OPERATOR}")
    assert (p := store.authenticate(VIEWER)) is not None and p.role is ApiRole.VIEWER
    assert len(store) == 2


@pytest.mark.parametrize(
    "value",
    ["sha256:", "sha256:abc", "sha256:" + "g" * 64, api_tokens.hashed(VIEWER) + "0"],
)
def test_a_bad_hash_names_its_line(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"viewer {OPERATOR}\nviewer {value}\n")
    with pytest.raises(TokenConfigError) as info:
        load_tokens(path, None)
    text = str(info.value)
    assert f"{path}, line 2: a hashed token is 'sha256:' and 64 hex digits" in text
    digits = value.removeprefix("sha256:")
    assert (not digits or digits not in text) and OPERATOR not in text


def test_a_token_given_hashed_and_plain_is_a_duplicate(tmp_path: Path) -> None:
    path = write(tmp_path, f"viewer {VIEWER}\nadmin {api_tokens.hashed(VIEWER)}\n")
    with pytest.raises(TokenConfigError, match=r"line 2: the same token is already given at"):
        load_tokens(path, None)


def test_plain_tokens_are_accepted_with_one_warning_naming_their_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hashed = api_tokens.file_line("admin", "a" * 20)
    path = write(tmp_path, f"# team\nviewer {VIEWER}\n{hashed}\noperator {OPERATOR}\n")
    with caplog.at_level(logging.WARNING):
        store = load_tokens(path, None)
    assert store.authenticate(OPERATOR) is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"{path} holds plain tokens (lines 2, 4)" in message
    assert "tandem token hash" in message
    assert VIEWER not in caplog.text and OPERATOR not in caplog.text


def test_a_hashed_file_and_the_environment_log_no_plain_token_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, api_tokens.file_line("viewer", VIEWER) + "\n")
    with caplog.at_level(logging.WARNING):
        load_tokens(path, f"operator {OPERATOR}")
    assert caplog.records == []


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o660])
def test_a_file_open_to_group_or_others_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = write(tmp_path, api_tokens.file_line("viewer", VIEWER) + "\n", mode)
    with caplog.at_level(logging.WARNING):
        store = load_tokens(path, None)
    assert len(store) == 1  # warned, not refused: existing setups keep working
    assert f"(mode {mode:03o}): chmod 600 {path}" in caplog.text


@posix_only
def test_a_0600_file_gets_no_mode_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, api_tokens.file_line("viewer", VIEWER) + "\n", 0o600)
    with caplog.at_level(logging.WARNING):
        load_tokens(path, None)
    assert "chmod" not in caplog.text


def test_the_role_names_are_the_same_on_both_sides() -> None:
    assert tuple(role.label for role in ApiRole) == api_tokens.ROLES


# -- tandem token new / hash -------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main.app, list(args), input=stdin)


def test_token_new_prints_a_token_and_a_line_the_store_accepts(tmp_path: Path) -> None:
    result = run("token", "new", "--role", "operator")
    assert result.exit_code == 0, result.output
    token, line = result.stdout.splitlines()
    assert api_tokens.token_problem(token) is None and len(token) >= 40
    assert line.startswith("operator sha256:") and token not in line
    assert "shown only this once" in result.stderr
    store = load_tokens(write(tmp_path, line + "\n"), None)
    assert (p := store.authenticate(token)) is not None and p.role is ApiRole.OPERATOR
    again = run("token", "new", "--role", "operator").stdout.splitlines()[0]
    assert again != token


def test_token_hash_reads_the_token_from_stdin(tmp_path: Path) -> None:
    result = run("token", "hash", "--role", "Admin", stdin=f"{OPERATOR}\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"admin {api_tokens.hashed(OPERATOR)}\n"
    assert OPERATOR not in result.stdout
    store = load_tokens(write(tmp_path, result.stdout), None)
    assert (p := store.authenticate(OPERATOR)) is not None and p.role is ApiRole.ADMIN


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("short-token\n", "too short (11 characters"),
        ("two tokens-0123456789\n", "printable ASCII without spaces"),
        (api_tokens.hashed(VIEWER) + "\n", "already a hash"),
    ],
)
def test_token_hash_refuses_what_is_no_token_without_quoting_it(stdin: str, expected: str) -> None:
    result = run("token", "hash", "--role", "viewer", stdin=stdin)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert stdin.strip() not in result.output
    assert result.stdout == ""


def test_token_commands_need_a_known_role() -> None:
    assert run("token", "new").exit_code == 2
    assert run("token", "new", "--role", "root").exit_code == 2


# -- files Tandem writes ---------------------------------------------------------------


@posix_only
def test_write_private_makes_0600_files_and_replaces_an_open_one(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    old = os.umask(0)  # even with nothing masked
    try:
        write_private(path, "one")
        assert mode_of(path) == 0o600 and path.read_text() == "one"
        path.chmod(0o644)
        write_private(path, b"two")
        assert mode_of(path) == 0o600 and path.read_bytes() == b"two"
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["secret"]  # no temporary file left


@posix_only
def test_tandem_up_gives_the_orchestrator_a_hashed_0600_tokens_file(tmp_path: Path) -> None:
    api = up.ApiAccess(8700, "v" * 32, "o" * 32)
    path = tmp_path / "orchestrator" / "api-tokens"
    api.write_tokens_file(path)
    assert mode_of(path) == 0o600
    text = path.read_text()
    assert api.viewer_token not in text and api.operator_token not in text
    env = api.env(path)
    assert env["TANDEM_ORCHESTRATOR_TOKENS_FILE"] == str(path)
    assert env["TANDEM_ORCHESTRATOR_TOKENS"] == ""
    assert all(api.operator_token not in value for value in env.values())
    store = load_tokens(path, None)
    assert (p := store.authenticate(api.operator_token)) is not None
    assert p.role is ApiRole.OPERATOR
    assert (p := store.authenticate(api.viewer_token)) is not None and p.role is ApiRole.VIEWER


@posix_only
def test_tandem_ups_state_file_is_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_STATE_DIR", str(tmp_path / "state"))
    api = up.ApiAccess(8700, "v" * 32, "o" * 32)
    server = SimpleNamespace(url="nats://127.0.0.1:4222", http_port=None)
    path = up._write_state(server, tmp_path, [], api, name="demo-a")  # type: ignore[arg-type]
    # Each stack its own discovery file (issue 18): two `tandem up` no longer share one.
    assert path == tmp_path / "state" / "tandem" / "stacks" / "demo-a.json"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700 and mode_of(path.parent.parent) == 0o700
    state = json.loads(path.read_text())
    assert state["operator_token"] == api.operator_token
    assert state["viewer_token"] == api.viewer_token
    assert state["name"] == "demo-a" and state["pid"] == os.getpid()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tandem_up_prints_its_tokens_to_a_terminal_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_STATE_DIR", str(tmp_path / "state"))
    api = up.ApiAccess(8700, "v" * 32, "o" * 32)
    piped = io.StringIO()
    discovery = tmp_path / "state" / "tandem" / "stacks" / "demo-a.json"
    up._print_tokens(Console(file=piped, width=200), api, discovery)
    assert api.operator_token not in piped.getvalue() and api.viewer_token not in piped.getvalue()
    assert "not a terminal" in piped.getvalue() and "demo-a.json" in piped.getvalue()
    terminal = _Tty()
    up._print_tokens(Console(file=terminal, width=200), api, discovery)
    assert api.operator_token in terminal.getvalue() and api.viewer_token in terminal.getvalue()
