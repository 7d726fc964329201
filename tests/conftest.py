"""Test harness: a real nats-server per session on a random port, and a clean bus per test.

Fixture chain: ``nats_store`` (temp dir) -> ``nats_server`` (real nats-server, readiness and
port read from its log) -> ``bus`` (connected, streams and buckets reset and provisioned).

The session's server is secured as a deployment's is (issue 17): logins and TLS, made by
``tandem.events.secure_bus``. The suite logs in as the admin identity through the
environment (``TANDEM_BUS_USER``...), which every client and every service a test starts
inherits; least privilege per component is tested on its own servers
(``tests/bus_security_rig.py``). A test that starts a server of its own starts it
with ``bus_secrets.server_config()``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, NatsServerError, nats_server_binary
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import (
    CONFIG_BUCKET,
    DLQ_STREAM,
    EVENTS_STREAM,
    JOURNAL_STREAM,
    LEASES_BUCKET,
    ROLES_BUCKET,
)

REQUIRE_ALL = os.environ.get("TANDEM_REQUIRE_ALL") == "1"


def require(component: str, present: bool, hint: str) -> None:
    """Skip when a system component is missing; fail instead under TANDEM_REQUIRE_ALL=1 (CI)."""
    if present:
        return
    message = f"{component} is not available: {hint}"
    if REQUIRE_ALL:
        pytest.fail(f"{message} (TANDEM_REQUIRE_ALL=1 forbids skipping)")
    pytest.skip(message)


def has_binary(name: str) -> bool:
    return shutil.which(name) is not None


@pytest.fixture(scope="session")
def nats_binary() -> str:
    try:
        return nats_server_binary()
    except NatsServerError as exc:
        require("nats-server", False, str(exc))
        raise


@pytest.fixture(scope="session")
def nats_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nats")


#: bcrypt's cheapest work factor: the suite connects thousands of times (production: 11).
TEST_BCRYPT_ROUNDS = 4


@pytest.fixture(scope="session")
def bus_secrets(nats_store: Path) -> Iterator[SecureBusFiles]:
    """The session's bus secrets, and the suite's admin login in this process's environment
    (every client and service a test starts logs in with it): a test's own server started
    with ``server_config()`` takes that login as the session's server does."""
    secrets = SecureBusFiles.create(nats_store / "secrets", {}, rounds=TEST_BCRYPT_ROUNDS)
    login = {k: v for k, v in secrets.login_env("admin").items() if k != "TANDEM_BUS_INBOX_PREFIX"}
    saved = {k: os.environ.get(k) for k in login}
    os.environ.update(login)
    yield secrets
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def nats_server(
    nats_binary: str, nats_store: Path, bus_secrets: SecureBusFiles
) -> Iterator[NatsServer]:
    server = NatsServer(
        store_dir=nats_store, name="tandem-test", extra_config=bus_secrets.server_config()
    ).start()
    yield server
    server.stop()


async def reset_bus(bus: Bus) -> None:
    for stream in (EVENTS_STREAM, JOURNAL_STREAM, DLQ_STREAM):
        try:
            await bus.js.delete_stream(stream)
        except NotFoundError:
            pass
    for bucket in (ROLES_BUCKET, CONFIG_BUCKET, LEASES_BUCKET):
        try:
            await bus.js.delete_key_value(bucket)
        except NotFoundError:
            pass
    bus._kv.clear()


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A connected bus with freshly provisioned, empty streams and buckets."""
    b = await Bus.connect(load_bus_settings(servers=[nats_server.url]), name="tandem-test")
    await reset_bus(b)
    await b.provision(load_stream_settings())
    yield b
    await b.close()
