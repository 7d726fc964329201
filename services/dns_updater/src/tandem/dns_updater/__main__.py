"""`python -m tandem.dns_updater`: run the dns_updater service on its own."""

from tandem.dns_updater.service import SERVICE
from tandem.events.runtime import service_main

raise SystemExit(service_main(SERVICE))
