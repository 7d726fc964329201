"""Tandem vmware_bridge: VMware remediation and SRM command steps. The vSphere logic arrives with
its own issue; for now the service joins the bus and announces itself.
"""
