"""The services the CLI can start, by name. Only their ``SERVICE`` spec is imported."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from tandem.events.runtime import ServiceSpec


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    module: str
    #: Node-side services need a cluster and a node; central ones do not.
    node_side: bool

    @property
    def env_prefix(self) -> str:
        return f"TANDEM_{self.name.upper()}_"

    def spec(self) -> ServiceSpec:
        try:
            module = importlib.import_module(f"{self.module}.service")
        except ModuleNotFoundError as exc:
            raise LookupError(
                f"service {self.name} is not installed ({exc.name} missing)"
            ) from None
        spec: ServiceSpec = module.SERVICE
        return spec


SERVICES: dict[str, ServiceEntry] = {
    e.name: e
    for e in (
        ServiceEntry("orchestrator", "tandem.orchestrator", node_side=False),
        ServiceEntry("dns_updater", "tandem.dns_updater", node_side=False),
        ServiceEntry("vmware_bridge", "tandem.vmware_bridge", node_side=False),
        ServiceEntry("notifier", "tandem.notifier", node_side=False),
        ServiceEntry("agent", "tandem.agent", node_side=True),
        ServiceEntry("replicator", "tandem.replicator", node_side=True),
        ServiceEntry("monitor", "tandem.monitor", node_side=True),
    )
}

CENTRAL = [e for e in SERVICES.values() if not e.node_side]


def lookup(name: str) -> ServiceEntry:
    entry = SERVICES.get(name.replace("-", "_"))
    if entry is None:
        raise LookupError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    return entry
