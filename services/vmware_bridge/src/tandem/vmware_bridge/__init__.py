"""Tandem vmware_bridge: VM remediation through vCenter (pyVmomi) on ``VmRemediationRequested``.

Modules: ``config`` (the TOML config and credentials files), ``connection`` (one vCenter
session), ``inventory`` (finding VMs, hosts, datastores; choosing targets), ``remediation``
(the four actions) and ``service`` (the consumer and the events).
"""
