"""`python -m tandem.notifier`: run the notifier service on its own."""

from tandem.events.runtime import service_main
from tandem.notifier.service import SERVICE

raise SystemExit(service_main(SERVICE))
