"""`python -m tandem.agent`: run the node agent."""

from tandem.agent.service import SERVICE
from tandem.events.runtime import service_main

raise SystemExit(service_main(SERVICE))
