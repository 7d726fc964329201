"""The LAN identity without root: the ``[public]`` lan config and its checks, the nftables
JSON the identity feeds to ``nft -j -f -`` and its reading of ``nft -j list table``, nft's
failures as ``ControlError`` (with a stand-in nft)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tandem.agent.config import PublicIdentityConfig
from tandem.agent.control.base import ControlError
from tandem.agent.identity.linux import LinuxLanIdentity
from tandem.agent.identity.nftables import (
    Nft,
    families_for,
    hide_batch,
    parse_table,
    remove_batch,
    table_name_for,
)


def lan(**fields: Any) -> PublicIdentityConfig:
    return PublicIdentityConfig(
        kind="lan", **{"address": "10.0.0.100", "interface": "eth0", **fields}
    )


def test_prefix_defaults_to_the_address_alone() -> None:
    assert lan().prefix_len == 32
    assert lan(address="fd00::100").prefix_len == 128
    assert lan(prefix_len=24).prefix_len == 24
    # Other kinds keep it unset.
    assert PublicIdentityConfig(kind="loopback").prefix_len is None


def test_single_or_dual_nic() -> None:
    assert lan().channel_interface is None
    assert lan(channel_interface="eth0").channel_interface == "eth0"  # same NIC: single
    assert lan(interface="eth1", channel_interface="eth0").channel_interface == "eth0"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": None}, "needs address"),
        ({"interface": None}, "needs interface"),
        ({"address": "not-an-ip"}, "is not an IPv4 or IPv6 address"),
        ({"address": "10.0.0.0/24"}, "is not an IPv4 or IPv6 address"),
        ({"address": "0.0.0.0"}, "cannot be a shared public address"),
        ({"address": "127.0.0.5"}, "cannot be a shared public address"),
        ({"address": "224.0.0.9"}, "cannot be a shared public address"),
        ({"address": "fe80::1"}, "cannot be a shared public address"),
        ({"prefix_len": 33}, "prefix_len 33 is too long for IPv4"),
        ({"interface": "a-name-far-too-long"}, "interface 'a-name-far-too-long' is not a valid"),
        ({"interface": "eth 0"}, "is not a valid Linux interface name"),
        ({"channel_interface": "br/0"}, "channel_interface 'br/0' is not a valid"),
    ],
)
def test_bad_lan_configs_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        lan(**fields)


def test_channel_interface_is_for_the_lan_identity_only() -> None:
    with pytest.raises(ValidationError, match="channel_interface is for the lan identity only"):
        PublicIdentityConfig(kind="loopback", channel_interface="eth0")


def test_table_names_are_safe_for_nft() -> None:
    assert table_name_for("erp-db") == "tandem_erp_db"
    assert table_name_for("a" * 63) == ("tandem_" + "a" * 63)[:64]


def _commands(batch: dict[str, Any], verb: str, kind: str) -> list[dict[str, Any]]:
    return [c[verb][kind] for c in batch["nftables"] if verb in c and kind in c[verb]]


def test_hide_batch_ipv4_drops_source_and_arp_sender_of_the_public_address_only() -> None:
    batch = hide_batch("tandem_c", "10.0.0.100")
    assert [t["family"] for t in _commands(batch, "add", "table")] == ["inet", "arp"]
    # Flushed in the same transaction: re-hiding replaces, never piles up rules.
    assert [t["family"] for t in _commands(batch, "flush", "table")] == ["inet", "arp"]
    chains = _commands(batch, "add", "chain")
    assert {(c["family"], c["hook"], c["type"], c["policy"]) for c in chains} == {
        ("inet", "output", "filter", "accept"),
        ("arp", "output", "filter", "accept"),
    }
    inet, arp = _commands(batch, "add", "rule")
    assert inet["expr"][0] == {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "ip", "field": "saddr"}},
            "right": "10.0.0.100",
        }
    }
    assert arp["expr"][0]["match"]["left"] == {"payload": {"protocol": "arp", "field": "saddr ip"}}
    for rule in (inet, arp):
        assert rule["expr"][1:] == [{"counter": {"packets": 0, "bytes": 0}}, {"drop": None}]
    json.dumps(batch)  # what nft reads


def test_hide_batch_ipv6_uses_inet_only_and_drops_a_stale_arp_table() -> None:
    batch = hide_batch("tandem_c", "fd00::100")
    (rule,) = _commands(batch, "add", "rule")
    assert rule["family"] == "inet"
    assert rule["expr"][0]["match"]["left"] == {"payload": {"protocol": "ip6", "field": "saddr"}}
    assert _commands(batch, "delete", "table") == [{"family": "arp", "name": "tandem_c"}]
    assert families_for("fd00::100") == ("inet",)
    assert families_for("10.0.0.1") == ("inet", "arp")


def test_remove_batch_never_fails_on_an_absent_table() -> None:
    batch = remove_batch("tandem_c")
    # add-then-delete per family: nft 1.0.6 has no "destroy".
    assert batch["nftables"] == [
        {"add": {"table": {"family": "inet", "name": "tandem_c"}}},
        {"delete": {"table": {"family": "inet", "name": "tandem_c"}}},
        {"add": {"table": {"family": "arp", "name": "tandem_c"}}},
        {"delete": {"table": {"family": "arp", "name": "tandem_c"}}},
    ]


def _listing(family: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``nft -j list table`` prints (metainfo, table, chain, rules with handles)."""
    items: list[dict[str, Any]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": family, "name": "tandem_c", "handle": 1}},
        {"chain": {"family": family, "table": "tandem_c", "name": "out", "handle": 1}},
    ]
    return {"nftables": items + [{"rule": {**r, "handle": 2 + n}} for n, r in enumerate(rules)]}


def test_parse_reads_back_what_hide_writes_with_counters() -> None:
    batch = hide_batch("tandem_c", "10.0.0.100")
    inet_rule, arp_rule = _commands(batch, "add", "rule")
    inet_rule["expr"][1] = {"counter": {"packets": 7, "bytes": 588}}
    inet = parse_table("inet", _listing("inet", [inet_rule]))
    arp = parse_table("arp", _listing("arp", [arp_rule]))
    assert inet.present and arp.present
    found = inet.drops_for("10.0.0.100")
    assert found is not None and found.packets == 7
    assert inet.drops_for("10.0.0.1") is None
    assert arp.drops_for("10.0.0.100") is not None


def test_parse_ignores_rules_it_did_not_write() -> None:
    accept = {
        "expr": [{"match": {"op": "==", "left": {}, "right": "10.0.0.100"}}, {"accept": None}]
    }
    a_set = {"expr": [{"match": {"left": {"payload": {"field": "saddr"}}, "right": "@s"}}]}
    table = parse_table("inet", _listing("inet", [accept, a_set]))
    assert table.present and table.drops == []
    assert not parse_table("inet", None).present


def fake_nft(tmp_path: Path, stderr: str, code: int) -> str:
    script = tmp_path / "nft"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{stderr}' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


async def test_nft_failures_are_control_errors(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="needs nftables"):
        await Nft(str(tmp_path / "missing")).apply(remove_batch("t"))
    denied = Nft(fake_nft(tmp_path, "Error: Operation not permitted", 1))
    with pytest.raises(ControlError, match="CAP_NET_ADMIN"):
        await denied.apply(hide_batch("t", "10.0.0.1"))
    with pytest.raises(ControlError, match="cannot list table"):
        await denied.list_table("inet", "t")


async def test_an_absent_table_is_not_an_error(tmp_path: Path) -> None:
    absent = Nft(fake_nft(tmp_path, "Error: No such file or directory", 1))
    state = await absent.state("t")
    assert not state.any_present and not state.installed_for("10.0.0.1")


def stand_in(tmp_path: Path, name: str, body: str) -> str:
    script = tmp_path / name
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def announcer(arping: str, timeout_s: float = 10.0, count: int = 1) -> LinuxLanIdentity:
    return LinuxLanIdentity(
        "10.0.0.100",
        None,
        "eth0",
        "tandem_t",
        arping=arping,
        timeout_s=timeout_s,
        announce_count=count,
    )


async def test_the_announcement_repeats_as_configured_in_the_background(tmp_path: Path) -> None:
    """Expose does not wait for the announcements (arping waits a second after each one);
    the configured count and interval reach arping."""
    record = tmp_path / "argv"
    arping = stand_in(tmp_path, "arping-records", f'sleep 1; echo "$@" > {record}')
    identity = announcer(arping, count=3)
    said = identity.reannounce()
    assert said == "announcing by gratuitous ARP (3 times, 1s apart)"
    assert not record.exists()  # still running: the caller did not wait
    assert identity._announcing is not None
    assert await identity._announcing == "announced by gratuitous ARP"
    assert record.read_text().split() == [
        "-U", "-c", "3", "-i", "1", "-I", "eth0", "-s", "10.0.0.100", "10.0.0.100"
    ]  # fmt: skip


async def test_a_failed_announcement_is_said_not_raised(tmp_path: Path) -> None:
    """arping (a stand-in here; the real one runs in the namespace tests) missing, failing or
    hanging: the exposure stands, and the detail says why clients were not told."""
    missing = await announcer(str(tmp_path / "no-arping"))._announce()
    assert missing.startswith("not announced: cannot run")
    failing = stand_in(tmp_path, "arping-fails", "echo 'arping: bad interface' >&2; exit 2")
    assert await announcer(failing)._announce() == "announcement failed: arping: bad interface"
    hanging = stand_in(tmp_path, "arping-hangs", "exec sleep 30")
    slow = await announcer(hanging, timeout_s=0.2)._announce()
    assert slow.startswith("not announced:") and "did not finish within 0.2s" in slow
    works = stand_in(tmp_path, "arping-works", "exit 0")
    assert await announcer(works)._announce() == "announced by gratuitous ARP"
