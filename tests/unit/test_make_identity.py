"""The ``[public]`` section chooses the identity the agent builds: loopback, Linux or Windows
LAN, or the DR DNS name, with the section's settings passed on. Construction only (no
network is touched); what each identity does is tested in its own module (Linux in network
namespaces, DNS on the real bus and with the real dns_updater and named)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import ValidationError

from tandem.agent.config import NodeConfig
from tandem.agent.identity.dns import DnsIdentity
from tandem.agent.identity.linux import LinuxLanIdentity
from tandem.agent.identity.loopback import LoopbackIdentity
from tandem.agent.identity.windows import WindowsLanIdentity
from tandem.agent.service import make_identity
from tandem.events.bus import Bus
from tandem.events.envelope import Event

# DnsIdentity only keeps the bus until expose; no call is made on it here.
UNUSED_BUS = cast(Bus, object())


def node(tmp_path: Path, public: dict[str, Any]) -> NodeConfig:
    return NodeConfig(
        cluster="erp-db", node="n1", identity="primary", state_dir=tmp_path, public=public
    )


def test_loopback_is_the_default(tmp_path: Path) -> None:
    ident = make_identity(
        NodeConfig(cluster="c", node="n", identity="primary", state_dir=tmp_path), UNUSED_BUS
    )
    assert isinstance(ident, LoopbackIdentity)


def test_lan_on_linux_builds_the_netlink_identity(tmp_path: Path) -> None:
    public = {"kind": "lan", "address": "10.0.0.100", "interface": "eth1", "platform": "linux"}
    ident = make_identity(node(tmp_path, {**public, "channel_interface": "eth0"}), UNUSED_BUS)
    assert isinstance(ident, LinuxLanIdentity)
    assert (ident.address, ident.prefix_len, ident.interface) == ("10.0.0.100", 32, "eth1")
    assert ident.table_name == "tandem_erp_db"
    assert ident.layout == "public NIC eth1, channel NIC eth0"
    single = make_identity(node(tmp_path, public), UNUSED_BUS)
    assert isinstance(single, LinuxLanIdentity) and single.layout == "single NIC eth1"


def test_lan_on_windows_builds_the_powershell_identity(tmp_path: Path) -> None:
    public = {
        "kind": "lan",
        "address": "10.0.0.100",
        "interface": "Ethernet 2",  # a Windows alias: spaces are fine there
        "prefix_len": 24,
        "platform": "windows",
    }
    ident = make_identity(node(tmp_path, public), UNUSED_BUS)
    assert isinstance(ident, WindowsLanIdentity)
    assert (ident.address, ident.prefix_len, ident.interface) == ("10.0.0.100", 24, "Ethernet 2")


def test_dns_builds_the_dns_identity_with_its_settings(tmp_path: Path) -> None:
    emitted: list[Event] = []
    public = {
        "kind": "dns",
        "dns_name": "erp.example.net.",
        "site_address": "192.0.2.10",
        "dns_wait_s": 12.5,
        "dns_on_missing": "fail",
        "dns_lookback_s": 60,
    }
    ident = make_identity(node(tmp_path, public), UNUSED_BUS, emitted.append)
    assert isinstance(ident, DnsIdentity)
    assert (ident.cluster, ident.node) == ("erp-db", "n1")
    assert (ident.dns_name, ident.site_address) == ("erp.example.net.", "192.0.2.10")
    assert (ident.wait_s, ident.on_missing, ident.lookback_s) == (12.5, "fail", 60.0)


def test_dns_defaults_continue_after_twenty_seconds(tmp_path: Path) -> None:
    public = {"kind": "dns", "dns_name": "erp.example.net", "site_address": "2001:db8::10"}
    ident = make_identity(node(tmp_path, public), UNUSED_BUS)
    assert isinstance(ident, DnsIdentity)
    assert (ident.wait_s, ident.on_missing) == (20.0, "continue")


@pytest.mark.parametrize(
    ("public", "problem"),
    [
        (
            {"kind": "dns", "dns_name": "erp.example.net", "site_address": "erp-site"},
            "site_address 'erp-site' is not an IPv4 or IPv6 address",
        ),
        (
            {"kind": "dns", "dns_name": "erp.example.net", "site_address": "127.0.0.1"},
            "cannot be a public address",
        ),
        (
            {"kind": "dns", "dns_name": "erp", "site_address": "192.0.2.10"},
            "not a fully qualified host name",
        ),
        (
            {"kind": "dns", "dns_name": "erp_db.example.net", "site_address": "192.0.2.10"},
            "not a fully qualified host name",
        ),
        (
            {"kind": "dns", "dns_name": "e.example", "site_address": "192.0.2.10", "dns_wait_s": 0},
            "dns_wait_s",
        ),
        (
            {
                "kind": "dns",
                "dns_name": "e.example",
                "site_address": "192.0.2.10",
                "dns_on_missing": "retry",
            },
            "dns_on_missing",
        ),
        (
            {"kind": "lan", "address": "10.0.0.100", "interface": "eth0", "dns_wait_s": 5},
            "dns_wait_s are for the dns identity only",
        ),
        (
            {
                "kind": "dns",
                "dns_name": "e.example",
                "site_address": "192.0.2.10",
                "platform": "windows",
            },
            "platform is for the lan identity only",
        ),
        (
            {
                "kind": "lan",
                "address": "10.0.0.100",
                "interface": "Ethernet 2",
                "platform": "linux",
            },
            "not a valid Linux interface name",
        ),
        (
            {
                "kind": "lan",
                "address": "10.0.0.100",
                "interface": "Ethernet",
                "channel_interface": "Ethernet 2",
                "platform": "windows",
            },
            "channel_interface is for Linux nodes only",
        ),
    ],
)
def test_a_bad_public_section_names_the_field(
    tmp_path: Path, public: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        node(tmp_path, public)
    text = str(caught.value)
    assert "public" in text and problem in text, text
