"""TLS on the bus (issue 17): a client must trust the deployment's CA, mutual TLS refuses a
client without a certificate, and servers of a cluster talk over mutual-TLS routes."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus_security_rig import SecuredBus, start_secured_bus
from tandem.events.bus import Bus
from tandem.events.bus_identities import ADMIN, VIEWER
from tandem.events.bus_tls import route_tls_block, write_local_pki
from tandem.events.embedded import NatsCluster
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import StreamSettings, load_stream_settings


async def until_provisioned(bus: Bus, streams: StreamSettings, timeout: float = 30.0) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await bus.provision(streams)
        except Exception:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, nats_binary: str) -> Iterator[SecuredBus]:
    bus = start_secured_bus(tmp_path_factory.mktemp("tls"))
    yield bus
    bus.server.stop()


async def test_a_client_that_trusts_the_ca_connects(secured: SecuredBus) -> None:
    async with await Bus.connect(secured.settings(VIEWER)) as bus:
        assert bus.nc.is_connected
        assert bus.nc._server_info.get("tls_required") is True


async def test_a_client_without_the_ca_is_refused_by_tls(secured: SecuredBus) -> None:
    # No CA given: the system's trust store, which does not know the local CA.
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await Bus.connect(secured.settings(VIEWER, tls_ca_file=None))


async def test_a_client_trusting_another_ca_is_refused(secured: SecuredBus, tmp_path: Path) -> None:
    other = write_local_pki(tmp_path / "other")
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await Bus.connect(secured.settings(VIEWER, tls_ca_file=other.ca_cert))


async def test_the_server_name_is_verified(tmp_path: Path, nats_binary: str) -> None:
    # A certificate for another name than the one connected to is refused, CA or not.
    secured = start_secured_bus(tmp_path, server_names=["bus.example.test"])
    try:
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await Bus.connect(secured.settings(VIEWER))
    finally:
        secured.server.stop()


def test_keys_and_certificates_are_private(secured: SecuredBus) -> None:
    for path in (secured.tls.ca_key, secured.tls.server_key, secured.tls.client_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    config = secured.server.config_path.read_text()
    assert stat.S_IMODE(secured.server.config_path.stat().st_mode) == 0o600
    for password in secured.passwords.values():
        assert password not in config  # only bcrypt hashes


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, nats_binary: str
) -> None:
    secured = start_secured_bus(tmp_path, verify_clients=True)
    try:
        with pytest.raises(ConnectionError):
            await Bus.connect(secured.settings(ADMIN))
        with_cert = secured.settings(
            ADMIN, tls_cert_file=secured.tls.client_cert, tls_key_file=secured.tls.client_key
        )
        async with await Bus.connect(with_cert) as bus:
            assert bus.nc.is_connected
    finally:
        secured.server.stop()


async def test_a_cluster_forms_over_tls_routes(tmp_path: Path, nats_binary: str) -> None:
    secrets = SecureBusFiles.create(tmp_path / "secrets", {}, rounds=4)
    cluster = NatsCluster(
        tmp_path / "cluster",
        extra_config=secrets.server_config(),
        cluster_extra=route_tls_block(secrets.tls),
    ).start()
    try:
        settings = secrets.settings(ADMIN, servers=cluster.urls)
        async with await Bus.connect(settings) as bus:
            # Three replicas need the routes: the stream is placed on all three servers
            # (asked again while the servers elect their meta leader).
            lines = await until_provisioned(bus, load_stream_settings(replicas=3))
            assert "stream TANDEM_EVENTS created" in lines
            info = await bus.js.stream_info("TANDEM_EVENTS")
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
        for server in cluster.servers:
            routes = server.config_text().split("cluster {", 1)[1]
            assert '"verify": true' in routes and str(secrets.tls.ca_cert) in routes
    finally:
        cluster.stop()
