"""The LAN identity on Linux: a shared IP address that only the Active holds.

Exposing adds the public address to the public interface (netlink, pyroute2), removes this
node's "hidden" nftables filter and announces the address with gratuitous ARP, so the clients'
ARP caches move to this node at once rather than when their entries expire. Hiding installs the
filter first (the node stops answering for the address at that instant, see ``nftables``) and
then removes the address from every interface that holds it.

The public address lives only in memory on the Active: ``reset_on_start`` hides, so a node that
restarts (after a crash while it was exposed, too) comes up hidden.

Single NIC or two: the channel network (replication, heartbeats) and the public one may share
an interface or not. Either way only the public address is touched or filtered; the node's own
channel address keeps working while it is hidden. ``status`` reads what is really configured
(the address on the interfaces, the filter in nftables), never what this object remembers.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from dataclasses import dataclass

from pyroute2 import IPRoute, NetlinkError

from tandem.agent.control.base import ControlError
from tandem.agent.control.runner import run_command
from tandem.agent.identity.base import IdentityStatus
from tandem.agent.identity.nftables import FilterState, Nft, hide_batch, remove_batch

log = logging.getLogger(__name__)

IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class _Observed:
    #: Interfaces holding the public address: name -> (index, prefix length there).
    holders: dict[str, tuple[int, int]]
    filter: FilterState


class LinuxLanIdentity:
    def __init__(
        self,
        address: str,
        prefix_len: int | None,
        interface: str,
        table_name: str,
        *,
        channel_interface: str | None = None,
        nft: str = "nft",
        arping: str = "arping",
        timeout_s: float = 10.0,
        announce_count: int = 3,
        announce_interval_s: int = 1,
    ) -> None:
        self.announce_count = announce_count
        self.announce_interval_s = announce_interval_s
        #: The announcement running in the background (expose does not wait for it).
        self._announcing: asyncio.Task[str] | None = None
        ip = ipaddress.ip_address(address)
        self.address = str(ip)  # canonical form: netlink answers IPv6 compressed
        self.version = ip.version
        self.prefix_len = prefix_len if prefix_len is not None else ip.max_prefixlen
        self.interface = interface
        #: None or equal to ``interface``: one NIC carries both networks.
        self.channel_interface = channel_interface
        self.table_name = table_name
        self.nft = Nft(nft, timeout_s)
        self.arping = arping
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()

    @property
    def layout(self) -> str:
        if self.channel_interface in (None, self.interface):
            return f"single NIC {self.interface}"
        return f"public NIC {self.interface}, channel NIC {self.channel_interface}"

    async def status(self) -> IdentityStatus:
        seen = await self._observe()
        exposed = self.interface in seen.holders and not seen.filter.installed_for(self.address)
        return IdentityStatus(
            exposed=exposed,
            address=self.address if exposed else None,
            detail=self._describe(seen),
        )

    async def expose(self) -> IdentityStatus:
        async with self._lock:
            seen = await self._observe()
            strays = [name for name in seen.holders if name != self.interface]
            if self.interface in seen.holders and not seen.filter.any_present and not strays:
                return IdentityStatus(
                    exposed=True, address=self.address, detail=f"already exposed: {self._where}"
                )
            # The address first, then the filter goes: between the two the node holds the
            # address but stays silent, never the other way round.
            await asyncio.to_thread(self._plumb, seen.holders)
            await self.nft.apply(remove_batch(self.table_name))
            announced = self.reannounce()
            log.info("identity %s exposed (%s); %s", self.address, self.layout, announced)
            # No leading "exposed": the executor reports "exposed: <detail>".
            detail = f"{self._where}; {announced}"
            if strays:
                detail += f"; removed it from {', '.join(strays)}"
            return IdentityStatus(exposed=True, address=self.address, detail=detail)

    async def hide(self) -> IdentityStatus:
        async with self._lock:
            seen = await self._observe()
            if not seen.holders and seen.filter.installed_for(self.address):
                return IdentityStatus(
                    exposed=False, detail=f"already hidden: {self._hidden_detail}"
                )
            # The filter first: from this instant the node never answers for the address,
            # even while it is still configured (removing it comes right after).
            await self.nft.apply(hide_batch(self.table_name, self.address))
            await self._stop_announcing()  # (the filter would drop the rest anyway)
            await asyncio.to_thread(self._unplumb, seen.holders)
            log.info("identity %s hidden (%s)", self.address, self.layout)
            removed = f"removed from {', '.join(seen.holders)}; " if seen.holders else ""
            return IdentityStatus(exposed=False, detail=f"{removed}{self._hidden_detail}")

    def hide_blocking(self) -> str:
        """``hide`` without an event loop, for the node guard: the same filter first, then
        the same address removal. Returns what it did."""
        self.nft.apply_blocking(hide_batch(self.table_name, self.address))
        holders = self._holders()
        self._unplumb(holders)
        removed = f"removed from {', '.join(holders)}; " if holders else ""
        return f"{removed}{self._hidden_detail}"

    async def reset_on_start(self) -> IdentityStatus:
        """Hide whatever a previous run exposed: a node that (re)starts comes up hidden."""
        before = await asyncio.to_thread(self._holders)
        hidden = await self.hide()
        if before:
            log.warning(
                "identity %s was still on %s at start; hidden", self.address, ", ".join(before)
            )
            return hidden.model_copy(
                update={"detail": f"hidden at start (was on {', '.join(before)})"}
            )
        return hidden.model_copy(update={"detail": f"hidden at start: {self._hidden_detail}"})

    # --- what is there --------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.address}/{self.prefix_len} on {self.interface} ({self.layout})"

    @property
    def _hidden_detail(self) -> str:
        return f"{self.address} on no interface, nftables filter {self.table_name} drops it"

    def _describe(self, seen: _Observed) -> str:
        filtered = seen.filter.installed_for(self.address)
        holders = ", ".join(f"{n} (/{p})" for n, (_, p) in sorted(seen.holders.items()))
        if not seen.holders:
            if filtered:
                return f"hidden: {self._hidden_detail}"
            return f"hidden: {self.address} on no interface, but no nftables filter installed"
        if filtered:
            return f"hidden: {self.address} is on {holders}, but the nftables filter drops it"
        if self.interface in seen.holders:
            others = [n for n in seen.holders if n != self.interface]
            extra = f"; also on {', '.join(others)}" if others else ""
            return f"exposed: {self._where}{extra}"
        return f"not exposed: {self.address} is on {holders}, not on {self.interface}"

    async def _observe(self) -> _Observed:
        holders = await asyncio.to_thread(self._holders)
        return _Observed(holders, await self.nft.state(self.table_name))

    # --- netlink (blocking: run in a thread) ----------------------------------------------

    def _family(self) -> int:
        return 2 if self.version == 4 else 10  # AF_INET, AF_INET6

    def _index(self, ipr: IPRoute, name: str) -> int:
        found = ipr.link_lookup(ifname=name)
        if not found:
            raise ControlError(f"no interface {name!r} on this node (public.interface)")
        return int(found[0])

    def _holders(self) -> dict[str, tuple[int, int]]:
        try:
            with IPRoute() as ipr:
                self._index(ipr, self.interface)  # a missing interface is an error, say so
                names = {int(link["index"]): link.get("ifname") for link in ipr.get_links()}
                found = ipr.get_addr(family=self._family(), address=self.address)
                return {
                    str(names.get(int(a["index"]), a["index"])): (
                        int(a["index"]),
                        int(a["prefixlen"]),
                    )
                    for a in found
                }
        except NetlinkError as exc:
            raise self._netlink_error("read the addresses", exc) from None

    def _plumb(self, holders: dict[str, tuple[int, int]]) -> None:
        try:
            with IPRoute() as ipr:
                index = self._index(ipr, self.interface)
                if self.interface not in holders:
                    # IPv6: no duplicate address detection. The other node has hidden first
                    # (the saga's order, and its filter); DAD would only delay the address.
                    flags = {"flags": IFA_F_NODAD} if self.version == 6 else {}
                    try:
                        ipr.addr(
                            "add",
                            index=index,
                            address=self.address,
                            prefixlen=self.prefix_len,
                            **flags,
                        )
                    except NetlinkError as exc:
                        if exc.code != errno.EEXIST:
                            raise
                # Anywhere else (the channel NIC, a wrong one) it would answer on that network.
                self._delete(ipr, {n: p for n, p in holders.items() if n != self.interface})
        except NetlinkError as exc:
            raise self._netlink_error(f"add {self.address} to {self.interface}", exc) from None

    def _unplumb(self, holders: dict[str, tuple[int, int]]) -> None:
        try:
            with IPRoute() as ipr:
                self._delete(ipr, holders)
        except NetlinkError as exc:
            raise self._netlink_error(f"remove {self.address}", exc) from None

    def _delete(self, ipr: IPRoute, holders: dict[str, tuple[int, int]]) -> None:
        for index, prefix_len in holders.values():
            try:
                ipr.addr("del", index=index, address=self.address, prefixlen=prefix_len)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):  # gone: as wanted
                    raise

    def _netlink_error(self, what: str, exc: NetlinkError) -> ControlError:
        if exc.code == errno.EPERM:
            return ControlError(
                f"cannot {what}: permission denied (the agent needs root or CAP_NET_ADMIN)"
            )
        return ControlError(f"cannot {what}: netlink error {exc.code}: {exc}")

    # --- announcement ---------------------------------------------------------------------

    async def _stop_announcing(self) -> None:
        """Cancel the announcement and wait for it (it kills its arping), boundedly: a task
        left to the loop's shutdown to cancel can hang it there."""
        task, self._announcing = self._announcing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self.timeout_s)

    def reannounce(self) -> str:
        """Announce the address again, in the background: after expose, and when an old
        Active reports it hid late (a client may have taken its answer last). Returns what
        is being done, for ``detail``."""
        if self.version == 6:
            return "no announcement for IPv6 (gratuitous ARP is IPv4 only)"
        if self._announcing is not None and not self._announcing.done():
            self._announcing.cancel()
        self._announcing = asyncio.get_running_loop().create_task(self._announce())
        return (
            f"announcing by gratuitous ARP ({self.announce_count} times, "
            f"{self.announce_interval_s}s apart)"
        )

    async def _announce(self) -> str:
        """Gratuitous ARP, ``announce_count`` times (a cache may miss one). A failed
        announcement does not fail the exposure: the address is up and answers; clients catch
        up when their ARP entry expires. It is logged (and returned, for the tests)."""
        if self.version == 6:
            return "no announcement for IPv6 (gratuitous ARP is IPv4 only)"
        count, interval = str(self.announce_count), str(self.announce_interval_s)
        argv = [self.arping, "-U", "-c", count, "-i", interval, "-I", self.interface]
        argv += ["-s", self.address, self.address]
        try:
            bound = self.timeout_s + (self.announce_count - 1) * self.announce_interval_s
            rc, _, err = await run_command(argv, bound)
        except ControlError as exc:  # cannot run it, or it did not finish in time (killed)
            log.warning("cannot announce %s: %s", self.address, exc.message)
            return f"not announced: {exc.message}"
        if rc != 0:
            message = " ".join(err.split()) or f"exit {rc}"
            log.warning("announcing %s failed: %s", self.address, message)
            return f"announcement failed: {message}"
        return "announced by gratuitous ARP"
