"""Tandem dns_updater: moves a DR public name to the new Active by RFC 2136. The update logic
arrives with its own issue; for now the service joins the bus and announces itself.
"""
