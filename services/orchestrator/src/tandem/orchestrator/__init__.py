"""Tandem orchestrator: event-sourced cluster state, fencing, sagas and the REST API. The decision
logic arrives with its own issue; for now the service joins the bus and announces itself.
"""
