"""A node's config file: the example validates, and each kind of mistake fails with a
``SettingsError`` that names the file and the field; environment overrides win over the file;
``python -m tandem.agent`` exits 2 on a bad file and prints a masked config with ``--check``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.agent.config import NodeConfig, load_node_config
from tandem.events.settings import SettingsError
from tandem.monitor.rules_config import VmRemediationAction

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node.toml"
DR_EXAMPLE = EXAMPLE.with_name("node-dr.toml")

BASE = """\
cluster = "c1"
node = "n1"
identity = "primary"
peers = ["n2"]
state_dir = "/tmp/tandem-test-state"
"""

APP = """
[[applications]]
name = "{name}"
start = ["/bin/true"]
depends_on = {depends_on}
"""

TCP_CHECK = """
[[checks]]
name = "{name}"
plugin = "tcp"
host = "127.0.0.1"
port = 5432
{application}
"""


def clean_env() -> dict[str, str]:
    """The environment without Tandem settings, for subprocesses."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("TANDEM_NODE_", "TANDEM_BUS_"))
    }


@pytest.fixture(autouse=True)
def _no_tandem_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides from the developer's shell must not leak into these tests."""
    for key in os.environ:
        if key.startswith(("TANDEM_NODE_", "TANDEM_BUS_")):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str, name: str = "node.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(SettingsError) as info:
        load_node_config(path)
    return str(info.value)


# --- the example ---------------------------------------------------------------------------------


def test_example_validates_and_shows_every_section() -> None:
    config = load_node_config(EXAMPLE)
    assert isinstance(config, NodeConfig)
    assert (config.cluster, config.node, config.peers) == ("billing", "primary", ["secondary"])
    assert config.vm is not None

    apps = {a.name: a for a in config.applications}
    assert {a.control for a in apps.values()} == {"process", "systemd"}
    assert any(a.depends_on for a in apps.values())
    assert all(a.restart.tries >= 1 for a in apps.values())

    assert {c.plugin for c in config.checks} >= {"http", "tcp", "process", "sql", "perf", "command"}
    sql = next(c for c in config.checks if c.plugin == "sql")
    assert sql.freshness_query

    ladders = [[a.do for a in r.actions] for r in config.rules]
    assert ["alert", "restart", "switchover"] in ladders
    assert any(isinstance(a, VmRemediationAction) for r in config.rules for a in r.actions)

    assert len(config.network.targets) == 3
    public = config.public
    assert (public.kind, public.address, public.interface) == ("lan", "10.0.0.100", "eth0")
    assert public.channel_interface == "eth1"  # dual NIC
    assert config.heartbeat.detector.kind in ("fixed", "phi")
    assert config.lease.fence_margin_s < config.lease.ttl_s


def test_the_dr_example_validates_with_a_dns_identity() -> None:
    config = load_node_config(DR_EXAMPLE)
    assert (config.cluster, config.node, config.identity) == ("billing", "dr", "tertiary")
    public = config.public
    assert (public.kind, public.dns_name, public.site_address) == (
        "dns",
        "billing.example.net",
        "10.8.0.100",
    )
    assert (public.dns_wait_s, public.dns_on_missing) == (20.0, "continue")


@pytest.mark.parametrize(
    "public",
    [
        {"kind": "loopback", "address": "127.0.0.1"},
        {"kind": "lan", "address": "10.0.0.100", "interface": "eth0"},
        {"kind": "lan", "address": "10.0.0.100", "interface": "Ethernet 2", "platform": "windows"},
    ],
    ids=["loopback", "lan-single-nic", "lan-windows"],
)
def test_the_commented_public_variants_of_the_example_validate(public: dict[str, object]) -> None:
    config = load_node_config(EXAMPLE, public=public)
    assert config.public.kind == public["kind"]


# --- mistakes ------------------------------------------------------------------------------------


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + "[heartbeat\ninterval_s = 1\n")
    message = load_error(path)
    assert str(path) in message
    assert "not valid TOML" in message


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    message = load_error(path)
    assert str(path) in message and "no such file" in message


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ('[heartbeat]\ninterval_s = "fast"\n', "heartbeat.interval_s"),
        ('[heartbeat.detector]\nwindow = "big"\n', "heartbeat.detector.window"),
        (
            '[[applications]]\nname = "a"\nstart = ["/bin/true"]\nstop_grace_s = "long"\n',
            "applications.0.stop_grace_s",
        ),
    ],
    ids=["table", "nested-table", "array-of-tables"],
)
def test_wrong_type_names_the_file_and_the_dotted_field(
    tmp_path: Path, extra: str, field: str
) -> None:
    path = write(tmp_path, BASE + extra)
    message = load_error(path)
    assert str(path) in message
    assert field in message


def test_unknown_top_level_key_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + 'colour = "blue"\n')
    message = load_error(path)
    assert str(path) in message
    assert "colour" in message
    assert "not permitted" in message


def test_rule_watching_an_unknown_check(tmp_path: Path) -> None:
    text = BASE + (
        '\n[[rules]]\nname = "r1"\ncheck = "nope"\nmetric = "up"\ncomparator = "=="\n'
        "threshold = 0\n"
    )
    message = load_error(write(tmp_path, text))
    assert "r1" in message and "unknown check 'nope'" in message


def test_check_naming_an_unknown_application(tmp_path: Path) -> None:
    text = BASE + TCP_CHECK.format(name="db", application='application = "ghost"')
    message = load_error(write(tmp_path, text))
    assert "db" in message and "'ghost'" in message and "not configured" in message


def test_restart_rule_with_no_application_to_restart(tmp_path: Path) -> None:
    text = (
        BASE
        + APP.format(name="web", depends_on="[]")
        + TCP_CHECK.format(name="port", application="")  # a node-level check: no application
        + '\n[[rules]]\nname = "r1"\ncheck = "port"\nmetric = "up"\ncomparator = "=="\n'
        + 'threshold = 0\nactions = [{ do = "alert" }, { do = "restart" }]\n'
    )
    message = load_error(write(tmp_path, text))
    assert "r1" in message
    assert "'port'" in message  # the check that could have named it
    assert "None" not in message  # says what is missing, not a Python repr
    assert "application" in message


def test_restart_rule_naming_an_unknown_application(tmp_path: Path) -> None:
    text = (
        BASE
        + APP.format(name="web", depends_on="[]")
        + TCP_CHECK.format(name="port", application='application = "web"')
        + '\n[[rules]]\nname = "r1"\ncheck = "port"\nmetric = "up"\ncomparator = "=="\n'
        + 'threshold = 0\nactions = [{ do = "restart", application = "api" }]\n'
    )
    message = load_error(write(tmp_path, text))
    assert "r1" in message and "'api'" in message and "not a configured application" in message


def test_dependency_cycle_among_applications(tmp_path: Path) -> None:
    text = (
        BASE
        + APP.format(name="a", depends_on='["b"]')
        + APP.format(name="b", depends_on='["c"]')
        + APP.format(name="c", depends_on='["a"]')
    )
    message = load_error(write(tmp_path, text))
    assert "dependency cycle" in message
    assert all(name in message for name in ("a", "b", "c"))


@pytest.mark.parametrize(("ttl", "margin"), [(2.0, 2.0), (2.0, 3.0)])
def test_lease_fence_margin_must_be_below_ttl(tmp_path: Path, ttl: float, margin: float) -> None:
    text = BASE + f"\n[lease]\nttl_s = {ttl}\nfence_margin_s = {margin}\nrenew_every_s = 0.1\n"
    message = load_error(write(tmp_path, text))
    assert "lease" in message
    assert "fence_margin_s" in message and "ttl_s" in message


# --- environment overrides -----------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = BASE + '\n[heartbeat]\ninterval_s = 0.25\n[heartbeat.detector]\nkind = "phi"\n'
    path = write(tmp_path, text)
    assert load_node_config(path).heartbeat.interval_s == 0.25

    monkeypatch.setenv("TANDEM_NODE_HEARTBEAT__INTERVAL_S", "0.5")
    config = load_node_config(path)
    assert config.heartbeat.interval_s == 0.5
    # Merged into the file's table, not replacing it.
    assert config.heartbeat.detector.kind == "phi"


# --- the process entry ---------------------------------------------------------------------------


def run_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.agent", *args],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )


def test_bad_config_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, BASE + '[heartbeat]\ninterval_s = "fast"\n', name="bad.toml")
    result = run_agent("--config", str(path))
    assert result.returncode == 2, result.stderr
    assert str(path) in result.stderr
    assert "heartbeat.interval_s" in result.stderr


def test_check_prints_the_config_with_the_bus_password_masked(tmp_path: Path) -> None:
    secret = "s3cret-Bus-Pa55word"
    text = (
        BASE + f'\n[bus]\nservers = ["nats://127.0.0.1:4222"]\nuser = "u"\npassword = "{secret}"\n'
    )
    path = write(tmp_path, text, name="good.toml")
    result = run_agent("--config", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert secret not in result.stdout and secret not in result.stderr
    effective = json.loads(result.stdout)
    assert effective["node"] == "n1"
    assert effective["bus"]["user"] == "u"
    masked = effective["bus"]["password"]
    assert masked and set(masked) == {"*"}


def test_check_on_the_example_exits_0() -> None:
    result = run_agent("--config", str(EXAMPLE), "--check")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["node"] == "primary"
