"""Tandem dns_updater: moves a DR public name to the site address of the new Active.

It follows ``RoleChanged`` events, replaces the name's A and AAAA records by an RFC 2136
update signed with TSIG, waits until the authoritative servers answer the new addresses, and
records ``DnsUpdated`` or ``DnsUpdateFailed``. Configuration: ``examples/dns_updater.toml``.
"""
