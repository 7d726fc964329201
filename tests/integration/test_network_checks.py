"""Network checks against real loopback listeners and a real ICMP echo of 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import AsyncIterator

import pytest
from pydantic import ValidationError

from conftest import require
from tandem.monitor.network import (
    NetworkConfig,
    NetworkTarget,
    NetworkWatch,
    probe,
)


def closed_port() -> int:
    """A loopback port nobody listens on: bound by the kernel's choice, then released."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tcp(port: int) -> NetworkTarget:
    return NetworkTarget(kind="tcp", host="127.0.0.1", port=port)


@pytest.fixture
async def listener() -> AsyncIterator[int]:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    async with server:
        yield port


async def test_tcp_listener_is_reachable(listener: int) -> None:
    ok, detail = await probe(tcp(listener), 5.0)
    assert ok, detail
    assert detail.startswith("connected in")

    watch = NetworkWatch(NetworkConfig(targets=[tcp(listener)]))
    verdict = await watch.round(0.0)
    assert verdict.reachable == [f"tcp:127.0.0.1:{listener}"]
    assert verdict.unreachable == [] and not verdict.isolated
    assert verdict.changed  # the first round is always news
    assert not (await watch.round(1.0)).changed


async def test_closed_port_is_refused() -> None:
    assert await probe(tcp(closed_port()), 5.0) == (False, "refused")


async def test_three_closed_ports_isolate_the_node_with_every_reason() -> None:
    ports = [closed_port() for _ in range(3)]
    watch = NetworkWatch(NetworkConfig(targets=[tcp(port) for port in ports]))
    verdict = await watch.round(0.0)
    assert verdict.isolated and verdict.changed
    assert verdict.reachable == []
    assert verdict.reason.startswith("all 3 network targets unreachable: ")
    for port in ports:
        assert f"tcp:127.0.0.1:{port} refused" in verdict.reason


async def test_one_reachable_target_of_three_is_not_isolation(listener: int) -> None:
    targets = [tcp(closed_port()), tcp(listener), tcp(closed_port())]
    watch = NetworkWatch(NetworkConfig(targets=targets))
    verdict = await watch.round(0.0)
    assert not verdict.isolated
    assert verdict.reachable == [f"tcp:127.0.0.1:{listener}"]
    assert verdict.unreachable == [targets[0].name, targets[2].name]
    assert verdict.reason.startswith("1 of 3 network targets reachable; unreachable: ")


async def test_fail_after_needs_that_many_rounds_in_a_row() -> None:
    watch = NetworkWatch(NetworkConfig(targets=[tcp(closed_port())], fail_after=2))
    first = await watch.round(0.0)
    assert not first.isolated
    assert "round 1 of 2 before isolation" in first.reason
    second = await watch.round(5.0)
    assert second.isolated and second.changed
    third = await watch.round(10.0)
    assert third.isolated and not third.changed


async def test_icmp_echo_of_loopback() -> None:
    require("root (for raw ICMP sockets)", os.geteuid() == 0, "run the tests as root")
    target = NetworkTarget(kind="icmp", host="127.0.0.1")
    assert target.name == "icmp:127.0.0.1"
    ok, detail = await probe(target, 2.0)
    assert ok, detail
    assert detail.startswith("replied in")


async def test_reachability_changes_are_reported_with_an_injected_probe() -> None:
    up = {"a": True, "b": True}

    async def fake(target: NetworkTarget, timeout_s: float) -> tuple[bool, str]:
        if target.host == "boom":
            raise RuntimeError("kaput")
        reachable = up[target.host]
        return reachable, "fine" if reachable else "down"

    targets = [NetworkTarget(kind="icmp", host=host) for host in ("a", "b", "boom")]
    watch = NetworkWatch(NetworkConfig(targets=targets), probe=fake)
    first = await watch.round(0.0)
    assert first.reachable == ["icmp:a", "icmp:b"]
    assert first.details["icmp:boom"] == "probe failed: RuntimeError: kaput"
    assert not (await watch.round(1.0)).changed
    up["b"] = False
    second = await watch.round(2.0)
    assert second.changed and not second.isolated
    up["a"] = False
    third = await watch.round(3.0)
    assert third.isolated and third.changed
    assert "icmp:a down" in third.reason and "icmp:b down" in third.reason


async def test_no_targets_is_never_isolation() -> None:
    watch = NetworkWatch(NetworkConfig())
    for now in (0.0, 1.0, 2.0):
        verdict = await watch.round(now)
        assert not verdict.isolated
    assert verdict.reason == "no network targets configured"


def test_more_than_three_targets_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        NetworkConfig(targets=[tcp(port) for port in (1, 2, 3, 4)])
    assert info.value.errors()[0]["loc"] == ("targets",)


def test_port_must_match_the_kind() -> None:
    with pytest.raises(ValidationError, match="port is required for tcp"):
        NetworkTarget(kind="tcp", host="127.0.0.1")
    with pytest.raises(ValidationError, match="port is not allowed for icmp"):
        NetworkTarget(kind="icmp", host="127.0.0.1", port=7)
    with pytest.raises(ValidationError, match="kind"):
        NetworkTarget(kind="udp", host="127.0.0.1", port=7)


def test_names_default_from_the_target_and_must_be_unique() -> None:
    assert tcp(9).name == "tcp:127.0.0.1:9"
    assert NetworkTarget(kind="tcp", host="::1", port=9).name == "tcp:[::1]:9"
    assert NetworkTarget(kind="icmp", host="gw", name="gateway").name == "gateway"
    with pytest.raises(ValidationError, match=re.escape("repeated: tcp:127.0.0.1:9")):
        NetworkConfig(targets=[tcp(9), tcp(9)])
