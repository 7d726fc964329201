"""docker-compose.yml checks (tests/compose_check.py): the real file passes, breakages are named."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import compose_check
from conftest import has_binary, require

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"


def require_compose() -> None:
    require("docker-compose", has_binary("docker-compose"), "apt-get install docker-compose")


def broken_model() -> dict[str, Any]:
    """The real file, runnable from another directory, with one breakage per kind."""
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
    services["agent-primary"]["environment"]["TANDEM_AGENT_NODE"] = "Primary"
    return model


@pytest.fixture(scope="module")
def broken_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "docker-compose.yml"
    path.write_text(json.dumps(broken_model(), indent=2), encoding="utf-8")  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def broken_problems(broken_file: Path) -> list[str]:
    require_compose()
    return compose_check.check(broken_file)


def test_the_real_compose_file_passes(capsys: pytest.CaptureFixture[str]) -> None:
    require_compose()
    assert compose_check.main([str(COMPOSE_FILE)]) == 0
    assert capsys.readouterr().out.strip() == "compose file OK: 8 services"


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


def test_a_bad_agent_node_name_is_named(broken_problems: list[str]) -> None:
    assert "node name 'Primary' is invalid" in only(broken_problems, "TANDEM_AGENT_NODE")


def test_nothing_else_is_reported(broken_problems: list[str]) -> None:
    assert len(broken_problems) == 5, broken_problems


def test_main_prints_each_problem_and_fails(
    broken_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_compose()
    assert compose_check.main([str(broken_file)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 5


def test_a_missing_docker_compose_names_the_apt_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compose_check, "compose_binary", lambda: None)
    problems = compose_check.check(COMPOSE_FILE)
    assert any("apt-get install docker-compose" in p for p in problems), problems


def test_agents_need_a_cluster_and_a_node() -> None:
    service = {"build": {"args": {"SERVICE": "agent"}}}
    problems = compose_check.check_agent("a", service, {"TANDEM_AGENT_NODE": "n1"})
    assert problems == ["service a: TANDEM_AGENT_CLUSTER: Field required"]


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
