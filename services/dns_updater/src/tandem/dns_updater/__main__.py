"""`python -m tandem.dns_updater`: run the dns_updater service on its own."""

from tandem.events.runtime import service_main
from tandem.dns_updater.service import SERVICE

raise SystemExit(service_main(SERVICE))
