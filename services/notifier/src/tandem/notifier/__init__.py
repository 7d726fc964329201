"""Tandem notifier: tells people about alerts and role changes, by email, webhook, command
hook or a JSON-lines file, routed by severity, cluster, group and code.

It follows ``TANDEM_EVENTS`` with one durable consumer, delivers each notification once per
route in the order of its cluster, and records each delivery in a ledger in its state
folder before the message is acknowledged. Configuration: ``examples/notifier.toml``.
"""
