"""`python -m tandem.monitor`: run the monitor for one node on its own."""

from tandem.events.runtime import service_main
from tandem.monitor.service import SERVICE

raise SystemExit(service_main(SERVICE))
