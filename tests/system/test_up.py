"""`tandem up` as a user runs it: embedded bus, every service and the demo pair, then Ctrl-C.

The bus it runs requires TLS and a login (issue 17): each service logs in as its own
identity, and the other commands find the admin's login through the state file."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tandem.events.bus_identities import VIEWER
from tandem.events.connection import BusRefusedLoginError, open_connection
from tandem.events.embedded import NatsServer
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import BusSettings

pytestmark = pytest.mark.system


def wait_for(path: Path, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    """The stack's discovery file once it names the services (it is first written, without
    them, before anything listens: a stack started meanwhile leaves its ports)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = json.loads(path.read_text())
            if state.get("services"):
                return state  # type: ignore[no-any-return]
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} was never written with its services")


def tail_cmd(event_type: str, count: int) -> list[str]:
    return [
        sys.executable, "-m", "tandem.cli", "events", "tail", "--type", event_type,
        "--count", str(count), "--history", "100", "--idle-timeout", "60",
    ]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def tandem(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tandem.cli", *args],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
    )


async def connect_once(url: str, **login: Any) -> None:
    """Connect with only ``login`` (no login, no CA unless given), then close."""
    settings = BusSettings(servers=[url], max_reconnect_attempts=0, **login)
    nc = await open_connection(settings, name="test-up-outsider")
    await nc.close()


def assert_the_bus_refuses_outsiders(state: dict[str, Any]) -> None:
    url, ca = state["bus_url"], Path(state["bus_ca_file"])
    secrets = Path(state["bus_secrets"])
    viewer = {
        "user": VIEWER,
        "password": json.loads((secrets / "passwords.json").read_text())[VIEWER],
    }
    # No login at all, over TLS: refused by the authorization.
    with pytest.raises(BusRefusedLoginError, match=r"(?i)authorization"):
        asyncio.run(connect_once(url, tls_ca_file=ca))
    # The right login without the CA: refused by TLS before any login is sent.
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(connect_once(url, **viewer))
    # Both: in (the viewer's printed login works).
    asyncio.run(connect_once(url, tls_ca_file=ca, inbox_prefix="_INBOX.viewer", **viewer))


@pytest.mark.timeout(400)
def role_changes(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [n for n in found if n["tandem"]["event_type"] == "RoleChanged"]


def test_up_starts_everything_and_ctrl_c_stops_everything(
    tmp_path: Path, nats_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite's own bus login (conftest) is for its server: the commands below must find
    # this bus's login by themselves, from the state file.
    for key in [k for k in os.environ if k.startswith("TANDEM_BUS_") or k == "TANDEM_SECRETS_DIR"]:
        monkeypatch.delenv(key)
    env = {**os.environ, "TANDEM_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "up",
            "--nats-port",
            "0",
            "--store-dir",
            str(tmp_path / "store"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    discovery = tmp_path / "state" / "tandem" / "stacks" / "store.json"
    try:
        state = wait_for(discovery)
        assert state["bus_url"].startswith("nats://127.0.0.1:")
        assert set(state["services"]) == {
            "orchestrator",
            "dns_updater",
            "vmware_bridge",
            "notifier",
            "agent-primary",
            "agent-secondary",
        }
        # The stack's discovery file (named after its store folder) holds the run's API
        # tokens: owner only. The orchestrator has them from its tokens file, hashed
        # (`tandem status` below gets in with them).
        assert discovery.stat().st_mode & 0o777 == 0o600
        tokens_file = tmp_path / "store" / "orchestrator" / "api-tokens"
        assert tokens_file.stat().st_mode & 0o777 == 0o600
        assert state["operator_token"] not in tokens_file.read_text()
        # The bus passwords stay in their own 0600 file: the state file names its folder.
        passwords = json.loads((Path(state["bus_secrets"]) / "passwords.json").read_text())
        state_text = discovery.read_text()
        assert passwords and all(p not in state_text for p in passwords.values())
        assert_the_bus_refuses_outsiders(state)

        # No --bus: the tail finds the bus of the running `tandem up` by itself.
        tail = subprocess.run(
            [
                sys.executable,
                "-m",
                "tandem.cli",
                "events",
                "tail",
                "--count",
                "10",
                "--type",
                "ServiceStarted",
                "--history",
                "100",
                "--idle-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert tail.returncode == 0, tail.stderr
        started = {(line.split()[1], line.split()[4]) for line in tail.stdout.splitlines()}
        assert started == {
            ("tandem/orchestrator", "service=orchestrator"),
            ("tandem/dns-updater", "service=dns_updater"),
            ("tandem/vmware-bridge", "service=vmware_bridge"),
            ("tandem/notifier", "service=notifier"),
            *{
                (f"demo/{n}", f"service={s}")
                for n in ("primary", "secondary")
                for s in ("agent", "replicator", "monitor")
            },
        }
        # The demo pair replicates: a file written on the Active appears on the Passive.
        sides = subprocess.run(
            [*tail_cmd("ReplicationStarted", 2)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert sides.returncode == 0 and len(sides.stdout.splitlines()) == 2, sides.stdout
        store = Path(state["store_dir"])
        (store / "demo/primary/data/hello.txt").write_text("replicated by Tandem")
        replica = store / "demo/secondary/data/hello.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            replica.exists() and replica.read_text() == "replicated by Tandem"
        ):
            time.sleep(0.1)
        assert replica.read_text() == "replicated by Tandem"
        # By now the orchestrator serves: `tandem status` finds its URL and token by itself.
        status = subprocess.run(
            [sys.executable, "-m", "tandem.cli", "status"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        # The admin's commands on the bus log in by themselves too.
        provision = tandem(env, "bus", "provision")
        assert provision.returncode == 0 and "unchanged" in provision.stdout, provision
        # The whole switchover runs with each component's least privilege.
        switch = tandem(env, "switchover", "demo", "--to", "secondary", "--timeout", "120")
        assert switch.returncode == 0, switch.stdout + switch.stderr
        assert "secondary is Active" in switch.stdout, switch.stdout
        # The notifier's demo route has the role change, as Alertmanager JSON.
        notifications = store / "notifier" / "notifications.jsonl"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not role_changes(notifications):
            time.sleep(0.2)
        summaries = [c["alerts"][0]["annotations"]["summary"] for c in role_changes(notifications)]
        assert any(s.startswith("secondary is Active") for s in summaries), summaries
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "Tandem is up" in out and "stopped." in out
    # Its output went to a pipe, not a terminal: the tokens and bus passwords are not in it,
    # nor in any log; how to log in is.
    assert "not shown (the output is not a terminal)" in out
    assert "passwords not shown (the output is not a terminal)" in out
    assert "TANDEM_BUS_USER=viewer TANDEM_BUS_INBOX_PREFIX=_INBOX.viewer" in out
    logs = {p: p.read_text(errors="replace") for p in (tmp_path / "store").rglob("*.log")}
    assert logs
    for secret in (state["operator_token"], state["viewer_token"], *passwords.values()):
        assert secret not in out
        assert all(secret not in log for log in logs.values())
    for path, log in logs.items():
        assert "permissions violation" not in log.lower(), f"{path}:\n{log[-3000:]}"
    for name, pid in state["services"].items():
        assert not alive(pid), f"{name} (pid {pid}) is still running"
    assert not discovery.exists()


def test_bus_commands_log_in_from_a_secrets_folder(
    tmp_path: Path, nats_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As an operator beside docker compose: TANDEM_SECRETS_DIR names the folder `tandem bus
    # secrets` wrote; the bus commands log in as its admin.
    for key in [k for k in os.environ if k.startswith("TANDEM_BUS_") or k == "TANDEM_SECRETS_DIR"]:
        monkeypatch.delenv(key)
    folder = tmp_path / "bus-secrets"
    args = ["bus", "secrets", str(folder), "--cluster", "c1=a,b", "--bcrypt-rounds", "4"]
    made = tandem(dict(os.environ), *args)
    assert made.returncode == 0, made.stdout + made.stderr
    files = SecureBusFiles.load(folder)
    server = NatsServer(store_dir=tmp_path / "nats", extra_config=files.server_config()).start()
    try:
        env = {
            **os.environ,
            "TANDEM_STATE_DIR": str(tmp_path / "state"),
            "TANDEM_BUS_SERVERS": server.url,
            "TANDEM_SECRETS_DIR": str(folder),
        }
        for _ in range(2):  # the second finds the record and leaves it
            done = tandem(env, "bus", "provision", "--first-active", "c1=a")
            assert done.returncode == 0, done.stdout + done.stderr
            assert "role of c1: a Active at epoch 1" in done.stdout
        # Without the folder: no CA (and no login), refused by TLS first.
        del env["TANDEM_SECRETS_DIR"]
        refused = tandem(env, "bus", "provision")
        assert refused.returncode == 3, refused
        assert "CERTIFICATE_VERIFY_FAILED" in refused.stderr.replace("\n", ""), refused
    finally:
        server.stop()
