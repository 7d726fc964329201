"""The "hidden" nftables filter of the LAN identity, through nft's JSON API.

A hidden node must never answer for the public address, even if the address is still (or again)
configured on one of its interfaces: a frozen Active that wakes up, an operator's ``ip addr
add``, a crash between two steps. So hiding installs, besides removing the address:

* a table of family ``inet`` whose output chain drops every packet whose *source* is the public
  address (IPv4 or IPv6; an IPv6 neighbour advertisement for an owned address is sent from
  that address, so this rule covers neighbour discovery too);
* for IPv4, a table of family ``arp`` of the same name whose output chain drops every ARP
  packet whose sender IP is the public address (replies, announcements and requests alike).

Only the public address is matched: the node's own addresses (the channel network carrying
replication and heartbeats, possibly on the same NIC) are never filtered.

Batches go to ``nft -j -f -`` (one transaction: all or nothing); state is read back with
``nft -j list table`` and parsed as JSON, never the text output. Building and parsing are pure
functions, tested without root.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

from tandem.agent.control.base import ControlError

log = logging.getLogger(__name__)

CHAIN = "out"
RULE_COMMENT = "tandem: hidden node never uses its public address"
#: nft's own limit is 256; names stay short so an operator can type them.
_MAX_NAME = 64


def table_name_for(cluster: str) -> str:
    """``tandem_<cluster>``, reduced to what nft accepts unquoted (letters, digits, ``_``)."""
    clean = re.sub(r"[^a-z0-9_]", "_", cluster.lower())
    return f"tandem_{clean}"[:_MAX_NAME]


def families_for(address: str) -> tuple[str, ...]:
    """The table families the filter of ``address`` uses (ARP exists for IPv4 only)."""
    return ("inet", "arp") if ipaddress.ip_address(address).version == 4 else ("inet",)


def _match_source(address: str) -> dict[str, Any]:
    if ipaddress.ip_address(address).version == 4:
        left = {"payload": {"protocol": "ip", "field": "saddr"}}
    else:
        left = {"payload": {"protocol": "ip6", "field": "saddr"}}
    return {"match": {"op": "==", "left": left, "right": address}}


def _match_arp_sender(address: str) -> dict[str, Any]:
    left = {"payload": {"protocol": "arp", "field": "saddr ip"}}
    return {"match": {"op": "==", "left": left, "right": address}}


def _table_commands(family: str, table: str, match: dict[str, Any]) -> list[dict[str, Any]]:
    ref = {"family": family, "name": table}
    chain = {
        "family": family,
        "table": table,
        "name": CHAIN,
        "type": "filter",
        "hook": "output",
        "prio": 0,
        "policy": "accept",
    }
    # A counter on the rule, so operators (and the tests) can see that it really drops.
    rule = {
        "family": family,
        "table": table,
        "chain": CHAIN,
        "comment": RULE_COMMENT,
        "expr": [match, {"counter": {"packets": 0, "bytes": 0}}, {"drop": None}],
    }
    # "add table" is idempotent and "flush" empties it: re-installing replaces an older filter
    # (another address) instead of piling rules up, in the same transaction.
    return [
        {"add": {"table": ref}},
        {"flush": {"table": ref}},
        {"add": {"chain": chain}},
        {"add": {"rule": rule}},
    ]


def hide_batch(table: str, address: str) -> dict[str, Any]:
    """The transaction that installs the hidden filter for ``address``."""
    commands = _table_commands("inet", table, _match_source(address))
    if ipaddress.ip_address(address).version == 4:
        commands += _table_commands("arp", table, _match_arp_sender(address))
    else:
        # No ARP for IPv6; an ARP table left by an earlier IPv4 configuration goes.
        ref = {"family": "arp", "name": table}
        commands += [{"add": {"table": ref}}, {"delete": {"table": ref}}]
    return {"nftables": commands}


def remove_batch(table: str) -> dict[str, Any]:
    """The transaction that removes the filter, present or not.

    nft 1.0.6 has no ``destroy``; "add then delete" in one transaction never fails on a table
    that is absent, and removes it when present. Both families go, whatever the address."""
    commands: list[dict[str, Any]] = []
    for family in ("inet", "arp"):
        ref = {"family": family, "name": table}
        commands += [{"add": {"table": ref}}, {"delete": {"table": ref}}]
    return {"nftables": commands}


@dataclass(frozen=True)
class DropRule:
    family: str
    address: str
    packets: int


@dataclass(frozen=True)
class TableState:
    """What one ``nft -j list table`` shows (absent: ``present`` is False)."""

    family: str
    present: bool
    drops: list[DropRule] = field(default_factory=list)

    def drops_for(self, address: str) -> DropRule | None:
        wanted = ipaddress.ip_address(address)
        for rule in self.drops:
            if ipaddress.ip_address(rule.address) == wanted:
                return rule
        return None


def parse_table(family: str, listing: dict[str, Any] | None) -> TableState:
    """Read the drop rules (matched source address, packet counter) from an nft listing."""
    if listing is None:
        return TableState(family, present=False)
    drops: list[DropRule] = []
    present = False
    for item in listing.get("nftables", []):
        if "table" in item:
            present = True
        rule = item.get("rule")
        if rule is None:
            continue
        address: str | None = None
        packets = 0
        dropping = False
        for expr in rule.get("expr", []):
            if "match" in expr and isinstance(expr["match"].get("right"), str):
                field_name = expr["match"].get("left", {}).get("payload", {}).get("field")
                if field_name in ("saddr", "saddr ip") and _is_ip(expr["match"]["right"]):
                    address = expr["match"]["right"]
            elif "counter" in expr and isinstance(expr["counter"], dict):
                packets = int(expr["counter"].get("packets", 0))
            elif "drop" in expr:
                dropping = True
        if address is not None and dropping:
            drops.append(DropRule(family, address, packets))
    return TableState(family, present=present, drops=drops)


@dataclass(frozen=True)
class FilterState:
    tables: dict[str, TableState]

    def installed_for(self, address: str) -> bool:
        """Every family the address needs has its drop rule (one alone is not hidden)."""
        for family in families_for(address):
            table = self.tables.get(family)
            if table is None or table.drops_for(address) is None:
                return False
        return True

    @property
    def any_present(self) -> bool:
        return any(t.present for t in self.tables.values())


class Nft:
    """Runs ``nft`` (in the caller's network namespace) with a timeout; errors become
    ``ControlError`` with nft's own words."""

    def __init__(self, binary: str = "nft", timeout_s: float = 10.0) -> None:
        self.binary = binary
        self.timeout_s = timeout_s

    async def _run(self, args: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
        # LC_ALL=C: "No such file or directory" is how an absent table is recognised.
        env = {**os.environ, "LC_ALL": "C"}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except FileNotFoundError:
            raise ControlError(
                f"{self.binary} not found: the lan identity needs nftables (install nftables)"
            ) from None
        except PermissionError as exc:
            raise ControlError(f"cannot run {self.binary}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise ControlError(
                f"{self.binary} {' '.join(args)} did not finish within {self.timeout_s:g}s"
            ) from None
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def apply(self, batch: dict[str, Any]) -> None:
        code, _, err = await self._run(["-j", "-f", "-"], json.dumps(batch).encode())
        if code != 0:
            raise ControlError(f"nft refused the filter change: {_explain(err)}")

    def apply_blocking(self, batch: dict[str, Any]) -> None:
        """``apply`` for a caller without an event loop (the node guard)."""
        env = {**os.environ, "LC_ALL": "C"}
        try:
            done = subprocess.run(
                [self.binary, "-j", "-f", "-"],
                input=json.dumps(batch).encode(),
                capture_output=True,
                env=env,
                timeout=self.timeout_s,
                check=False,
            )
        except FileNotFoundError:
            raise ControlError(f"{self.binary} not found: install nftables") from None
        except subprocess.TimeoutExpired:
            raise ControlError(f"{self.binary} did not finish within {self.timeout_s:g}s") from None
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")
            raise ControlError(f"nft refused the filter change: {_explain(err)}")

    async def list_table(self, family: str, table: str) -> TableState:
        code, out, err = await self._run(["-j", "list", "table", family, table])
        if code != 0:
            if "No such file or directory" in err:
                return TableState(family, present=False)
            raise ControlError(f"nft cannot list table {family} {table}: {_explain(err)}")
        try:
            listing = json.loads(out)
        except ValueError as exc:
            raise ControlError(f"nft -j list table {family} {table}: not JSON: {exc}") from None
        return parse_table(family, listing)

    async def state(self, table: str) -> FilterState:
        """Both families are read, whatever the address: a leftover table counts too."""
        tables = {f: await self.list_table(f, table) for f in ("inet", "arp")}
        return FilterState(tables)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False  # a set reference, a prefix: not a rule this module wrote
    return True


def _explain(stderr: str) -> str:
    text = " ".join(stderr.split()) or "no message"
    if "Operation not permitted" in stderr:
        text += " (the agent needs root or CAP_NET_ADMIN to change nftables)"
    return text
