"""Tandem replicator: capture, send queue, journal, receive queue and apply. The replication engine
arrives with its own issue; for now the service joins the bus and announces itself for its node.
"""
