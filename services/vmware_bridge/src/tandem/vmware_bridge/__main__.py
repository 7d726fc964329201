"""`python -m tandem.vmware_bridge`: run the vmware_bridge service on its own."""

from tandem.events.runtime import service_main
from tandem.vmware_bridge.service import SERVICE

raise SystemExit(service_main(SERVICE))
