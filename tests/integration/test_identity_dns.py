"""DnsIdentity over a real nats-server: ``expose`` waits for the dns_updater's DnsUpdated that
points the DR name at this node's site address, counting only what was published since the
role change (even before ``expose`` was called), and applies ``on_missing`` with an
AlertRaised when the name is not confirmed in time or the update failed.

The timeouts configured here are short so the tests are quick; no assertion depends on speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers import eventually
from tandem.agent.control.base import ControlError
from tandem.agent.identity.dns import DnsIdentity
from tandem.events.bus import Bus
from tandem.events.catalog import AlertRaised, DnsUpdated, DnsUpdateFailed, RoleChanged
from tandem.events.catalog.dns import DnsUpdatedPayload, DnsUpdateFailedPayload
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.embedded import NatsServer
from tandem.events.envelope import Event
from tandem.events.registry import decode_event
from tandem.events.settings import load_bus_settings
from tandem.events.subjects import EVENTS_STREAM

CLUSTER, NODE, OTHER = "c1", "site-b", "site-a"
NAME, SITE, ELSEWHERE = "app.dr.example.com", "192.0.2.20", "198.51.100.10"


def role_changed(active: str = NODE, epoch: int = 2) -> RoleChanged:
    return RoleChanged(
        cluster=CLUSTER,
        node="orchestrator",
        epoch=epoch,
        payload=RoleChangedPayload(
            active_node=active, previous_active=OTHER, new_epoch=epoch, reason="failover"
        ),
    )


def dns_updated(
    name: str = NAME,
    addresses: tuple[str, ...] = (SITE,),
    verified_by: str = "ns1.example.com",
    cluster: str = CLUSTER,
) -> DnsUpdated:
    return DnsUpdated(
        cluster=cluster,
        node="dns-updater",
        payload=DnsUpdatedPayload(
            name=name, addresses=list(addresses), ttl=30, verified_by=[verified_by]
        ),
    )


def dns_failed(reason: str = "REFUSED from 192.0.2.53: update not authorised") -> DnsUpdateFailed:
    return DnsUpdateFailed(
        cluster=CLUSTER,
        node="dns-updater",
        payload=DnsUpdateFailedPayload(name=NAME, attempts=3, reason=reason),
    )


def identity(bus: Bus, **kw: Any) -> DnsIdentity:
    options: dict[str, Any] = {"wait_s": 10.0, **kw}
    return DnsIdentity(bus, CLUSTER, NODE, NAME, SITE, **options)


async def alerts(bus: Bus) -> list[AlertRaised]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out: list[AlertRaised] = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if info.state.messages == 0:
            break
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        event = decode_event(msg.data or b"")
        if isinstance(event, AlertRaised):
            out.append(event)
    return out


async def consumers(bus: Bus) -> int:
    return (await bus.js.stream_info(EVENTS_STREAM)).state.consumer_count


async def waiting(bus: Bus) -> None:
    """Until an expose is reading the stream (its consumer exists)."""

    async def has_one() -> bool:
        return await consumers(bus) > 0

    await eventually(has_one, what="the DNS wait's consumer")


# --- confirmed ----------------------------------------------------------------------------------


async def test_a_dns_updated_arriving_while_waiting_confirms_expose(bus: Bus) -> None:
    await bus.publish(role_changed())
    ident = identity(bus)
    task = asyncio.create_task(ident.expose())
    await waiting(bus)
    await bus.publish(dns_updated())
    status = await task
    assert (status.exposed, status.address) == (True, SITE)
    assert f"{NAME} points to {SITE}" in status.detail and "ns1.example.com" in status.detail
    assert (await ident.status()).exposed
    assert await alerts(bus) == []
    assert await consumers(bus) == 0  # the wait's consumer is deleted afterwards


async def test_an_update_published_before_expose_but_after_the_role_change_counts(
    bus: Bus,
) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_updated())  # the dns_updater was quicker than the saga's Expose step
    status = await identity(bus).expose()
    assert status.exposed and f"points to {SITE}" in status.detail


async def test_an_update_from_before_the_role_change_does_not_count(bus: Bus) -> None:
    # This node was Active at epoch 1 and the name pointed here; the move to OTHER at epoch 2
    # left no DNS event. Now Active again at epoch 3: the old update says nothing about now.
    await bus.publish(role_changed(active=NODE, epoch=1))
    await bus.publish(dns_updated(verified_by="stale"))
    await bus.publish(role_changed(active=OTHER, epoch=2))
    await bus.publish(role_changed(active=NODE, epoch=3))
    with pytest.raises(ControlError, match=f"no DnsUpdated for {NAME} naming {SITE}"):
        await identity(bus, wait_s=0.5, on_missing="fail").expose()


async def test_names_compare_without_case_or_trailing_dot_and_any_cluster_counts(
    bus: Bus,
) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_updated(name="App.DR.Example.com.", cluster="tandem"))
    assert (await identity(bus).expose()).exposed


async def test_without_a_role_change_recent_updates_count(bus: Bus) -> None:
    # First pairing (or RoleChanged aged out): the window is the last lookback_s seconds.
    await bus.publish(dns_updated(addresses=(ELSEWHERE, SITE)))
    status = await identity(bus, lookback_s=300).expose()
    assert status.exposed and "points to" in status.detail


async def test_other_names_and_other_addresses_are_ignored(bus: Bus) -> None:
    await bus.publish(role_changed())
    ident = identity(bus)
    task = asyncio.create_task(ident.expose())
    await waiting(bus)
    await bus.publish(dns_updated(name="other.dr.example.com", verified_by="wrong-name"))
    await bus.publish(dns_updated(addresses=(ELSEWHERE,), verified_by="wrong-address"))
    await bus.publish(dns_updated(verified_by="the-right-one"))
    status = await task
    assert status.exposed and "verified by the-right-one" in status.detail


async def test_only_wrong_updates_end_in_the_timeout_naming_what_was_seen(bus: Bus) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_updated(name="other.dr.example.com"))
    await bus.publish(dns_updated(addresses=(ELSEWHERE,)))
    status = await identity(bus, wait_s=0.5).expose()
    assert status.exposed and "not confirmed" in status.detail
    assert f"last seen: {NAME} points to {ELSEWHERE}" in status.detail


# --- not confirmed: on_missing ------------------------------------------------------------------


async def test_timeout_with_continue_exposes_and_raises_an_alert(bus: Bus) -> None:
    await bus.publish(role_changed(epoch=4))
    ident = identity(bus, wait_s=0.3, on_missing="continue")
    status = await ident.expose()
    assert (status.exposed, status.address) == (True, SITE)
    assert f"{NAME} not confirmed" in status.detail and "on_missing = continue" in status.detail
    assert (await ident.status()).exposed
    [alert] = await alerts(bus)
    p = alert.payload
    assert (p.code, p.severity, alert.node, alert.epoch) == (
        f"dns.update_missing.{NAME}",
        Severity.WARNING,
        NODE,
        4,
    )
    assert f"no DnsUpdated for {NAME} naming {SITE}" in p.message
    assert p.details == {"name": NAME, "address": SITE, "on_missing": "continue", "wait_s": 0.3}


async def test_timeout_with_fail_raises_control_error_and_an_alert(bus: Bus) -> None:
    await bus.publish(role_changed())
    ident = identity(bus, wait_s=0.3, on_missing="fail")
    with pytest.raises(ControlError, match=f"no DnsUpdated for {NAME}"):
        await ident.expose()
    assert not (await ident.status()).exposed
    [alert] = await alerts(bus)
    assert (alert.payload.code, alert.payload.severity) == (
        f"dns.update_missing.{NAME}",
        Severity.CRITICAL,
    )


async def test_a_failed_update_fails_at_once_with_its_reason(bus: Bus) -> None:
    await bus.publish(role_changed())
    ident = identity(bus, wait_s=60, on_missing="fail")
    task = asyncio.create_task(ident.expose())
    await waiting(bus)
    await bus.publish(dns_failed())
    # Long before wait_s: the reason is the dns_updater's, not the timeout's.
    with pytest.raises(ControlError, match=r"after 3 attempt\(s\): REFUSED from 192\.0\.2\.53"):
        await task
    [alert] = await alerts(bus)
    assert alert.payload.code == f"dns.update_failed.{NAME}"
    assert "update not authorised" in alert.payload.message


async def test_a_failed_update_with_continue_exposes_saying_why(bus: Bus) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_failed("SERVFAIL from every primary"))
    status = await identity(bus, wait_s=60, on_missing="continue").expose()
    assert status.exposed and "SERVFAIL from every primary" in status.detail
    assert [a.payload.code for a in await alerts(bus)] == [f"dns.update_failed.{NAME}"]


async def test_a_later_success_overrides_an_earlier_failure(bus: Bus) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_failed())
    await bus.publish(dns_updated())  # the latest word for the name decides
    status = await identity(bus, on_missing="fail").expose()
    assert status.exposed and await alerts(bus) == []


async def test_alerts_go_to_emit_when_given(bus: Bus) -> None:
    await bus.publish(role_changed())
    emitted: list[Event] = []
    status = await identity(bus, wait_s=0.2, emit=emitted.append).expose()
    assert status.exposed
    assert [type(e).__name__ for e in emitted] == ["AlertRaised"]
    assert await alerts(bus) == []


async def test_a_bus_that_is_gone_is_a_missing_confirmation(nats_server: NatsServer) -> None:
    gone = await Bus.connect(load_bus_settings(servers=[nats_server.url]), name="tandem-test")
    await gone.close()
    emitted: list[Event] = []
    status = await identity(gone, wait_s=5, emit=emitted.append).expose()
    assert status.exposed and "could not read DNS events from the bus" in status.detail
    [alert] = emitted
    assert isinstance(alert, AlertRaised) and alert.payload.code == f"dns.update_missing.{NAME}"


# --- hide, idempotency --------------------------------------------------------------------------


async def test_expose_again_and_hide_are_idempotent(bus: Bus) -> None:
    await bus.publish(role_changed())
    await bus.publish(dns_updated())
    ident = identity(bus)
    assert (await ident.reset_on_start()).detail == "hidden at start"
    assert (await ident.expose()).exposed
    again = await ident.expose()
    assert (again.exposed, again.detail) == (True, "already exposed")
    hidden = await ident.hide()
    assert (hidden.exposed, hidden.detail) == (False, "hidden")
    assert (await ident.hide()).detail == "already hidden"
    status = await ident.status()
    assert (status.exposed, status.address) == (False, None)


async def test_hide_does_not_wait_behind_an_expose_and_voids_it(bus: Bus) -> None:
    await bus.publish(role_changed())
    ident = identity(bus, wait_s=60)
    task = asyncio.create_task(ident.expose())
    await waiting(bus)
    hidden = await ident.hide()  # self-fencing while the expose still waits for DNS
    assert (hidden.exposed, hidden.detail) == (False, "already hidden")
    with pytest.raises(ControlError, match="hidden while waiting for its DNS update"):
        await task
    assert not (await ident.status()).exposed
    assert await alerts(bus) == []


async def test_a_new_role_change_needs_a_new_confirmation(bus: Bus) -> None:
    await bus.publish(role_changed(epoch=2))
    await bus.publish(dns_updated())
    ident = identity(bus, wait_s=0.3, on_missing="fail")
    assert (await ident.expose()).exposed
    await bus.publish(role_changed(epoch=3))  # Active again at a later epoch, never hidden
    with pytest.raises(ControlError, match="no DnsUpdated"):
        await ident.expose()


async def test_bad_settings_are_refused(bus: Bus) -> None:
    with pytest.raises(ValueError, match="on_missing"):
        identity(bus, on_missing="ignore")
    with pytest.raises(ValueError):
        DnsIdentity(bus, CLUSTER, NODE, NAME, "not-an-ip")
