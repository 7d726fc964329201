"""Tandem monitor: heartbeats, failure detection, health plugins and rules. The monitoring logic
arrives with its own issue; for now the service joins the bus and announces itself for its node.
"""
