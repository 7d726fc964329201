"""The dns_updater against a real BIND9 named and a real nats-server: RFC 2136 updates signed
with TSIG, checked by querying named; outcomes recorded as events; failures reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bind_rig import BindServer, bind_server, write_key
from helpers import eventually
from tandem.dns_updater.service import run
from tandem.dns_updater.settings import DnsUpdaterSettings
from tandem.events.bus import Bus
from tandem.events.catalog import RoleChanged
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.embedded import NatsServer
from tandem.events.registry import decode_event
from tandem.events.subjects import DLQ_STREAM, EVENTS_STREAM

APP = "app"  # app.dr.tandem.test, the DR name of cluster alpha
BETA = "beta"  # beta.dr.tandem.test, of cluster beta
PRIMARY = {"10.0.0.5"}
SECONDARY = {"10.1.0.5", "2001:db8:1::5"}
BETA_PRIMARY, BETA_SECONDARY = {"10.0.0.7"}, {"10.1.0.7"}


@pytest.fixture
def named(tmp_path: Path) -> Iterator[BindServer]:
    yield from bind_server(
        tmp_path / "named", records=[f"{APP} IN A 10.0.0.5", f"{BETA} IN A 10.0.0.7"]
    )


def name_entry(
    cluster: str, label: str, addresses: dict[str, str | list[str]], **extra: Any
) -> str:
    table = ", ".join(f"{node} = {_toml(value)}" for node, value in addresses.items())
    lines = [
        "[[names]]",
        f'cluster = "{cluster}"',
        f'name = "{label}.dr.tandem.test"',
        'zone = "dr.tandem.test."',
        "ttl = 30",
        f"addresses = {{ {table} }}",
        *(f"{k} = {_toml(v)}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


ALPHA = name_entry(
    "alpha", APP, {"primary": "10.0.0.5", "secondary": ["10.1.0.5", "2001:db8:1::5"]}
)
BETA_ENTRY = name_entry("beta", BETA, {"primary": "10.0.0.7", "secondary": "10.1.0.7"})


def write_config(
    path: Path,
    named: BindServer,
    *names: str,
    retry: str = "initial_s = 0.1\nmax_s = 0.5\nattempts = 3\ndeadline_s = 30",
    verify: str = "timeout_s = 10\ninterval_s = 0.1",
    protocol: str = "tcp",
) -> Path:
    path.write_text(
        f"""key_file = "{named.key_file}"

[update]
servers = [{{ address = "{named.host}", port = {named.port} }}]
timeout_s = 2
protocol = "{protocol}"

[retry]
{retry}

[verify]
{verify}

"""
        + "\n".join(names or (ALPHA,))
    )
    return path


def role_changed(cluster: str, active: str, epoch: int, previous: str | None = None) -> RoleChanged:
    return RoleChanged(
        cluster=cluster,
        node="orchestrator",
        epoch=epoch,
        payload=RoleChangedPayload(
            active_node=active, previous_active=previous, new_epoch=epoch, reason="test"
        ),
    )


async def events_of(bus: Bus, type_name: str, cluster: str | None = None) -> list[Any]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out: list[Any] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.endswith("." + type_name):
            event = decode_event(msg.data)
            if cluster is None or event.cluster == cluster:
                out.append(event)
    return out


PAIR = ("primary", "secondary")


async def count(bus: Bus, type_name: str, n: int, cluster: str | None = None) -> list[Any]:
    """Wait until there are ``n`` events of the type; return them."""
    found: list[Any] = []

    async def enough() -> bool:
        nonlocal found
        found = await events_of(bus, type_name, cluster)
        return len(found) >= n

    await eventually(enough, timeout=45, what=f"{n} {type_name} event(s)")
    return found


async def started(bus: Bus, instance: str, n: int = 1) -> bool:
    return len([e for e in await events_of(bus, "ServiceStarted") if e.node == instance]) >= n


async def handled(bus: Bus, durable: str, seq: int) -> None:
    """Wait until the service's consumer acknowledged the message at stream sequence ``seq``."""

    async def acked() -> bool:
        info = await bus.js.consumer_info(EVENTS_STREAM, durable)
        return info.ack_floor.stream_seq >= seq

    await eventually(acked, timeout=45, what=f"{durable} to handle seq {seq}")


@contextlib.asynccontextmanager
async def service(
    bus: Bus, config: Path, instance: str = "dns-updater"
) -> AsyncIterator[asyncio.Task[None]]:
    before = len([e for e in await events_of(bus, "ServiceStarted") if e.node == instance])
    task = asyncio.create_task(run(DnsUpdaterSettings(instance=instance, config=config), bus))
    try:
        await eventually(
            lambda: task.done() or started(bus, instance, before + 1),
            timeout=30,
            what="the dns_updater to start",
        )
        if task.done():
            task.result()  # raises what made it stop
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
async def test_a_role_change_moves_the_name_and_a_second_moves_it_back(
    bus: Bus, named: BindServer, tmp_path: Path, protocol: str
) -> None:
    assert await named.addresses(APP) == PRIMARY
    config = write_config(tmp_path / "dns.toml", named, protocol=protocol)
    async with service(bus, config):
        to_secondary = role_changed("alpha", "secondary", 2, "primary")
        await bus.publish(to_secondary)
        [updated] = await count(bus, "DnsUpdated", 1)
        assert await named.addresses(APP) == SECONDARY
        assert updated.cluster == "alpha" and updated.node == "dns-updater"
        assert updated.epoch == 2 and updated.causation_id == to_secondary.id
        p = updated.payload
        assert p.name == "app.dr.tandem.test"
        assert p.addresses == ["10.1.0.5", "2001:db8:1::5"]
        assert p.ttl == 30
        assert p.verified_by == [f"127.0.0.1:{named.port}"]
        assert p.attempts == 1

        await bus.publish(role_changed("alpha", "primary", 3, "secondary"))
        back = (await count(bus, "DnsUpdated", 2))[1]
        assert await named.addresses(APP) == PRIMARY  # the AAAA record is gone too
        assert back.payload.addresses == ["10.0.0.5"] and back.epoch == 3
        assert await events_of(bus, "DnsUpdateFailed") == []


async def test_at_first_start_the_last_role_change_of_the_cluster_moves_each_of_its_names(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    # Published before the dns_updater ever ran (its durable consumer does not exist yet).
    await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
    await bus.publish(role_changed("alpha", "primary", 3, "secondary"))
    last = await bus.publish(role_changed("alpha", "secondary", 4, "primary"))
    www = name_entry("alpha", "www", {"primary": "10.0.0.8", "secondary": "10.1.0.8"})
    config = write_config(tmp_path / "dns.toml", named, ALPHA, www)
    async with service(bus, config):
        await handled(bus, "dns-updater-alpha", last.seq)
        updates = await events_of(bus, "DnsUpdated")
        assert {(u.payload.name, u.epoch) for u in updates} == {
            ("app.dr.tandem.test", 4),
            ("www.dr.tandem.test", 4),
        }
        assert await named.addresses(APP) == SECONDARY
        assert await named.addresses("www") == {"10.1.0.8"}
        info = await bus.js.consumer_info(EVENTS_STREAM, "dns-updater-alpha")
        assert info.num_pending == 0 and info.num_ack_pending == 0


async def test_the_same_role_change_again_gives_the_same_result_and_older_epochs_are_ignored(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "dns.toml", named)
    async with service(bus, config):
        first = role_changed("alpha", "secondary", 2, "primary")
        await bus.publish(first)
        await count(bus, "DnsUpdated", 1)
        assert await named.addresses(APP) == SECONDARY

        # The same role change published again (a new event): applied again, same result.
        again = first.model_copy(update={"id": "republished-role-change-2"})
        await bus.publish(again)
        updates = await count(bus, "DnsUpdated", 2)
        assert updates[1].payload == updates[0].payload
        assert updates[1].causation_id == again.id
        assert await named.addresses(APP) == SECONDARY

        # The very same event delivered once more (same id, as a redelivery): handled, and its
        # outcome, having the same id as the first time, is not recorded twice.
        ack = await bus.publish_raw(
            "tandem.evt.alpha.RoleChanged", first.to_json(), {"Nats-Msg-Id": "redelivery"}
        )
        await handled(bus, "dns-updater-alpha", ack.seq)
        assert len(await events_of(bus, "DnsUpdated")) == 2
        assert await named.addresses(APP) == SECONDARY

        # An older epoch: ignored, nothing recorded, the name stays.
        ack = await bus.publish(role_changed("alpha", "primary", 1))
        await handled(bus, "dns-updater-alpha", ack.seq)
        assert await named.addresses(APP) == SECONDARY
        assert len(await events_of(bus, "DnsUpdated")) == 2
        assert await events_of(bus, "DnsUpdateFailed") == []


async def test_a_wrong_key_is_reported_as_badsig_and_the_service_goes_on(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    wrong = write_key(tmp_path / "wrong.key")  # same key name, another secret
    config = write_config(
        tmp_path / "dns.toml", named, ALPHA + f'key_file = "{wrong}"\n', BETA_ENTRY
    )
    async with service(bus, config) as task:
        await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
        [failed] = await count(bus, "DnsUpdateFailed", 1)
        assert failed.cluster == "alpha" and failed.epoch == 2
        assert failed.payload.name == "app.dr.tandem.test"
        assert "BADSIG" in failed.payload.reason
        assert failed.payload.attempts == 1  # not retried: a wrong secret does not heal
        [alert] = await count(bus, "AlertRaised", 1)
        assert alert.payload.code == "dns.update_failed.app.dr.tandem.test"
        assert "BADSIG" in alert.payload.message
        assert await named.addresses(APP) == PRIMARY

        # The service goes on: another cluster's name moves...
        await bus.publish(role_changed("beta", "secondary", 2, "primary"))
        [updated] = await count(bus, "DnsUpdated", 1)
        assert updated.cluster == "beta" and updated.payload.name == "beta.dr.tandem.test"
        assert await named.addresses(BETA) == BETA_SECONDARY
        # ...and alpha's consumer still consumes (and still fails, with the same key).
        await bus.publish(role_changed("alpha", "primary", 3, "secondary"))
        second = (await count(bus, "DnsUpdateFailed", 2))[1]
        assert second.epoch == 3 and "BADSIG" in second.payload.reason
        assert not task.done()

    # Reconfigured with the right key (a restart, same durable consumers): the next works.
    write_config(tmp_path / "dns.toml", named, ALPHA, BETA_ENTRY)
    async with service(bus, config):
        await bus.publish(role_changed("alpha", "secondary", 4, "primary"))
        alpha_updates = await count(bus, "DnsUpdated", 1, cluster="alpha")
        assert alpha_updates[0].epoch == 4
        assert await named.addresses(APP) == SECONDARY
        cleared = await count(bus, "AlertCleared", 7, cluster="alpha")
        assert {c.payload.code for c in cleared} == {
            "dns.update_failed.app.dr.tandem.test",
            "dns.update_missing.app.dr.tandem.test",
            "dns.stale.app.dr.tandem.test",
        }
        # And an agent's, each under the node that would have raised it (its fingerprint):
        # the new Active's and the previous one's.
        assert {(c.node, c.payload.code) for c in cleared if c.node in PAIR} == {
            (node, f"dns.{problem}.app.dr.tandem.test")
            for node in PAIR
            for problem in ("update_missing", "update_failed")
        }


async def test_while_named_is_down_the_update_is_retried_until_it_is_back(
    bus: Bus, named: BindServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem.dns_updater")
    retry = "initial_s = 0.2\nmax_s = 1\nattempts = 200\ndeadline_s = 50"
    config = write_config(tmp_path / "dns.toml", named, retry=retry)
    async with service(bus, config):
        named.stop()
        await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
        await eventually(
            lambda: "attempt 2 failed" in caplog.text, timeout=30, what="a second failed attempt"
        )
        assert "connection refused" in caplog.text
        await asyncio.to_thread(named.start)
        [updated] = await count(bus, "DnsUpdated", 1)
        assert updated.payload.attempts is not None and updated.payload.attempts > 2
        assert await named.addresses(APP) == SECONDARY
        assert await events_of(bus, "DnsUpdateFailed") == []


async def test_when_named_stays_down_the_failure_is_recorded_after_the_last_attempt(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "dns.toml", named)  # attempts = 3
    named.stop()
    async with service(bus, config) as task:
        await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
        [failed] = await count(bus, "DnsUpdateFailed", 1)
        assert failed.payload.attempts == 3
        assert "gave up after 3 attempt(s)" in failed.payload.reason
        assert "connection refused" in failed.payload.reason
        assert not task.done()


async def test_a_name_not_seen_by_every_authoritative_server_is_a_failure(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    # A second named with its own copy of the zone: it never hears of the update.
    other = BindServer(tmp_path / "other", records=[f"{APP} IN A 10.0.0.5"]).start()
    try:
        servers = f'{{ address = "127.0.0.1", port = {named.port} }}, ' + (
            f'{{ address = "127.0.0.1", port = {other.port} }}'
        )
        verify = f"servers = [{servers}]\ntimeout_s = 1\ninterval_s = 0.1"
        config = write_config(tmp_path / "dns.toml", named, verify=verify)
        async with service(bus, config):
            await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
            [failed] = await count(bus, "DnsUpdateFailed", 1)
        reason = failed.payload.reason
        assert "applied but not seen" in reason
        assert f"127.0.0.1:{other.port}: [10.0.0.5]" in reason
        assert f"127.0.0.1:{named.port}:" not in reason  # that one did answer the new set
        assert await named.addresses(APP) == SECONDARY
    finally:
        other.stop()


async def test_a_node_without_an_address_is_reported(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "dns.toml", named)
    async with service(bus, config):
        await bus.publish(role_changed("alpha", "tertiary", 2, "primary"))
        [failed] = await count(bus, "DnsUpdateFailed", 1)
        assert "node tertiary has no address" in failed.payload.reason
        assert await named.addresses(APP) == PRIMARY


async def test_unreadable_messages_on_the_subject_go_to_the_dead_letter_stream(
    bus: Bus, named: BindServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "dns.toml", named)
    async with service(bus, config):
        await bus.publish_raw(
            "tandem.evt.alpha.RoleChanged", b'{"type": "RoleChanged", "version": 1}'
        )
        # A valid event of another type on the RoleChanged subject is no role change either.
        alert = b'{"type": "AlertRaised", "version": 1, "cluster": "alpha", "node": "n1", '
        alert += b'"payload": {"code": "x", "severity": "info", "message": "m"}}'
        await bus.publish_raw("tandem.evt.alpha.RoleChanged", alert)
        await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
        await count(bus, "DnsUpdated", 1)
        assert await named.addresses(APP) == SECONDARY

        info = await bus.js.stream_info(DLQ_STREAM)
        dead = [
            await bus.js.get_msg(DLQ_STREAM, s)
            for s in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        assert [m.subject for m in dead] == ["tandem.dlq.TANDEM_EVENTS.dns-updater-alpha"] * 2
        reasons = [m.headers["Tandem-Dlq-Reason"] for m in dead]
        assert reasons[0].startswith("undecodable:")
        assert "expected a RoleChanged of alpha, got AlertRaised" in reasons[1]


def service_env(nats_server: NatsServer, config: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TANDEM_BUS_SERVERS": nats_server.url,
        "TANDEM_DNS_UPDATER_CONFIG": str(config),
        "TANDEM_DNS_UPDATER_INSTANCE": "dns-proc",
        "TANDEM_LOG_LEVEL": "INFO",
    }


def start_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem.dns_updater"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def test_as_a_process(
    bus: Bus, named: BindServer, tmp_path: Path, nats_server: NatsServer
) -> None:
    config = write_config(tmp_path / "dns.toml", named)
    log = tmp_path / "dns_updater.log"
    proc = start_process(service_env(nats_server, config), log)
    try:
        await eventually(
            lambda: proc.poll() is not None or started(bus, "dns-proc"),
            timeout=45,
            what="the dns_updater process to start",
        )
        assert proc.poll() is None, log.read_text()
        await bus.publish(role_changed("alpha", "secondary", 2, "primary"))
        [updated] = await count(bus, "DnsUpdated", 1)
        assert updated.node == "dns-proc" and await named.addresses(APP) == SECONDARY
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0, log.read_text()
        [stopped] = await count(bus, "ServiceStopped", 1)
        assert stopped.node == "dns-proc" and stopped.payload.reason == "stopped on request"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_bad_config_stops_the_process_with_the_file_and_the_field(
    tmp_path: Path, named: BindServer, nats_server: NatsServer
) -> None:
    config = write_config(tmp_path / "dns.toml", named, ALPHA.replace("10.0.0.5", "10.0.0.500"))
    out = subprocess.run(
        [sys.executable, "-m", "tandem.dns_updater"],
        capture_output=True,
        text=True,
        timeout=60,
        env=service_env(nats_server, config),
    )
    assert out.returncode == 2, out.stderr
    assert str(config) in out.stderr and "names.0.addresses.primary" in out.stderr
    assert "'10.0.0.500' is not an IPv4 or IPv6 address" in out.stderr
