"""Test harness: a real nats-server per session on a random port, and a clean bus per test.

Fixture chain: ``nats_store`` (temp dir) -> ``nats_server`` (real nats-server, readiness and
port read from its log) -> ``bus`` (connected, streams and buckets reset and provisioned).
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


@pytest.fixture(scope="session")
def nats_server(nats_binary: str, nats_store: Path) -> Iterator[NatsServer]:
    server = NatsServer(store_dir=nats_store, name="tandem-test").start()
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
