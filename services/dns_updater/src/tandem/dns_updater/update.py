"""RFC 2136 updates and authoritative lookups with dnspython (asyncio; nothing of the bus here).

``send_update`` raises ``DnsError`` with a reason meant for an operator and whether trying
again may help: timeouts, refused connections and SERVFAIL may pass; a TSIG failure (BADSIG,
BADKEY, BADTIME), REFUSED, NOTAUTH or NOTZONE will not until someone changes a configuration.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from tandem.dns_updater.config import Server
from tandem.dns_updater.tsigkey import TsigKey

log = logging.getLogger(__name__)

#: Rcodes of an update answer that say the update will not be accepted as it is.
_REFUSALS: dict[dns.rcode.Rcode, str] = {
    dns.rcode.REFUSED: "the server refuses this update (check allow-update / update-policy)",
    dns.rcode.NOTAUTH: "the server is not authoritative for the zone, or refused the key",
    dns.rcode.NOTZONE: "the name is not within the zone",
    dns.rcode.FORMERR: "the server could not read the update",
    dns.rcode.NOTIMP: "the server does not implement dynamic updates",
}

#: Errors the server reported in its TSIG record (the request's signature was rejected).
_PEER_TSIG: list[tuple[type[dns.tsig.PeerError], str]] = [
    (dns.tsig.PeerBadSignature, "TSIG verify failure (BADSIG): is the secret right?"),
    (dns.tsig.PeerBadKey, "TSIG key unknown to the server (BADKEY): check the key name"),
    (dns.tsig.PeerBadTime, "TSIG time check failure (BADTIME): are the clocks in sync?"),
    (dns.tsig.PeerBadTruncation, "TSIG truncation refused (BADTRUNC)"),
]


class DnsError(Exception):
    """A failed update or lookup: ``reason`` for an operator, ``retryable`` if it may pass."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


def split_families(addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    """(IPv4, IPv6) in address order, each normalised; duplicates removed."""
    parsed = sorted({ipaddress.ip_address(a) for a in addresses}, key=lambda a: (a.version, a))
    return [str(a) for a in parsed if a.version == 4], [str(a) for a in parsed if a.version == 6]


def ordered(addresses: Iterable[str]) -> list[str]:
    """Addresses as events show them: IPv4 first, each family sorted."""
    v4, v6 = split_families(addresses)
    return v4 + v6


def build_update(
    zone: str, name: str, ttl: int, addresses: Iterable[str], key: TsigKey
) -> dns.update.UpdateMessage:
    """Replace the A and AAAA rrsets of ``name`` by ``addresses``, signed with ``key``."""
    v4, v6 = split_families(addresses)
    update = dns.update.UpdateMessage(zone, keyring=key.key, keyname=key.key.name)
    update.delete(name, dns.rdatatype.A)
    update.delete(name, dns.rdatatype.AAAA)
    for address in v4:
        update.add(name, ttl, dns.rdatatype.A, address)
    for address in v6:
        update.add(name, ttl, dns.rdatatype.AAAA, address)
    return update


async def send_update(
    update: dns.update.UpdateMessage, server: Server, *, timeout: float, protocol: str = "tcp"
) -> None:
    """Send one update; return if the server applied it, else raise ``DnsError``."""
    try:
        if protocol == "udp":
            response = await dns.asyncquery.udp(
                update, server.address, timeout=timeout, port=server.port
            )
        else:
            response = await dns.asyncquery.tcp(
                update, server.address, timeout=timeout, port=server.port
            )
    except dns.tsig.PeerError as exc:
        for kind, reason in _PEER_TSIG:
            if isinstance(exc, kind):
                raise DnsError(f"{server}: {reason}", retryable=False) from None
        reason = f"{server}: TSIG error reported by the server: {exc}"
        raise DnsError(reason, retryable=False) from None
    except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.tsig.BadAlgorithm) as exc:
        reason = f"{server}: the answer's TSIG signature does not verify ({exc})"
        raise DnsError(reason, retryable=False) from None
    except dns.exception.Timeout:
        raise DnsError(f"{server}: no answer within {timeout:g}s", retryable=True) from None
    except (OSError, EOFError) as exc:
        reason = f"{server}: {_describe_os_error(exc)}"
        raise DnsError(reason, retryable=True) from None
    except dns.exception.DNSException as exc:
        reason = f"{server}: unreadable answer: {type(exc).__name__}: {exc}"
        raise DnsError(reason, retryable=True) from None
    check_rcode(response, server)


def check_rcode(response: dns.message.Message, server: Server) -> None:
    rcode = response.rcode()
    if rcode == dns.rcode.NOERROR:
        return
    text = dns.rcode.to_text(rcode)
    if rcode == dns.rcode.SERVFAIL:
        raise DnsError(f"{server}: SERVFAIL (the server could not apply it now)", retryable=True)
    explanation = _REFUSALS.get(rcode, "the update was not applied")
    raise DnsError(f"{server}: {text} ({explanation})", retryable=False)


def _describe_os_error(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server up?)"
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Lookup:
    """What one server answered for a name's A and AAAA records."""

    server: Server
    addresses: frozenset[str] | None
    #: Why ``addresses`` is None (no answer, not authoritative, an error rcode).
    problem: str = ""

    def describe(self) -> str:
        if self.addresses is None:
            return f"{self.server}: {self.problem}"
        return f"{self.server}: [{', '.join(ordered(self.addresses)) or 'nothing'}]"


async def lookup(name: str, server: Server, *, timeout: float) -> Lookup:
    """The A and AAAA addresses ``server`` answers authoritatively for ``name``."""
    found: set[str] = set()
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD  # ask the authoritative data, never a cache behind it
        try:
            response, _ = await dns.asyncquery.udp_with_fallback(
                query, server.address, timeout=timeout, port=server.port
            )
        except dns.exception.Timeout:
            return Lookup(server, None, f"no answer within {timeout:g}s")
        except (OSError, EOFError) as exc:
            return Lookup(server, None, _describe_os_error(exc))
        except dns.exception.DNSException as exc:
            return Lookup(server, None, f"unreadable answer: {exc}")
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return Lookup(server, None, f"answered {dns.rcode.to_text(rcode)}")
        if not response.flags & dns.flags.AA:
            return Lookup(server, None, "not authoritative for the name")
        rrset = response.get_rrset(
            response.answer, dns.name.from_text(name), dns.rdataclass.IN, rdtype
        )
        if rrset is not None:
            found.update(str(ipaddress.ip_address(rdata.to_text())) for rdata in rrset)
    return Lookup(server, frozenset(found))
