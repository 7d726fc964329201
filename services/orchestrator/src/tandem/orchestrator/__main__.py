"""`python -m tandem.orchestrator`: run the orchestrator service on its own."""

from tandem.events.runtime import service_main
from tandem.orchestrator.service import SERVICE

raise SystemExit(service_main(SERVICE))
