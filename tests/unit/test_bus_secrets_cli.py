"""``tandem bus secrets DIR`` (issue 17): the folder docker compose takes its bus logins,
certificates and nats config from; every file with a secret is owner-only, running it again
keeps what is there, ``--rotate USER`` replaces that password alone."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import compose_bus_check
import compose_check
from tandem.cli.bus_secrets import certificate_names, parse_clusters
from tandem.cli.main import app
from tandem.events.bus_identities import VIEWER, agent_user

REPO = Path(__file__).resolve().parents[2]
#: bcrypt's cheapest work factor: the command hashes every password twice per run.
FAST = ["--bcrypt-rounds", "4"]
COMPOSE_ARGS = ["--cluster", "demo=primary,secondary", *FAST]
COMPOSE_ARGS += [a for n in ("nats-1", "nats-2", "nats-3") for a in ("--server-name", n)]


def secrets(folder: Path, *args: str) -> Any:
    result = CliRunner().invoke(app, ["bus", "secrets", str(folder), *args])
    assert result.exit_code == 0, result.output
    return result


def passwords(folder: Path) -> dict[str, str]:
    return json.loads((folder / "passwords.json").read_text())  # type: ignore[no-any-return]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_secret_is_owner_only_and_no_password_is_printed(tmp_path: Path) -> None:
    folder = tmp_path / "bus-secrets"
    result = secrets(folder, *COMPOSE_ARGS)
    every = passwords(folder)
    assert set(every) >= {"admin", "orchestrator", agent_user("demo", "primary"), VIEWER}
    assert all(p not in result.output for p in every.values())
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"auth.conf", "routes.conf", "ca-key.pem", "viewer.env"}
    for path in files:
        # The CA certificate is public: a container's user (not the host's) must read it.
        assert mode(path) == (0o644 if path == folder / "ca.pem" else 0o600), path
    assert mode(folder) == 0o700
    # The nats servers get hashes, their certificate and the CA's, never the CA's key.
    nats = folder / "nats"
    assert not (nats / "ca-key.pem").exists()
    auth = (nats / "auth.conf").read_text()
    assert all(p not in auth for p in every.values()) and "$2a$04$" in auth
    assert '"/etc/nats/secrets/server.pem"' in auth
    login = (folder / "env" / "agent-demo-primary.env").read_text()
    assert f"TANDEM_BUS_PASSWORD={every[agent_user('demo', 'primary')]}\n" in login
    assert "TANDEM_BUS_TLS_CA_FILE=/etc/tandem/bus-ca.pem\n" in login
    assert "TANDEM_BUS_INBOX_PREFIX=_INBOX.agent.demo.primary\n" in login
    names = certificate_names(folder / "tls" / "server.pem")
    assert set(names) == {"127.0.0.1", "localhost", "nats-1", "nats-2", "nats-3"}


def test_rotation_changes_only_the_named_users_password(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    secrets(folder, *COMPOSE_ARGS)
    before = passwords(folder)
    ca = (folder / "tls" / "ca.pem").read_bytes()
    # No --cluster: the clusters the folder was made for, not none.
    secrets(folder, "--rotate", VIEWER, *FAST)
    after = passwords(folder)
    assert set(after) == set(before)
    assert after[VIEWER] != before[VIEWER]
    assert {u: p for u, p in after.items() if u != VIEWER} == {
        u: p for u, p in before.items() if u != VIEWER
    }
    assert f"TANDEM_BUS_PASSWORD={after[VIEWER]}\n" in (folder / "env" / "viewer.env").read_text()
    assert (folder / "tls" / "ca.pem").read_bytes() == ca  # certificates kept
    secrets(folder, "--new-certificates", *FAST)
    assert (folder / "tls" / "ca.pem").read_bytes() != ca
    assert passwords(folder) == after
    # A new certificate keeps the names of the one it replaces.
    assert "nats-3" in certificate_names(folder / "tls" / "server.pem")


def test_mistakes_are_named_and_change_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    secrets(folder, *COMPOSE_ARGS)
    before = passwords(folder)
    for args, says in (
        (["--rotate", "nobody"], "no bus identity 'nobody'"),
        (["--cluster", "demo"], "expected NAME=node1,node2"),
        (["--server-name", "nats-4"], "add --new-certificates"),
    ):
        result = CliRunner().invoke(app, ["bus", "secrets", str(folder), *args, *FAST])
        assert result.exit_code == 2 and says in result.output, result.output
    assert passwords(folder) == before
    assert parse_clusters(["a=x, y", "b=z"]) == {"a": ["x", "y"], "b": ["z"]}


def test_a_removed_node_loses_its_login(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    secrets(folder, *COMPOSE_ARGS)
    secrets(folder, "--cluster", "demo=primary", *FAST)
    assert not (folder / "env" / "agent-demo-secondary.env").exists()
    assert agent_user("demo", "secondary") not in passwords(folder)


def test_the_compose_nats_config_is_valid_with_the_secrets(
    tmp_path: Path, nats_binary: str
) -> None:
    # The servers' view: cluster.conf in /etc/nats, the folder's nats/ at /etc/nats/secrets.
    etc = tmp_path / "etc-nats"
    etc.mkdir()
    conf = (REPO / "libs/events/nats/cluster.conf").read_text()
    (etc / "cluster.conf").write_text(conf.replace("/data", str(tmp_path / "data")))
    secrets(tmp_path / "s", *COMPOSE_ARGS, "--nats-dir", str(etc / "secrets"))
    (etc / "secrets").symlink_to(tmp_path / "s" / "nats")
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1", "NATS_CLUSTER_NAME": "tandem"}
    checked = subprocess.run(
        [nats_binary, "-c", str(etc / "cluster.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=etc,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def compose_problems(tmp_path: Path, edit: Any, *secrets_args: str) -> list[str]:
    """compose_check's problems with the real compose file, edited, beside a secrets folder
    written with ``secrets_args``."""
    model = json.loads(json.dumps(compose_check.load_yaml(REPO / "docker-compose.yml")))
    for service in model["services"].values():
        if "build" in service:
            service["build"]["context"] = str(REPO)
        service["volumes"] = [
            v.replace("./", f"{REPO}/", 1) if v.startswith("./") else v
            for v in service.get("volumes", [])
        ]
    edit(model["services"])
    (tmp_path / "docker-compose.yml").write_text(json.dumps(model))
    secrets(tmp_path / "bus-secrets", *secrets_args)
    return compose_check.check(tmp_path / "docker-compose.yml")


@pytest.fixture
def no_secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_SECRETS_DIR", raising=False)
    if not shutil.which("docker-compose"):
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")


@pytest.mark.usefixtures("no_secrets_env")
def test_compose_check_names_a_wrong_or_missing_login(tmp_path: Path) -> None:
    def edit(services: dict[str, Any]) -> None:
        del services["dns_updater"]["env_file"]
        services["agent-primary"]["env_file"] = services["agent-secondary"]["env_file"]
        services["vmware_bridge"]["volumes"] = []
        services["nats-2"]["volumes"].pop()  # the secrets folder

    problems = compose_problems(tmp_path, edit, *COMPOSE_ARGS)
    assert sorted(p.split(":")[0] for p in problems) == [
        "service agent-primary",
        "service dns_updater",
        "service nats-2",
        "service nats-2",
        "service vmware_bridge",
    ], problems
    assert any("'agent:demo:secondary', not as 'agent:demo:primary'" in p for p in problems)


@pytest.mark.usefixtures("no_secrets_env")
def test_compose_check_names_a_certificate_without_the_nats_hosts(tmp_path: Path) -> None:
    args = ["--cluster", "demo=primary,secondary", "--server-name", "nats-1", *FAST]
    problems = compose_problems(tmp_path, lambda services: None, *args)
    assert len(problems) == 2 and all("not valid for 'nats-" in p for p in problems), problems


def test_compose_variables_are_read_as_docker_compose_does() -> None:
    assert compose_bus_check.expand("${D:-./x}/a", {}) == "./x/a"
    assert compose_bus_check.expand("${D:-./x}/a", {"D": "/s"}) == "/s/a"
    assert compose_bus_check.expand("${D-./x}", {"D": ""}) == ""
    assert compose_check.split_volume("${D:-./x}/nats:/etc/nats/secrets:ro") == [
        "${D:-./x}/nats",
        "/etc/nats/secrets",
        "ro",
    ]
