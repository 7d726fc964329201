"""Which `tandem up` stack a command talks to (issue 18 item 8), without processes: the
discovery files are written as `tandem up` writes them, with this test's pid as the live one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tandem.cli import api_target, stacks, up_stack
from tandem.cli.api_client import ApiClient
from tandem.cli.api_target import resolve_api_url, resolve_token
from tandem.cli.helptext import polish
from tandem.cli.main import app
from tandem.cli.stacks import StackError


@pytest.fixture(autouse=True)
def state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in ("TANDEM_API_URL", "TANDEM_API_TOKEN", "TANDEM_STACK"):
        monkeypatch.setenv(key, "")  # recorded: what `--stack` sets is undone after the test
        monkeypatch.delenv(key)
    monkeypatch.setenv("TANDEM_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stack(name: str, pid: int | None = None, **state: Any) -> Path:
    folder = stacks.stacks_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    body = {
        "name": name,
        "pid": os.getpid() if pid is None else pid,
        "api_url": f"http://127.0.0.1:{8000 + len(name)}",
        "operator_token": f"operator-{name}",
        "viewer_token": f"viewer-{name}",
        **state,
    }
    path.write_text(json.dumps(body))
    return path


def test_no_stack_running_means_the_defaults() -> None:
    assert stacks.select() is None
    assert resolve_api_url(None) == api_target.DEFAULT_API_URL
    assert resolve_token(None) is None


def test_the_only_stack_running_is_taken() -> None:
    stack("demo-a")
    assert resolve_api_url(None) == "http://127.0.0.1:8006"
    assert resolve_token(None) == "operator-demo-a"


def test_two_stacks_and_no_choice_are_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack("demo-a")
    stack("demo-b", api_url="http://127.0.0.1:9999")
    with pytest.raises(StackError) as refused:
        resolve_api_url(None)
    assert refused.value.exit_code == 2
    message = refused.value.message
    assert "2 tandem up stacks are running" in message
    assert "demo-a (pid" in message and "demo-b (pid" in message and "--stack NAME" in message
    # An explicit API needs no stack; a chosen one is taken.
    assert resolve_api_url("http://given:1") == "http://given:1"
    monkeypatch.setenv("TANDEM_STACK", "demo-b")
    assert resolve_api_url(None) == "http://127.0.0.1:9999"
    assert resolve_token(None) == "operator-demo-b"


def test_a_named_stack_that_does_not_run_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    stack("demo-a")
    stack("gone", pid=dead_pid())
    monkeypatch.setenv("TANDEM_STACK", "gone")
    with pytest.raises(StackError, match=r"no tandem up stack named 'gone' is running.*demo-a"):
        resolve_api_url(None)


def test_a_stack_killed_hard_is_ignored() -> None:
    stack("gone", pid=dead_pid())
    assert stacks.running() == []
    assert resolve_api_url(None) == api_target.DEFAULT_API_URL


def test_a_pid_reused_by_another_process_is_no_stack() -> None:
    mine = stacks.process_start(os.getpid())
    assert mine is not None  # Linux
    stack("demo-a", pid_start=mine)
    stack("reused", pid_start=mine - 1)
    assert [s.name for s in stacks.running()] == ["demo-a"]


def test_an_older_up_json_is_a_stack_named_up(state_dir: Path) -> None:
    (state_dir / "tandem").mkdir(parents=True)
    (state_dir / "tandem" / "up.json").write_text(
        json.dumps({"pid": os.getpid(), "api_url": "http://old:1"})
    )
    assert [s.name for s in stacks.running()] == ["up"]
    assert resolve_api_url(None) == "http://old:1"


def test_the_bus_secrets_are_those_of_the_stack_whose_bus_it_is() -> None:
    from tandem.cli.busurl import secrets_folder

    stack("demo-a", bus_url="nats://127.0.0.1:1", bus_secrets="/a/bus-secrets")
    stack("demo-b", bus_url="nats://127.0.0.1:2", bus_secrets="/b/bus-secrets")
    # Two stacks, an explicit bus: no choice needed.
    assert secrets_folder("nats://127.0.0.1:2") == Path("/b/bus-secrets")
    assert secrets_folder("nats://elsewhere:4222") is None


def test_default_names() -> None:
    assert stacks.default_name(Path("/srv/Demo_A"), 7) == "demo-a"
    assert stacks.default_name(None, 7) == "tandem-7"
    assert stacks.default_name(Path("/srv/___"), 7) == "tandem-7"
    with pytest.raises(StackError, match="stack name 'Bad Name' is invalid"):
        stacks.check_stack_name("Bad Name")


def test_reads_use_the_viewer_token_and_mutations_the_operator_token_and_say_where(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack("demo-a")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(202, json={"saga_id": "s-1"})

    url, token = resolve_api_url(None), resolve_token(None)
    with ApiClient(url, token, transport=httpx.MockTransport(handler)) as client:
        assert client.clusters() == []
        assert client.switchover("demo", None, "test").saga_id == "s-1"
        client.switchover("demo", None, "again")
    assert [r.headers["authorization"] for r in seen] == [
        "Bearer viewer-demo-a",
        "Bearer operator-demo-a",
        "Bearer operator-demo-a",
    ]
    # Said once per command, on stderr: which stack, which API.
    assert capsys.readouterr().err == "acting on stack demo-a (http://127.0.0.1:8006)\n"


def test_an_explicit_token_is_used_for_everything() -> None:
    stack("demo-a")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    with ApiClient("http://x", "mine-0123456789", transport=httpx.MockTransport(handler)) as c:
        c.clusters()
    assert seen[0].headers["authorization"] == "Bearer mine-0123456789"


def test_a_second_up_on_the_same_store_is_refused_naming_the_first(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    stack("store", store_dir=str(store))
    code = (
        "import sys; from pathlib import Path; from tandem.cli.up_stack import lock_store; "
        "held = lock_store(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(up_stack.AlreadyRunning) as found:
            up_stack.lock_store(store)
        message = str(found.value)
        assert f"already running on store {store}" in message
        assert f"stack 'store', pid {os.getpid()}, API http://127.0.0.1:8005" in message
    finally:
        holder.communicate("", timeout=30)
    up_stack.lock_store(store).close()  # free again once its holder is gone


def test_a_name_a_live_stack_has_is_refused() -> None:
    stack("demo-a", pid=1, store_dir="/elsewhere")  # pid 1 is alive (and not ours)
    with pytest.raises(up_stack.AlreadyRunning, match=r"named 'demo-a' is already running"):
        up_stack.check_name_free("demo-a")
    up_stack.check_name_free("demo-b")


def test_the_discovery_file_is_private_and_removed_only_by_its_owner(state_dir: Path) -> None:
    path = up_stack.write_discovery("demo-a", {"api_url": "http://x"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    other = stack("demo-b", pid=1)
    up_stack.remove_discovery(other)
    assert other.exists()
    up_stack.remove_discovery(path)
    assert not path.exists()


def test_the_root_stack_option_chooses_the_stack() -> None:
    stack("demo-a")
    stack("demo-b")
    runner = CliRunner()
    result = runner.invoke(polish(app), ["--stack", "demo-b", "logs"])
    # demo-b has no store: the command got past the choice and says what it lacks.
    assert result.exit_code == 2
    assert "stack demo-b names no store" in result.output
    os.environ.pop("TANDEM_STACK")  # what --stack set, for the next command of this test
    refused = runner.invoke(polish(app), ["logs"])
    assert refused.exit_code == 2 and "2 tandem up stacks are running" in refused.output


def test_a_new_stack_leaves_the_ports_a_running_one_holds() -> None:
    from tandem.cli import up

    stack("demo-a", api_url="http://127.0.0.1:8700", ports=[8700, 8080, 8081, 8082])
    assert up_stack.stack_ports() == {8700, 8080, 8081, 8082}
    assert not up._port_free(8080)  # its demo app may not listen yet
    assert up.ApiAccess.new().port != 8700
    assert set(up.demo_ports().values()).isdisjoint({8081, 8082})
