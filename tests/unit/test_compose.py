"""docker-compose.yml checks (tests/compose_check.py): the real file passes, breakages are named."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

import compose_check
from conftest import has_binary, require

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PRIMARY_TOML = REPO / "examples" / "compose" / "primary.toml"
CONFIG_MOUNT = "/etc/tandem/node.toml"


def require_compose() -> None:
    require("docker-compose", has_binary("docker-compose"), "apt-get install docker-compose")


def broken_model(directory: Path) -> dict[str, Any]:
    """The real file, runnable from ``directory`` (where it writes the bad node config), with
    one breakage per kind."""
    # A JSON round trip: YAML aliases share objects, and each breakage must stay in one service.
    model: dict[str, Any] = json.loads(json.dumps(compose_check.load_yaml(COMPOSE_FILE)))
    services = model["services"]
    for service in services.values():
        if "build" in service:
            service["build"]["context"] = str(REPO)
        service["volumes"] = [
            v.replace("./", f"{REPO}/", 1) if v.startswith("./") else v
            for v in service.get("volumes", [])
        ]
    services["dns_updater"]["build"]["dockerfile"] = "Dockerfile.missing"
    services["nats-3"]["volumes"][0] = "./missing/cluster.conf:/etc/nats/cluster.conf:ro"
    services["agent-secondary"]["build"]["args"]["SERVICE"] = "agnet"
    services["orchestrator"]["environment"]["TANDEM_BUS_SERVERS"] += ",nats://nats-4:4222"
    # Agents: the real one as a template for one breakage per service.
    agent = copy.deepcopy(services["agent-primary"])
    bad = PRIMARY_TOML.read_text(encoding="utf-8").replace('node = "primary"', 'node = "Primary"')
    (directory / "primary.toml").write_text(bad, encoding="utf-8")
    services["agent-primary"]["volumes"][0] = f"./primary.toml:{CONFIG_MOUNT}:ro"
    services["agent-unconfigured"] = copy.deepcopy(agent)
    del services["agent-unconfigured"]["environment"]["TANDEM_AGENT_CONFIG"]
    services["agent-unmounted"] = copy.deepcopy(agent)
    services["agent-unmounted"]["volumes"].pop(0)
    services["agent-stray-bus"] = copy.deepcopy(agent)
    services["agent-stray-bus"]["environment"]["TANDEM_NODE_BUS__SERVERS"] = (
        "nats://nats-1:4222,nats://nats-5:4222"
    )
    return model


@pytest.fixture(scope="module")
def broken_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "docker-compose.yml"
    model = broken_model(path.parent)
    path.write_text(json.dumps(model, indent=2), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def broken_problems(broken_file: Path) -> list[str]:
    require_compose()
    return compose_check.check(broken_file)


def test_the_real_compose_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    require_compose()
    assert compose_check.main([str(COMPOSE_FILE)]) == 0
    assert capsys.readouterr().out.strip() == "compose file OK: 9 services"


def only(problems: list[str], *words: str) -> str:
    found = [p for p in problems if all(w in p for w in words)]
    assert len(found) == 1, f"expected one problem with {words}, got {problems}"
    return found[0]


def test_a_missing_dockerfile_is_named(broken_problems: list[str]) -> None:
    assert "does not exist" in only(broken_problems, "dns_updater", "Dockerfile.missing")


def test_a_missing_bind_mount_source_is_named(broken_problems: list[str]) -> None:
    assert "bind-mounted" in only(broken_problems, "nats-3", "missing/cluster.conf")


def test_a_service_arg_naming_no_tandem_service_is_named(broken_problems: list[str]) -> None:
    problem = only(broken_problems, "agent-secondary", "'agnet'")
    assert "services/agnet/src/tandem/agnet/__main__.py" in problem


def test_a_bus_url_to_an_undefined_host_is_named(broken_problems: list[str]) -> None:
    assert "TANDEM_BUS_SERVERS" in only(broken_problems, "orchestrator", "'nats-4'")


def test_an_agent_without_its_config_is_named(broken_problems: list[str]) -> None:
    problem = only(broken_problems, "agent-unconfigured")
    assert problem == "service agent-unconfigured: TANDEM_AGENT_CONFIG: Field required"


def test_an_agent_config_that_is_not_mounted_is_named(broken_problems: list[str]) -> None:
    problem = only(broken_problems, "agent-unmounted")
    assert f"TANDEM_AGENT_CONFIG: {CONFIG_MOUNT} is not bind-mounted" in problem


def test_an_invalid_mounted_node_config_names_its_file_and_field(
    broken_problems: list[str],
) -> None:
    problem = only(broken_problems, "service agent-primary:")
    assert problem.startswith("service agent-primary: primary.toml: node: "), problem
    assert "node name 'Primary' is invalid" in problem


def test_a_node_config_bus_url_to_an_undefined_host_is_named(broken_problems: list[str]) -> None:
    problem = only(broken_problems, "agent-stray-bus")
    prefix = "service agent-stray-bus: "
    assert problem.startswith(f"{prefix}{REPO}/examples/compose/primary.toml: bus.servers "), (
        problem
    )
    assert "(from TANDEM_NODE_BUS__SERVERS)" in problem and "'nats-5'" in problem


def test_nothing_else_is_reported(broken_problems: list[str]) -> None:
    assert len(broken_problems) == 8, broken_problems


def test_main_prints_each_problem_and_fails(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_compose()
    assert compose_check.main([str(broken_file)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 8


def test_a_missing_docker_compose_names_the_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose_check, "compose_binary", lambda: None)
    problems = compose_check.check(COMPOSE_FILE)
    assert any("apt-get install docker-compose" in p for p in problems), problems


def test_agents_need_a_config_and_refuse_the_old_variables() -> None:
    service = {"build": {"args": {"SERVICE": "agent"}}}
    problems = compose_check.check_agent("a", service, {"TANDEM_AGENT_NODE": "n1"})
    assert problems == [
        "service a: TANDEM_AGENT_CONFIG: Field required",
        "service a: TANDEM_AGENT_NODE: Extra inputs are not permitted",
    ]


def agent_service(volume: str) -> dict[str, Any]:
    return {"build": {"args": {"SERVICE": "agent"}}, "volumes": [volume]}


def test_a_config_in_a_mounted_directory_is_read_from_the_host(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "primary.toml").write_text(PRIMARY_TOML.read_text(encoding="utf-8"))
    service = agent_service("./conf:/etc/tandem:ro")
    hosts = {"nats-1", "nats-2", "nats-3"}
    env = {"TANDEM_AGENT_CONFIG": "/etc/tandem/primary.toml"}
    assert compose_check.check_agent("a", service, env, tmp_path, hosts) == []
    env["TANDEM_AGENT_CONFIG"] = "/etc/tandem/secondary.toml"
    [problem] = compose_check.check_agent("a", service, env, tmp_path, hosts)
    assert problem == "service a: conf/secondary.toml: no such file"


def test_the_checkers_own_environment_neither_fills_in_nor_hides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "node.toml").write_text(
        PRIMARY_TOML.read_text(encoding="utf-8").replace('node = "primary"\n', "")
    )
    monkeypatch.setenv("TANDEM_NODE_NODE", "primary")
    monkeypatch.setenv("TANDEM_NODE_BUS__SERVERS", "nats://nats-1:4222")
    service = agent_service(f"./node.toml:{CONFIG_MOUNT}:ro")
    env = {"TANDEM_AGENT_CONFIG": CONFIG_MOUNT, "TANDEM_NODE_CLUSTER": "Demo"}
    problems = compose_check.check_agent("a", service, env, tmp_path, {"nats-1"})
    assert [p.split(": Value error")[0].split(": Field")[0] for p in problems] == [
        "service a: node.toml: cluster (from TANDEM_NODE_CLUSTER)",
        "service a: node.toml: node",
    ], problems
    assert os.environ["TANDEM_NODE_NODE"] == "primary"
    assert "TANDEM_NODE_CLUSTER" not in os.environ


def test_values_docker_compose_fills_in_are_not_held_against_the_file(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(
        PRIMARY_TOML.read_text(encoding="utf-8").replace('cluster = "demo"\n', "")
    )
    service = agent_service(f"./node.toml:{CONFIG_MOUNT}:ro")
    env = {
        "TANDEM_AGENT_CONFIG": CONFIG_MOUNT,
        "TANDEM_NODE_CLUSTER": "${CLUSTER}",
        "TANDEM_NODE_BUS__SERVERS": None,
    }
    assert compose_check.check_agent("a", service, env, tmp_path, set()) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://nats-1:4222", "is not a nats://"),
        ("nats://nats-1:99999", "invalid port"),
        ("nats://:4222", "has no host"),
        ("nats://localhost:4222", "not a service of this file"),
    ],
)
def test_bus_urls_must_be_nats_urls_to_services_of_the_file(url: str, reason: str) -> None:
    problems = compose_check.check_bus("s", {"TANDEM_BUS_SERVERS": url}, {"nats-1"})
    assert len(problems) == 1 and reason in problems[0], problems
