"""``GET /api/v1/clusters`` a page at a time, over HTTP (a real uvicorn on 127.0.0.1) and the
real read side: 120 clusters folded by ``ClusterState`` from their events, heartbeats seen by
``Liveness`` (a fake clock, no bus), two groups.

Walking the pages by their ``Link`` header reads each cluster once, in name order; the
filters (status, group, node, part of the name) select what they say, with the total of what
matches in ``X-Total-Count``; bad input is refused (422) with the reason.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tandem.events.catalog import HealthChanged, NodeRoleAssumed, RoleChanged
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.roles import NodeRoleAssumedPayload, RoleChangedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Identity, Role
from tandem.events.heartbeat import Heartbeat
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.server import RunningServer, start_server
from tandem.orchestrator.live_feed import LiveFeed
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.readside import OrchestratorViews
from tandem.orchestrator.settings import (
    GroupConfig,
    GroupMember,
    OrchestratorFile,
    OrchestratorSettings,
)
from tandem.orchestrator.state import ClusterState

from .test_api import TOKENS, VIEWER, bearer

T0 = datetime(2025, 11, 25, 10, 0, 0, tzinfo=UTC)
N = 120
KNOWN = "limit, after, status, group, node, q"


def name(i: int) -> str:
    return f"c{i:03d}"


class Views(OrchestratorViews):
    """The read side over 120 clusters: nodes east (Active) and west; every third cluster's
    nodes send heartbeats (degraded: no replication reported), the others are not heard from
    (down); the last ten also have a node named ``north``."""

    def __init__(self) -> None:
        self.now = 100.0
        self.state = ClusterState()
        self.liveness = Liveness(None, default_timeout_s=5.0, clock=lambda: self.now)  # type: ignore[arg-type]
        self.s = OrchestratorSettings()
        groups = [
            GroupConfig(
                name="payments",
                members=[GroupMember(cluster=name(i), priority=i + 1) for i in (3, 1, 2)],
            ),
            GroupConfig(name="empty-group", members=[GroupMember(cluster="nowhere", priority=1)]),
        ]
        self.file = OrchestratorFile(groups=groups)
        self.live = LiveFeed()
        for i in range(N):
            self._cluster(name(i), heard=i % 3 == 0, third=i >= 110)

    def _cluster(self, c: str, *, heard: bool, third: bool) -> None:
        changed = RoleChangedPayload(
            active_node="east", previous_active=None, new_epoch=1, reason="t"
        )
        self.state.apply(
            RoleChanged(cluster=c, node="east", epoch=1, occurred_at=T0, payload=changed)
        )
        nodes = [
            ("east", Identity.PRIMARY, Role.ACTIVE),
            ("west", Identity.SECONDARY, Role.PASSIVE),
        ]
        if third:
            nodes.append(("north", Identity.TERTIARY, Role.PASSIVE))
        for node, identity, role in nodes:
            payload = NodeRoleAssumedPayload(identity=identity, role=role, reason="t")
            self.state.apply(NodeRoleAssumed(cluster=c, node=node, occurred_at=T0, payload=payload))
            check = HealthChangedPayload(
                application="db", plugin="db", status=HealthStatus.OK, previous=None, message="t"
            )
            self.state.apply(HealthChanged(cluster=c, node=node, occurred_at=T0, payload=check))
            if heard:
                beat = Heartbeat(
                    cluster=c,
                    node=node,
                    role=role,
                    health=HealthStatus.OK,
                    checks={"db": HealthStatus.OK},
                    seq=1,
                    interval_s=1,
                    sent_at=0.0,
                )
                self.liveness.seen[(c, node)] = Seen(heartbeat=beat, heartbeat_at=self.now)

    def is_leader(self) -> bool:
        return True

    def live_feed(self) -> LiveFeed:
        return self.live


@pytest.fixture(scope="module")
def views() -> Views:
    return Views()


@pytest.fixture
async def client(views: Views) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(views, load_tokens(None, TOKENS))  # type: ignore[arg-type]
    running: RunningServer = await start_server(app, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(
            base_url=running.url, timeout=30, trust_env=False, headers=bearer(VIEWER)
        ) as c:
            yield c
    finally:
        await running.stop()


def next_of(response: httpx.Response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match, link
    return match.group(1)


async def walk(client: httpx.AsyncClient, url: str) -> tuple[list[str], list[int], int]:
    """Every page from ``url`` by the Link headers: the names, each page's size, the
    pages' X-Total-Count (the same on each)."""
    names: list[str] = []
    sizes: list[int] = []
    totals: set[str] = set()
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        page = [c["name"] for c in response.json()]
        names += page
        sizes.append(len(page))
        totals.add(response.headers["x-total-count"])
        next_url = next_of(response)
        assert len(sizes) < 50, "the pages do not end"
    (total,) = totals
    return names, sizes, int(total)


async def test_the_first_page_is_the_default_100_then_the_link_goes_on(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/clusters")
    assert response.status_code == 200
    assert [c["name"] for c in response.json()] == [name(i) for i in range(100)]
    assert response.headers["x-total-count"] == str(N)
    assert next_of(response) == "/api/v1/clusters?after=c099"
    rest = await client.get(next_of(response) or "")
    assert [c["name"] for c in rest.json()] == [name(i) for i in range(100, N)]
    assert next_of(rest) is None  # the last page


async def test_walking_the_links_reads_every_cluster_once_in_name_order(
    client: httpx.AsyncClient,
) -> None:
    names, sizes, total = await walk(client, "/api/v1/clusters?limit=7")
    assert names == [name(i) for i in range(N)]
    assert total == N
    assert sizes == [7] * 17 + [1]
    # Exactly the page size: no empty last page.
    names, sizes, _ = await walk(client, "/api/v1/clusters?limit=40")
    assert sizes == [40, 40, 40] and len(set(names)) == N


async def test_filters_select_by_status_group_node_and_name(client: httpx.AsyncClient) -> None:
    heard = [name(i) for i in range(N) if i % 3 == 0]
    names, _, total = await walk(client, "/api/v1/clusters?status=degraded&limit=9")
    assert names == heard and total == len(heard)
    body = (await client.get("/api/v1/clusters?status=degraded&limit=2")).json()
    assert {c["service"] for c in body} == {"degraded"}
    names, _, total = await walk(client, "/api/v1/clusters?status=down&status=degraded&limit=50")
    assert names == [name(i) for i in range(N)] and total == N
    names, _, total = await walk(client, "/api/v1/clusters?status=serving&status=needs_operator")
    assert names == [] and total == 0

    # A group's members in name order (not by priority); one that is not known: none.
    names, _, _ = await walk(client, "/api/v1/clusters?group=payments")
    assert names == ["c001", "c002", "c003"]
    names, _, total = await walk(client, "/api/v1/clusters?group=empty-group")
    assert names == [] and total == 0

    names, _, total = await walk(client, "/api/v1/clusters?node=north&limit=4")
    assert names == [name(i) for i in range(110, N)] and total == 10
    names, _, _ = await walk(client, "/api/v1/clusters?node=nobody")
    assert names == []

    names, _, _ = await walk(client, "/api/v1/clusters?q=C11")  # part of the name, any case
    assert names == [name(i) for i in range(110, N)]

    # Together: all must hold.
    names, _, total = await walk(client, "/api/v1/clusters?node=north&status=degraded&limit=1")
    assert names == ["c111", "c114", "c117"] and total == 3


async def test_after_need_not_be_a_clusters_name(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/clusters?after=c0505&limit=3")  # between c050 and c051
    assert [c["name"] for c in response.json()] == ["c051", "c052", "c053"]
    assert response.headers["x-total-count"] == str(N)
    response = await client.get("/api/v1/clusters?after=b")
    assert response.json()[0]["name"] == "c000"
    response = await client.get("/api/v1/clusters?after=zzz")
    assert response.json() == [] and next_of(response) is None
    assert response.headers["x-total-count"] == str(N)
    # The next page keeps the filters.
    response = await client.get("/api/v1/clusters?status=degraded&q=c0&limit=2&after=c010")
    assert [c["name"] for c in response.json()] == ["c012", "c015"]
    assert next_of(response) == "/api/v1/clusters?status=degraded&q=c0&limit=2&after=c015"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("limit=-1", "limit: Input should be greater than or equal to 1"),
        ("limit=0", "limit: Input should be greater than or equal to 1"),
        ("limit=100000", "limit: Input should be less than or equal to 1000"),
        ("limit=many", "limit: Input should be a valid integer"),
        (
            "status=sunny",
            "status: Input should be 'serving', 'degraded', 'down' or 'needs_operator'",
        ),
        ("group=nope", "group: no group named 'nope'"),
        ("colour=red", f"unknown query parameter 'colour' (known: {KNOWN})"),
        ("limit=5&Limit=6", f"unknown query parameter 'Limit' (known: {KNOWN})"),
        ("q=", "q: String should have at least 1 character"),
    ],
)
async def test_bad_input_is_refused_with_the_reason(
    client: httpx.AsyncClient, query: str, reason: str
) -> None:
    response = await client.get(f"/api/v1/clusters?{query}")
    assert response.status_code == 422, response.text
    body: dict[str, Any] = response.json()
    assert body["detail"].startswith(reason), body
    field = query.split("=")[0] if "unknown" not in reason else reason.split("'")[1]
    assert field in [e["field"] for e in body["errors"]]


async def test_an_unknown_parameter_without_a_token_is_401_first(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/clusters?colour=red", headers={"Authorization": ""})
    assert response.status_code == 401


async def test_the_openapi_describes_the_parameters_and_headers(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/clusters"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert list(params) == KNOWN.split(", ")
    assert all(p.get("description") for p in params.values())
    assert (params["limit"]["schema"]["minimum"], params["limit"]["schema"]["maximum"]) == (1, 1000)
    headers = operation["responses"]["200"]["headers"]
    assert {"Link", "X-Total-Count"} <= set(headers)
    assert "items" in operation["responses"]["200"]["content"]["application/json"]["schema"]
