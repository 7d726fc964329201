"""Each bus identity can do its job and no more (issue 17), on a real nats-server that
requires a login and TLS. Every refusal is checked twice: the operation fails, and the
server reported a permissions violation for exactly that subject (so a test cannot pass
because of an unrelated failure, and fails if the permission were loosened)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

from bus_security_rig import Client, SecuredBus, start_secured_bus
from conftest import reset_bus
from helpers import alert, eventually
from tandem.events import subjects
from tandem.events.bus import Bus
from tandem.events.bus_identities import (
    ADMIN,
    DNS_UPDATER,
    ORCHESTRATOR,
    VIEWER,
    agent_user,
    journal_durable,
)
from tandem.events.catalog.commands import Ping, PingPayload
from tandem.events.catalog.dns import DnsUpdated
from tandem.events.connection import InsecureBusError
from tandem.events.embedded import NatsServer
from tandem.events.envelope import Command, CommandResult
from tandem.events.errors import CasConflictError
from tandem.events.kv import compare_and_set
from tandem.events.roles import RoleRecord, read_role
from tandem.events.rpc import CommandServer, NoAnswerError, send_command
from tandem.events.settings import load_bus_settings, load_stream_settings

AGENT_A = agent_user("c1", "a")
AGENT_B = agent_user("c1", "b")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, nats_binary: str) -> Iterator[SecuredBus]:
    bus = start_secured_bus(tmp_path_factory.mktemp("secured"))
    yield bus
    bus.server.stop()


@pytest.fixture
async def admin(secured: SecuredBus) -> AsyncIterator[Client]:
    """Fresh streams and buckets, provisioned by the admin (the only identity that may)."""
    client = await secured.connect(ADMIN)
    await reset_bus(client.bus)
    await client.bus.provision(load_stream_settings())
    yield client
    await client.close()


@pytest.fixture
async def clients(secured: SecuredBus, admin: Client) -> AsyncIterator[dict[str, Client]]:
    opened: dict[str, Client] = {}
    for user in (AGENT_A, AGENT_B, ORCHESTRATOR, VIEWER, DNS_UPDATER):
        opened[user] = await secured.connect(user)
    yield opened
    for client in opened.values():
        await client.close()


def ping(cluster: str, node: str) -> Ping:
    return Ping(cluster=cluster, node=node, payload=PingPayload(note="who is there"))


async def answering(client: Client, cluster: str, node: str, seen: list[str]) -> CommandServer:
    async def handle(command: Command) -> CommandResult:
        seen.append(command.id)
        return CommandResult(
            command_id=command.id, idempotency_key=command.idempotency_key, ok=True
        )

    server = CommandServer(client.bus, cluster, node, handle, lambda: 0)
    await server.start()
    await client.bus.nc.flush()  # the subscription is in place before anyone asks
    return server


async def arrives(receiver: Client, sender: Client, subject: str) -> None:
    """``sender`` publishes on ``subject`` until ``receiver``'s subscription gets it.

    Sent again and again because nats-server 2.15 now and then misses a subscription made
    (and flushed) after the publisher connected, for a moment: a few in a hundred here."""
    got: list[bytes] = []

    async def on_message(msg: Msg) -> None:
        got.append(msg.data)

    await receiver.bus.nc.subscribe(subject, cb=on_message)
    await receiver.bus.nc.flush()

    async def sent_and_seen() -> bool:
        await sender.bus.nc.publish(subject, b"hello")
        return bool(got)

    await eventually(sent_and_seen, 5, f"{subject} from {sender.user} to {receiver.user}")
    assert receiver.violations() == [] and sender.violations() == []


async def stored(admin: Bus, subject: str) -> int:
    """How many messages of the events stream are on ``subject`` (a filter)."""
    info = await admin.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


# -- logging in ---------------------------------------------------------------------------------


async def test_a_client_without_credentials_cannot_connect(secured: SecuredBus) -> None:
    anonymous = load_bus_settings(
        servers=[secured.server.url], tls_ca_file=secured.tls.ca_cert, max_reconnect_attempts=0
    )
    with pytest.raises(ConnectionError, match="Authorization Violation"):
        await Bus.connect(anonymous)


async def test_a_wrong_password_is_refused(secured: SecuredBus) -> None:
    wrong = secured.settings(VIEWER, password="not-the-password")
    with pytest.raises(ConnectionError, match="Authorization Violation"):
        await Bus.connect(wrong)


async def test_a_server_without_logins_is_refused_unless_insecure_bus(
    secured: SecuredBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    open_server = NatsServer(store_dir=tmp_path / "open", name="open").start()
    try:
        plain = {"servers": [open_server.url], "max_reconnect_attempts": 0}
        with pytest.raises(InsecureBusError, match="without a login"):
            await Bus.connect(load_bus_settings(**plain))  # refused by default
        with caplog.at_level(logging.WARNING, logger="tandem.events.connection"):
            async with await Bus.connect(load_bus_settings(insecure_bus=True, **plain)) as bus:
                assert bus.nc.is_connected
        assert "lets anyone in without a login" in caplog.text  # said in every start log
    finally:
        open_server.stop()
    async with await Bus.connect(secured.settings(VIEWER, max_reconnect_attempts=0)) as bus:
        assert bus.nc.is_connected


# -- a node agent --------------------------------------------------------------------------------


async def test_an_agent_publishes_its_heartbeat_events_and_journal(
    admin: Client, clients: dict[str, Client]
) -> None:
    agent = clients[AGENT_A]
    await arrives(admin, agent, subjects.heartbeat_subject("c1", "a"))

    ack = await agent.bus.publish(alert(cluster="c1"))
    assert ack.stream == subjects.EVENTS_STREAM
    journal = await agent.bus.js.publish(subjects.journal_subject("c1"), b"batch")
    assert journal.stream == subjects.JOURNAL_STREAM
    assert agent.violations() == []


async def test_an_agent_answers_its_own_commands_and_cannot_command_another_node(
    clients: dict[str, Client],
) -> None:
    seen_a: list[str] = []
    seen_b: list[str] = []
    await answering(clients[AGENT_A], "c1", "a", seen_a)
    await answering(clients[AGENT_B], "c1", "b", seen_b)
    # The orchestrator commands a node, and the node's answer comes back.
    result = await send_command(
        clients[ORCHESTRATOR].bus, ping("c1", "a"), timeout=1, retry_for_s=10
    )
    assert result.ok and len(seen_a) == 1

    agent = clients[AGENT_A]
    with pytest.raises(NoAnswerError):
        await send_command(agent.bus, ping("c1", "b"), timeout=1)
    assert agent.refused("publish", "tandem.cmd.c1.b.Ping")
    assert seen_b == []  # b never saw it


async def test_an_agent_cannot_listen_to_another_nodes_commands(
    clients: dict[str, Client],
) -> None:
    agent = clients[AGENT_A]
    await agent.bus.nc.subscribe(subjects.commands_filter("c1", "b"))
    assert await agent.wait_refused("subscription", "tandem.cmd.c1.b.*")


async def test_an_agent_cannot_publish_into_another_cluster_or_as_another_node(
    admin: Client, clients: dict[str, Client]
) -> None:
    agent = clients[AGENT_A]
    with pytest.raises(TimeoutError):
        await agent.bus.publish(alert(cluster="c2"), timeout=1)
    assert agent.refused("publish", "tandem.evt.c2.AlertRaised")
    assert await stored(admin.bus, "tandem.evt.c2.>") == 0

    with pytest.raises(TimeoutError):
        await agent.bus.js.publish(subjects.journal_subject("c2"), b"batch", timeout=1)
    assert agent.refused("publish", "tandem.jrnl.c2")

    await agent.bus.nc.publish(subjects.heartbeat_subject("c1", "b"), b"forged")
    assert await agent.wait_refused("publish", "tandem.hb.c1.b")


async def test_an_agent_reads_its_role_record_and_cannot_change_tandem_roles(
    admin: Client, clients: dict[str, Client]
) -> None:
    agent = clients[AGENT_A]
    kv = await agent.bus.kv(subjects.ROLES_BUCKET)
    # Not even the first claim: no record exists yet.
    with pytest.raises(TimeoutError):
        await compare_and_set(
            kv, "c1", RoleRecord(active="a", epoch=1).model_dump_json().encode(), None
        )
    assert agent.refused("publish", "$KV.tandem_roles.c1")

    roles = await admin.bus.kv(subjects.ROLES_BUCKET)
    revision = await roles.create("c1", RoleRecord(active="b", epoch=1).model_dump_json().encode())
    record, seen_revision = await read_role(kv, "c1")
    assert record == RoleRecord(active="b", epoch=1) and seen_revision == revision

    with pytest.raises(TimeoutError):
        await compare_and_set(
            kv, "c1", RoleRecord(active="a", epoch=2).model_dump_json().encode(), revision
        )
    with pytest.raises(TimeoutError):
        await kv.put("c2", b"{}")
    assert agent.refused("publish", "$KV.tandem_roles.c2")
    assert (await read_role(roles, "c1"))[0] == RoleRecord(active="b", epoch=1)


async def test_an_agent_renews_its_own_lease_only(clients: dict[str, Client]) -> None:
    agent = clients[AGENT_A]
    leases = await agent.bus.kv(subjects.LEASES_BUCKET)
    await leases.put(subjects.node_lease_key("c1", "a"), b"alive")
    with pytest.raises(TimeoutError):
        await leases.put(subjects.node_lease_key("c1", "b"), b"forged")
    assert agent.refused("publish", "$KV.tandem_leases.node.c1.b")


async def test_an_agent_reads_its_journal_through_its_own_durable_consumer(
    admin: Client, clients: dict[str, Client]
) -> None:
    await admin.bus.js.publish(subjects.journal_subject("c1"), b"batch 1")
    agent = clients[AGENT_A]
    durable = journal_durable("c1", "a")
    # Its consumer cannot be made to read another cluster's journal.
    with pytest.raises(TimeoutError):
        await agent.bus.js.pull_subscribe(
            subjects.journal_subject("c2"), durable=durable, stream=subjects.JOURNAL_STREAM
        )
    assert agent.refused(
        "publish", f"$JS.API.CONSUMER.CREATE.TANDEM_JOURNAL.{durable}.tandem.jrnl.c2"
    )
    sub = await agent.bus.js.pull_subscribe(
        subjects.journal_subject("c1"),
        durable=durable,
        stream=subjects.JOURNAL_STREAM,
        config=ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT),
    )
    msgs = await sub.fetch(1, timeout=2)
    assert [m.data for m in msgs] == [b"batch 1"]
    await msgs[0].ack_sync(timeout=2)
    # Another node's durable is not its to use.
    other = journal_durable("c1", "b")
    with pytest.raises(TimeoutError):
        await agent.bus.js.pull_subscribe(
            subjects.journal_subject("c1"), durable=other, stream=subjects.JOURNAL_STREAM
        )
    assert agent.refused("publish", f"$JS.API.CONSUMER.INFO.TANDEM_JOURNAL.{other}")


async def test_services_find_the_streams_an_admin_provisioned(clients: dict[str, Client]) -> None:
    """Provisioning at a service's start only looks, without the rights to create."""
    lines = await clients[AGENT_A].bus.provision(load_stream_settings(), update_existing=False)
    assert "stream TANDEM_EVENTS unchanged" in lines
    assert "bucket tandem_roles ready" in lines
    assert clients[AGENT_A].violations() == []


async def test_a_service_says_why_when_a_stream_is_missing(
    admin: Client, clients: dict[str, Client]
) -> None:
    await admin.bus.js.delete_stream(subjects.DLQ_STREAM)
    with pytest.raises(TimeoutError, match="cannot create it"):
        await clients[AGENT_A].bus.provision(load_stream_settings(), update_existing=False)
    assert clients[AGENT_A].refused("publish", "$JS.API.STREAM.CREATE.TANDEM_DLQ")


# -- the orchestrator ----------------------------------------------------------------------------


async def test_the_orchestrator_writes_role_records_but_cannot_change_streams(
    clients: dict[str, Client],
) -> None:
    orchestrator = clients[ORCHESTRATOR]
    kv = await orchestrator.bus.kv(subjects.ROLES_BUCKET)
    first = await compare_and_set(
        kv, "c1", RoleRecord(active="a", epoch=1).model_dump_json().encode(), None
    )
    await compare_and_set(
        kv, "c1", RoleRecord(active="b", epoch=2).model_dump_json().encode(), first
    )
    with pytest.raises(CasConflictError):  # a CAS on a stale revision still loses, as it should
        await compare_and_set(kv, "c1", b"{}", first)
    assert (await read_role(kv, "c1"))[0] == RoleRecord(active="b", epoch=2)

    with pytest.raises(TimeoutError):
        await orchestrator.bus.js.delete_stream(subjects.EVENTS_STREAM)
    assert orchestrator.refused("publish", "$JS.API.STREAM.DELETE.TANDEM_EVENTS")


# -- services that follow events, and the viewer ------------------------------------------------


async def test_the_dns_updater_publishes_its_own_event_types_only(
    admin: Client, clients: dict[str, Client]
) -> None:
    dns = clients[DNS_UPDATER]
    updated = DnsUpdated.model_validate(
        {
            "cluster": "c2",
            "node": "x",
            "payload": {
                "name": "app.example.",
                "addresses": ["192.0.2.1"],
                "ttl": 30,
                "verified_by": [],
            },
        }
    )
    await dns.bus.publish(updated)
    with pytest.raises(TimeoutError):
        await dns.bus.js.publish(subjects.event_subject("c1", "RoleChanged"), b"{}", timeout=1)
    assert dns.refused("publish", "tandem.evt.c1.RoleChanged")
    assert await stored(admin.bus, "tandem.evt.c1.RoleChanged") == 0


async def test_a_viewer_reads_events_and_cannot_publish(
    admin: Client, clients: dict[str, Client]
) -> None:
    viewer = clients[VIEWER]
    await admin.bus.publish(alert(cluster="c1", n=1))  # the first in the stream
    await arrives(viewer, admin, subjects.event_subject("c1", "AlertRaised"))

    replay = await viewer.bus.js.subscribe(
        subjects.EVENTS_ALL,
        stream=subjects.EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    assert b"AlertRaised" in (await replay.next_msg(timeout=2)).data
    await replay.unsubscribe()

    with pytest.raises(TimeoutError):
        await viewer.bus.publish(alert(cluster="c1", n=2), timeout=1)
    assert viewer.refused("publish", "tandem.evt.c1.AlertRaised")
    with pytest.raises(NoAnswerError):
        await send_command(viewer.bus, ping("c1", "a"), timeout=1)
    assert viewer.refused("publish", "tandem.cmd.c1.a.Ping")
    with pytest.raises(TimeoutError):  # a KV put is a publish to the key's subject
        await viewer.bus.js.publish("$KV.tandem_config.rules.c1.a.x", b"disabled", timeout=1)
    await viewer.bus.nc.publish(subjects.heartbeat_subject("c1", "a"), b"forged")
    assert await viewer.wait_refused("publish", "tandem.hb.c1.a")
    await eventually(lambda: viewer.refused("publish", "$KV.tandem_config.rules.c1.a.x"))


async def test_the_orchestrator_makes_the_lease_bucket_again_after_the_bus_lost_it(
    admin: Client, clients: dict[str, Client]
) -> None:
    """``tandem_leases`` lives in memory: a whole bus restarted is without it, and no node
    could renew its lease until an operator provisioned again. The orchestrator's lease
    watch makes it again (its identity may create that one stream, and no other)."""
    from tandem.events.provisioning import restore_bucket
    from tandem.orchestrator.liveness import Liveness

    await admin.bus.js.delete_key_value(subjects.LEASES_BUCKET)  # what a restart leaves
    orchestrator = clients[ORCHESTRATOR].bus
    liveness = Liveness(
        orchestrator,
        default_timeout_s=1.0,
        restore_leases=lambda: restore_bucket(
            orchestrator.js, load_stream_settings(), subjects.LEASES_BUCKET
        ),
    )
    await liveness.follow_leases()
    info = await admin.bus.js.stream_info(f"KV_{subjects.LEASES_BUCKET}")
    assert info.config.storage == StorageType.MEMORY
    agent = clients[AGENT_A].bus
    agent._kv.clear()
    kv = await agent.kv(subjects.LEASES_BUCKET)
    assert await kv.put("node.c1.a", b'{"ttl_s": 1.5}') > 0  # the node renews again
    await liveness.follow_leases()
    await eventually(
        lambda: (
            liveness.seen.get(("c1", "a")) is not None
            and liveness.seen[("c1", "a")].lease_revision is not None
        ),
        10,
        "the orchestrator to see the renewal",
    )
