"""`python -m tandem.replicator`: run the replicator for one node on its own."""

from tandem.events.runtime import service_main
from tandem.replicator.service import SERVICE

raise SystemExit(service_main(SERVICE))
