"""Where clients reach the Active, carried by each node's lease to the orchestrator's view
(``tandem status`` shows it): the description of each kind of public identity, and what the
orchestrator reads from a lease value."""

from __future__ import annotations

import json

from tandem.agent.config import PublicIdentityConfig
from tandem.agent.lease import LeaseKeeper
from tandem.events.nodeboard import NodeBoard
from tandem.orchestrator.liveness import Liveness, Seen


def test_each_kind_of_public_identity_says_where_clients_reach_the_active() -> None:
    lan = PublicIdentityConfig(kind="lan", address="10.0.0.50", interface="eth0")
    assert lan.describe() == "10.0.0.50/32 on eth0"
    dns = PublicIdentityConfig(kind="dns", dns_name="db.example.com", site_address="192.0.2.10")
    assert dns.describe() == "db.example.com -> 192.0.2.10"
    loop = PublicIdentityConfig(kind="loopback", port=8080, forward_to=9000)
    assert loop.describe() == "127.0.0.1:8080 (loopback)"
    assert PublicIdentityConfig().describe() == "loopback"


def test_the_lease_carries_the_public_address_and_the_orchestrator_reads_it() -> None:
    board = NodeBoard()
    keeper = LeaseKeeper(
        None,  # type: ignore[arg-type]  # only the record is built here
        "c",
        "a",
        ttl_s=3,
        renew_every_s=0.3,
        fence_margin_s=1,
        board=board,
        fence=None,  # type: ignore[arg-type]
        emit=lambda e: None,
        public="10.0.0.50/32 on eth0",
    )
    value = keeper._record()
    assert json.loads(value)["public"] == "10.0.0.50/32 on eth0"
    seen = Seen()
    Liveness._read_lease(seen, value)
    assert seen.public == "10.0.0.50/32 on eth0"
    Liveness._read_lease(seen, json.dumps({"node": "a", "ttl_s": 3}).encode())
    assert seen.public is None  # a node of an older version says nothing: nothing shown


def test_tandem_status_says_where_clients_reach_the_active() -> None:
    from tandem.cli.api_models import Cluster
    from tandem.cli.status_view import service_line

    cluster = Cluster.model_validate(
        {
            "name": "demo",
            "active": "primary",
            "epoch": 3,
            "service": "serving",
            "service_reason": "primary serves",
            "nodes": [
                {"name": "primary", "public_address": "10.0.0.50/32 on eth0"},
                {"name": "secondary", "public_address": "10.0.0.50/32 on eth0"},
            ],
        }
    )
    assert service_line(cluster).endswith("clients: 10.0.0.50/32 on eth0")
    nobody = cluster.model_copy(update={"active": None})
    assert "clients:" not in service_line(nobody)
