"""The embedded nats-server, and connecting with credentials to a server that demands them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, NatsServerError
from tandem.events.settings import load_bus_settings


def test_the_server_reports_its_random_port_and_syncs_every_write(nats_server: NatsServer) -> None:
    assert nats_server.client_port and nats_server.client_port > 0
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.client_port}"
    assert "sync_interval: always" in nats_server.config_path.read_text()


def test_a_server_that_cannot_start_says_why(tmp_path: Path, nats_binary: str) -> None:
    broken = NatsServer(store_dir=tmp_path, extra_config="this is { not valid")
    with pytest.raises(NatsServerError, match="exited with"):
        broken.start(timeout=10)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, nats_binary: str):  # type: ignore[no-untyped-def]
    server = NatsServer(
        store_dir=tmp_path_factory.mktemp("guarded"),
        extra_config='authorization { users: [ { user: "op", password: "s3cret" } ] }',
    ).start()
    yield server
    server.stop()


async def test_user_and_password_are_sent(guarded: NatsServer) -> None:
    async with await Bus.connect(
        load_bus_settings(servers=guarded.url, user="op", password="s3cret")
    ) as bus:
        assert bus.nc.is_connected
        info = await bus.js.account_info()
        assert info.limits is not None


async def test_a_wrong_password_is_refused(guarded: NatsServer) -> None:
    settings = load_bus_settings(
        servers=guarded.url, user="op", password="wrong", max_reconnect_attempts=0
    )
    with pytest.raises(ConnectionError, match="Authorization Violation"):
        await Bus.connect(settings)


async def test_a_token_is_sent(tmp_path: Path, nats_binary: str) -> None:
    server = NatsServer(store_dir=tmp_path, extra_config='authorization { token: "t0ken" }').start()
    try:
        async with await Bus.connect(
            load_bus_settings(
                servers=server.url,
                token="t0ken",
                user=None,
                password=None,  # not the suite's login
            )
        ) as bus:
            assert bus.nc.is_connected
    finally:
        server.stop()


async def test_connect_retries_until_its_deadline(tmp_path: Path) -> None:
    from tandem.events.embedded import free_port

    settings = load_bus_settings(servers=f"nats://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    with pytest.raises(ConnectionError, match="cannot reach the bus"):
        await Bus.connect(settings, retry_for_s=1.0)


async def test_an_unreachable_first_server_does_not_stop_the_connection(
    nats_server: NatsServer,
) -> None:
    from tandem.events.embedded import free_port

    servers = f"nats://127.0.0.1:{free_port()},{nats_server.url}"
    settings = load_bus_settings(servers=servers, connect_timeout_s=1)
    async with await Bus.connect(settings) as bus:
        assert (
            bus.nc.connected_url is not None
            and bus.nc.connected_url.port == nats_server.client_port
        )
