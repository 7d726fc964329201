"""``tandem srm``: the Command Step scripts ``write-steps`` writes for VMware SRM recovery
plans, and ``failover`` / ``failback`` against a stand-in API (one-line reasons, exit codes).
The real orchestrator is exercised by ``tests/system/test_srm.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from tandem.cli import operate
from tandem.cli.api_client import ApiClient
from tandem.cli.srm import srm_app
from tandem.cli.srm_steps import StepOptions, command_lines, render_scripts

TOKEN = "s3cret-token-never-in-a-script"
URL = "http://orchestrator.example:8700"


def run(*args: str) -> Any:
    app = typer.Typer()
    app.add_typer(srm_app, name="srm")
    return CliRunner().invoke(app, ["srm", *args])


@pytest.fixture(autouse=True)
def no_outside_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TANDEM_API_URL", raising=False)
    monkeypatch.delenv("TANDEM_API_TOKEN", raising=False)
    monkeypatch.setenv("TANDEM_STATE_DIR", str(tmp_path / "state"))


# -- write-steps ------------------------------------------------------------------------------


def write(tmp_path: Path, *extra: str, group: str = "erp") -> Any:
    return run(
        "write-steps",
        "--group",
        group,
        "--dir",
        str(tmp_path / "steps"),
        "--api",
        URL,
        "--token-file",
        r"C:\tandem\api.token",
        "--srm-dir",
        r"c:\tandem",
        *extra,
    )


def lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), "CRLF line endings"
    return raw.decode("ascii").split("\r\n")


def test_write_steps_writes_four_scripts_that_run_tandem_and_pass_its_exit_code_on(
    tmp_path: Path,
) -> None:
    result = write(tmp_path)
    assert result.exit_code == 0, result.output
    steps = tmp_path / "steps"
    assert sorted(p.name for p in steps.iterdir()) == [
        "tandem-srm-failback-erp.cmd",
        "tandem-srm-failback-erp.ps1",
        "tandem-srm-failover-erp.cmd",
        "tandem-srm-failover-erp.ps1",
    ]
    cmd = lines(steps / "tandem-srm-failover-erp.cmd")
    assert cmd[0] == "@echo off"
    assert cmd[-3:] == [
        '"tandem" srm failover --group "erp" --to "secondary" '
        f'--api "{URL}" --token-file "C:\\tandem\\api.token" --timeout 900',
        "exit /b %ERRORLEVEL%",
        "",
    ]
    ps1 = lines(steps / "tandem-srm-failover-erp.ps1")
    assert (
        f"    & 'tandem' srm failover --group 'erp' --to 'secondary' --api '{URL}' "
        "--token-file 'C:\\tandem\\api.token' --timeout 900"
    ) in ps1
    assert ps1[-2:] == ["exit $LASTEXITCODE", ""]
    # If tandem cannot even start, the step must fail, not pass with a stale exit code.
    assert ps1.index("$global:LASTEXITCODE = 1  # stays 1 if tandem cannot be started") < (
        ps1.index("exit $LASTEXITCODE")
    )
    back_cmd = lines(steps / "tandem-srm-failback-erp.cmd")
    assert back_cmd[-3] == (
        f'"tandem" srm failback --group "erp" --api "{URL}" '
        '--token-file "C:\\tandem\\api.token" --timeout 900'
    )
    assert back_cmd[-2] == "exit /b %ERRORLEVEL%"
    back_ps1 = lines(steps / "tandem-srm-failback-erp.ps1")
    assert (
        f"    & 'tandem' srm failback --group 'erp' --api '{URL}' "
        "--token-file 'C:\\tandem\\api.token' --timeout 900"
    ) in back_ps1
    assert back_ps1[-2] == "exit $LASTEXITCODE"


def test_write_steps_prints_the_srm_command_lines(tmp_path: Path) -> None:
    result = write(tmp_path)
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert (
        r"  failover: c:\windows\system32\cmd.exe /c c:\tandem\tandem-srm-failover-erp.cmd" in out
    )
    assert (
        r"  failback: c:\windows\system32\cmd.exe /c c:\tandem\tandem-srm-failback-erp.cmd" in out
    )
    assert (
        r"  failover: c:\windows\system32\WindowsPowerShell\v1.0\powershell.exe -NoProfile "
        r"-NonInteractive -ExecutionPolicy Bypass -File c:\tandem\tandem-srm-failover-erp.ps1"
    ) in out
    # Each script names the command line it is meant for.
    cmd = lines(tmp_path / "steps" / "tandem-srm-failover-erp.cmd")
    assert r"rem   c:\windows\system32\cmd.exe /c c:\tandem\tandem-srm-failover-erp.cmd" in cmd


def test_a_folder_with_spaces_is_quoted_in_the_command_line() -> None:
    got = command_lines(r"C:\Program Files\Tandem", "erp")
    assert got["failover.cmd"] == (
        r'c:\windows\system32\cmd.exe /c "C:\Program Files\Tandem\tandem-srm-failover-erp.cmd"'
    )


def test_options_go_into_the_scripts(tmp_path: Path) -> None:
    result = write(
        tmp_path,
        "--to",
        "tertiary",
        "--timeout",
        "1200",
        "--tandem",
        r"C:\Program Files\Tandem\tandem.exe",
    )
    assert result.exit_code == 0, result.output
    cmd = lines(tmp_path / "steps" / "tandem-srm-failover-erp.cmd")
    assert cmd[-3].startswith(
        r'"C:\Program Files\Tandem\tandem.exe" srm failover --group "erp" --to "tertiary" '
    )
    assert cmd[-3].endswith(" --timeout 1200")
    ps1 = lines(tmp_path / "steps" / "tandem-srm-failover-erp.ps1")
    assert any(line.startswith(r"    & 'C:\Program Files\Tandem\tandem.exe' srm ") for line in ps1)
    assert "above 1200 s" in result.output


def test_the_token_is_never_written_into_a_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TANDEM_API_TOKEN", TOKEN)
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN)
    result = run(
        "write-steps", "--group", "erp", "--dir", str(tmp_path / "s"),
        "--token-file", str(token_file),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for script in (tmp_path / "s").iterdir():
        text = script.read_text()
        assert TOKEN not in text
        assert str(token_file) in text
    assert TOKEN not in result.output
    assert "--token " not in "".join(p.read_text() for p in (tmp_path / "s").iterdir())


def test_without_a_token_file_the_scripts_rely_on_the_environment(tmp_path: Path) -> None:
    result = run("write-steps", "--group", "erp", "--dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.output
    cmd = lines(tmp_path / "s" / "tandem-srm-failover-erp.cmd")
    assert cmd[-3] == '"tandem" srm failover --group "erp" --to "secondary" --timeout 900'
    assert "TANDEM_API_TOKEN" in result.output


@pytest.mark.parametrize(
    "group",
    ["../evil", "a/b", r"a\b", "Shop", "shop.ps1", "a b", "-x", "", "x" * 64, "erp&calc"],
)
def test_a_group_name_unsafe_in_a_file_name_is_refused(tmp_path: Path, group: str) -> None:
    result = write(tmp_path, group=group)
    assert result.exit_code == 2
    assert not (tmp_path / "steps").exists()
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("tandem srm write-steps: group name ")
    assert "cannot name a script file" in line


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--api", 'http://x"&calc'),
        ("--token-file", r"C:\%TEMP%\t"),
        ("--tandem", "t\u00e9"),
        ("--token-file", "C:\\tandem\\"),
        ("--api", "http://x\nrem"),
    ],
)
def test_a_value_the_scripts_cannot_quote_is_refused(
    tmp_path: Path, option: str, value: str
) -> None:
    result = write(tmp_path, option, value)
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert option in line and "cannot go into the scripts" in line


def test_render_scripts_keeps_single_quotes_literal_in_powershell() -> None:
    scripts = render_scripts(StepOptions("erp", token_file=r"C:\o'neil\t"), r"c:\tandem")
    ps1 = scripts["tandem-srm-failover-erp.ps1"]
    assert r"--token-file 'C:\o''neil\t'" in ps1


# -- failover / failback against a stand-in API -----------------------------------------------


def group_saga(state: str, reason: str, steps: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "id": "g-1",
        "kind": "group_switchover",
        "cluster": "erp",
        "from_node": None,
        "to_node": "secondary",
        "state": state,
        "reason": reason,
        "started_at": "2025-11-25T10:00:00Z",
        "steps": [
            {"index": i, "name": n, "node": n.split()[1], "command": "ClusterSwitchover",
             "state": s, "reason": r}
            for i, (n, s, r) in enumerate(steps)
        ],
    }  # fmt: skip


@dataclass
class FakeApi:
    post: tuple[int, dict[str, Any]] = (
        202,
        {"saga_id": "g-1", "status_url": "/api/v1/sagas/g-1", "to": "secondary", "skipped": {}},
    )
    saga: dict[str, Any] = field(
        default_factory=lambda: group_saga(
            "completed",
            "group_switchover of erp to secondary completed",
            [("switchover erp-db to secondary", "completed", "erp-db: moved")],
        )
    )
    requests: list[httpx.Request] = field(default_factory=list)
    unreachable: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.unreachable:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.method == "POST":
            return httpx.Response(self.post[0], json=self.post[1])
        return httpx.Response(200, json=self.saga)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    fake = FakeApi()
    transport = httpx.MockTransport(fake)

    def factory(url: str, token: str | None, timeout: float) -> ApiClient:
        return ApiClient(url, token, timeout, transport=transport)

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(operate, "client_factory", factory)
    monkeypatch.setattr(operate, "clock", lambda: now[0])
    monkeypatch.setattr(operate, "sleep", sleep)
    yield fake


def test_failover_asks_for_the_secondary_identity_with_the_token_from_its_file(
    api: FakeApi, tmp_path: Path
) -> None:
    token_file = tmp_path / "t"
    token_file.write_text(TOKEN + "\r\n")
    result = run("failover", "--group", "erp", "--api", URL, "--token-file", str(token_file))
    assert result.exit_code == 0, result.output
    (post,) = [r for r in api.requests if r.method == "POST"]
    assert str(post.url) == f"{URL}/api/v1/groups/erp/switchover"
    assert json.loads(post.content) == {"to": "secondary", "reason": "VMware SRM recovery plan"}
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert "erp-db: moved" in result.stdout
    assert result.stderr == ""


def test_failback_asks_for_primary(api: FakeApi) -> None:
    result = run("failback", "--group", "erp", "--api", URL)
    assert result.exit_code == 0, result.output
    (post,) = [r for r in api.requests if r.method == "POST"]
    assert json.loads(post.content)["to"] == "primary"


def test_a_refusal_is_one_line_naming_the_group(api: FakeApi) -> None:
    api.post = (404, {"detail": "no group 'nope'"})
    result = run("failover", "--group", "nope", "--api", URL)
    assert result.exit_code == 2
    assert result.stderr == "tandem srm failover: group nope refused: no group 'nope' (HTTP 404)\n"


def test_a_failed_saga_is_one_line(api: FakeApi) -> None:
    api.saga = group_saga(
        "failed",
        "step 1 (switchover erp-app to secondary) failed: erp-app: b is not alive\n(no heartbeat)",
        [("switchover erp-db to secondary", "compensated", ""),
         ("switchover erp-app to secondary", "failed", "b is not alive")],
    )  # fmt: skip
    result = run("failover", "--group", "erp", "--api", URL)
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("tandem srm failover: group erp failed: step 1 (switchover erp-app")
    assert line.endswith("b is not alive (no heartbeat)")


def test_a_timeout_is_one_line(api: FakeApi) -> None:
    api.saga = group_saga("running", "", [("switchover erp-db to secondary", "running", "")])
    result = run("failover", "--group", "erp", "--api", URL, "--timeout", "5")
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("tandem srm failover: group erp: timed out after 5 s waiting for saga")


def test_an_unreachable_api_is_one_line(api: FakeApi) -> None:
    api.unreachable = True
    result = run("failover", "--group", "erp", "--api", URL)
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"tandem srm failover: group erp: cannot reach the Tandem API at {URL}")


def test_a_missing_token_file_is_one_line(api: FakeApi, tmp_path: Path) -> None:
    result = run("failover", "--group", "erp", "--token-file", str(tmp_path / "none"))
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert "cannot read the token file" in line
    assert api.requests == []


def test_an_unknown_identity_is_refused(api: FakeApi) -> None:
    result = run("failover", "--group", "erp", "--to", "dr-site")
    assert result.exit_code == 2
    assert api.requests == []
