"""The orchestrator's REST API over HTTP: a real uvicorn on 127.0.0.1 (port 0, started with
``api/server.py``) called with ``httpx.AsyncClient``.

What is under test here is the HTTP layer: authentication and roles, routing, status codes,
validation and error messages, the audit of mutations, metrics, OpenAPI and the embedded
server. The facade is a small in-memory ``OrchestratorFacade`` written below; the real
orchestrator behind the facade is tested elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tandem.events.catalog.vocabulary import SagaKind
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.server import RunningServer, ServerStartError, serve, start_server
from tandem.orchestrator.cluster_pages import ClusterPage, ClusterQuery, page_of
from tandem.orchestrator.facade import (
    ConflictError,
    InvalidQueryError,
    NotFoundError,
    OrchestratorFacade,
)
from tandem.orchestrator.live_feed import LiveFeed
from tandem.orchestrator.views import (
    ActionPreview,
    ClusterView,
    EventView,
    GroupMemberView,
    GroupView,
    LagHistoryView,
    NodeView,
    SagaView,
    ServiceStatus,
)

T = TypeVar("T")
VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
ADMIN = "admin-token-0123456789abc"
TOKENS = f"viewer {VIEWER};operator {OPERATOR};admin {ADMIN}"
NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:6]


@dataclass
class Action:
    actor: str
    action: str
    arguments: dict[str, object]
    outcome: str
    source: str


@dataclass
class FakeFacade:
    """Just enough orchestrator for the HTTP layer: two clusters, one group, one saga."""

    clusters_: dict[str, ClusterView] = field(default_factory=dict)
    sagas: dict[str, SagaView] = field(default_factory=dict)
    events_: list[EventView] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    event_queries: list[tuple[str | None, int, int]] = field(default_factory=list)
    conflict: str | None = None
    leader: bool = True
    audit_fails: bool = False
    live: LiveFeed = field(default_factory=LiveFeed)

    def __post_init__(self) -> None:
        self.clusters_ = {
            "alpha": ClusterView(
                name="alpha",
                active="a1",
                epoch=3,
                nodes=[NodeView(name="a1", alive=True), NodeView(name="a2", alive=True)],
            ),
            "beta": ClusterView(
                name="beta",
                active="b1",
                epoch=7,
                nodes=[NodeView(name="b1", alive=True), NodeView(name="b2", alive=False)],
                saga="saga-1",
            ),
        }
        self._new_saga(SagaKind.SWITCHOVER, "beta", "b2", "maintenance")
        self.events_ = [
            EventView(
                seq=seq,
                id=f"ev-{seq}",
                type="HeartbeatLost",
                cluster="alpha" if seq % 2 else "beta",
                node="a1" if seq % 2 else "b1",
                epoch=1,
                occurred_at=NOW,
                payload={"n": seq},
            )
            for seq in range(1, 6)
        ]

    def _new_saga(self, kind: SagaKind, cluster: str, to: str | None, reason: str) -> str:
        saga_id = f"saga-{len(self.sagas) + 1}"
        self.sagas[saga_id] = SagaView(
            id=saga_id,
            kind=kind,
            cluster=cluster,
            from_node=None,
            to_node=to or "auto",
            reason=reason,
            started_at=NOW,
        )
        return saga_id

    async def cluster_page(
        self, query: ClusterQuery, keep: Callable[[ClusterView], T]
    ) -> ClusterPage[T]:
        if query.group not in (None, "payments"):
            raise InvalidQueryError("group", f"no group named {query.group!r}")
        return await page_of(
            query,
            sorted(self.clusters_),
            view=self.cluster,
            nodes_of=lambda c: [n.name for n in self.clusters_[c].nodes],
            keep=keep,
            members={"alpha"} if query.group else None,
        )

    def cluster(self, name: str) -> ClusterView:
        try:
            return self.clusters_[name]
        except KeyError:
            raise NotFoundError(f"no cluster named {name!r}") from None

    async def groups(self) -> list[GroupView]:
        members = [GroupMemberView(cluster="alpha", priority=1)]
        return [GroupView(name="payments", members=members)]

    def saga(self, saga_id: str) -> SagaView:
        try:
            return self.sagas[saga_id]
        except KeyError:
            raise NotFoundError(f"no saga {saga_id!r}") from None

    async def events(self, cluster: str | None, after: int, limit: int) -> list[EventView]:
        self.event_queries.append((cluster, after, limit))
        chosen = [e for e in self.events_ if e.seq > after and cluster in (None, e.cluster)]
        return chosen[:limit]

    async def switchover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        self.cluster(cluster)
        if self.conflict:
            raise ConflictError(self.conflict)
        self.calls.append(("switchover", cluster, str(to), actor, reason))
        return self._new_saga(SagaKind.SWITCHOVER, cluster, to, reason)

    async def failover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        self.cluster(cluster)
        if self.conflict:
            raise ConflictError(self.conflict)
        self.calls.append(("failover", cluster, str(to), actor, reason))
        return self._new_saga(SagaKind.FAILOVER, cluster, to, reason)

    async def group_switchover(self, group: str, actor: str, reason: str) -> str:
        if group != "payments":
            raise NotFoundError(f"no group named {group!r}")
        self.calls.append(("group_switchover", group, actor, reason))
        return self._new_saga(SagaKind.GROUP_SWITCHOVER, "alpha", None, reason)

    async def record_operator_action(
        self, actor: str, action: str, arguments: dict[str, object], outcome: str, source: str
    ) -> None:
        if self.audit_fails:
            raise RuntimeError("the bus is down")
        self.actions.append(Action(actor, action, arguments, outcome, source))

    def is_leader(self) -> bool:
        return self.leader

    def live_feed(self) -> LiveFeed:
        return self.live

    def lag_history(self, cluster: str, minutes: float) -> LagHistoryView:
        self.cluster(cluster)
        return LagHistoryView(cluster=cluster, every_s=10, keep_s=3600)

    def switchover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        self.cluster(cluster)
        return ActionPreview(kind=SagaKind.SWITCHOVER, cluster=cluster, allowed=True, to_node=to)

    def failover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        self.cluster(cluster)
        return ActionPreview(kind=SagaKind.FAILOVER, cluster=cluster, allowed=False)


# The fake must satisfy the protocol the API depends on (checked by mypy where it runs).
_conforms: OrchestratorFacade = FakeFacade()


@pytest.fixture
def facade() -> FakeFacade:
    return FakeFacade()


@pytest.fixture
async def server(facade: FakeFacade) -> AsyncIterator[RunningServer]:
    app = create_app(facade, load_tokens(None, TOKENS))
    running = await start_server(app, "127.0.0.1", 0)
    assert app.state.port == running.port
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30, trust_env=False) as c:
        yield c


# -- authentication and roles ----------------------------------------------------------------


async def test_without_a_token_the_answer_is_401_with_a_bearer_challenge(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/api/v1/clusters", "/api/v1/clusters/alpha", "/api/v1/events"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in response.json()["detail"]


async def test_a_wrong_token_is_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    for headers in (
        bearer("not-a-token-of-this-orchestrator"),
        {"Authorization": f"Basic {VIEWER}"},
        {"Authorization": "Bearer"},
    ):
        response = await client.get("/api/v1/clusters", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
    response = await client.get("/api/v1/clusters", headers=bearer("x" * 40))
    assert response.json() == {"detail": "unknown API token"}
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


async def test_a_viewer_cannot_start_a_switchover(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    response = await client.post(
        "/api/v1/clusters/alpha/switchover", json={}, headers=bearer(VIEWER)
    )
    assert response.status_code == 403
    assert "needs the operator role" in response.json()["detail"]
    assert "viewer" in response.json()["detail"]
    assert facade.calls == []


async def test_an_admin_may_do_what_an_operator_may(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/clusters/alpha/switchover", headers=bearer(ADMIN))
    assert response.status_code == 202


async def test_authentication_comes_before_the_body_is_looked_at(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    response = await client.post(
        "/api/v1/clusters/alpha/switchover",
        content=b'{"to": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    assert facade.actions == []


# -- reading ---------------------------------------------------------------------------------


async def test_lists_of_clusters_and_groups(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/clusters", headers=bearer(VIEWER))
    assert response.status_code == 200
    clusters = [ClusterView.model_validate(c) for c in response.json()]
    assert [c.name for c in clusters] == ["alpha", "beta"]
    assert clusters[1].saga == "saga-1"

    response = await client.get("/api/v1/clusters/alpha", headers=bearer(VIEWER))
    assert response.status_code == 200
    assert ClusterView.model_validate(response.json()).epoch == 3

    response = await client.get("/api/v1/groups", headers=bearer(OPERATOR))
    assert response.status_code == 200
    assert [g["name"] for g in response.json()] == ["payments"]


async def test_clusters_carry_their_service_status_and_reason(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    alpha = facade.clusters_["alpha"]
    a1, a2 = alpha.nodes
    facade.clusters_["alpha"] = alpha.model_copy(
        update={
            "service": ServiceStatus.DOWN,
            "service_reason": "nobody serves: a1 fenced itself",
            "nodes": [a1, a2.model_copy(update={"lag_oldest_age_s": 4.5})],
        }
    )
    body = (await client.get("/api/v1/clusters/alpha", headers=bearer(VIEWER))).json()
    assert (body["service"], body["service_reason"]) == ("down", "nobody serves: a1 fenced itself")
    assert body["health"] == "unknown"  # the old field stays
    assert {"replica_state", "lag_batches", "lag_bytes", "lag_oldest_age_s"} <= set(
        body["nodes"][0]
    )
    listed = (await client.get("/api/v1/clusters", headers=bearer(VIEWER))).json()
    assert listed[0]["service"] == "down"
    group = (await client.get("/api/v1/groups", headers=bearer(VIEWER))).json()[0]
    assert {"service", "service_reason"} <= set(group)
    assert {"service", "service_reason"} <= set(group["members"][0])
    got = samples((await client.get("/metrics")).text)
    current = frozenset({("cluster", "alpha"), ("status", "down")})
    other = frozenset({("cluster", "alpha"), ("status", "serving")})
    assert got[("tandem_cluster_service_status", current)] == 1
    assert got[("tandem_cluster_service_status", other)] == 0
    assert body["nodes"][1]["lag_oldest_age_s"] == 4.5
    age = "tandem_node_replication_lag_oldest_age_seconds"
    assert got[(age, frozenset({("cluster", "alpha"), ("node", "a2")}))] == 4.5
    assert (age, frozenset({("cluster", "alpha"), ("node", "a1")})) not in got  # unknown


async def test_unknown_cluster_and_saga_are_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/clusters/gamma", headers=bearer(VIEWER))
    assert response.status_code == 404
    assert response.json() == {"detail": "no cluster named 'gamma'"}
    response = await client.get("/api/v1/sagas/saga-404", headers=bearer(VIEWER))
    assert response.status_code == 404
    assert response.json() == {"detail": "no saga 'saga-404'"}
    response = await client.get("/api/v1/nothing-here", headers=bearer(VIEWER))
    assert response.status_code == 404
    assert "detail" in response.json()


async def test_an_invalid_cluster_name_in_the_path_is_explained(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/clusters/Not_A_Name", headers=bearer(VIEWER))
    assert response.status_code == 422
    assert response.json()["detail"].startswith("cluster: cluster name 'Not_A_Name' is invalid")


async def test_events_pass_their_query_on(client: httpx.AsyncClient, facade: FakeFacade) -> None:
    response = await client.get("/api/v1/events", headers=bearer(VIEWER))
    assert response.status_code == 200
    assert [e["seq"] for e in response.json()] == [1, 2, 3, 4, 5]
    response = await client.get(
        "/api/v1/events",
        params={"cluster": "alpha", "after": 1, "limit": 1},
        headers=bearer(VIEWER),
    )
    assert response.status_code == 200
    assert [EventView.model_validate(e).seq for e in response.json()] == [3]
    assert facade.event_queries == [(None, 0, 100), ("alpha", 1, 1)]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"after": -1}, "after"),
        ({"cluster": "ALPHA"}, "cluster"),
    ],
)
async def test_events_query_validation(
    client: httpx.AsyncClient, facade: FakeFacade, params: dict[str, int | str], field: str
) -> None:
    response = await client.get("/api/v1/events", params=params, headers=bearer(VIEWER))
    assert response.status_code == 422
    body = response.json()
    assert body["detail"].startswith(f"{field}: ")
    assert [e["field"] for e in body["errors"]] == [field]
    assert facade.event_queries == []


# -- mutations -------------------------------------------------------------------------------


async def test_a_switchover_is_accepted_with_its_saga(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    response = await client.post(
        "/api/v1/clusters/alpha/switchover",
        json={"to": "a2", "reason": "patching a1"},
        headers=bearer(OPERATOR),
    )
    assert response.status_code == 202
    body = response.json()
    saga_id = body["saga_id"]
    assert saga_id in facade.sagas
    assert body == {"saga_id": saga_id, "status_url": f"/api/v1/sagas/{saga_id}"}
    assert response.headers["location"] == body["status_url"]
    actor = f"operator:{fingerprint(OPERATOR)}"
    assert facade.calls == [("switchover", "alpha", "a2", actor, "patching a1")]

    status = await client.get(body["status_url"], headers=bearer(VIEWER))
    assert status.status_code == 200
    saga = SagaView.model_validate(status.json())
    assert (saga.id, saga.cluster, saga.to_node) == (saga_id, "alpha", "a2")


async def test_a_switchover_without_a_body_picks_the_target_and_a_default_reason(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    response = await client.post("/api/v1/clusters/alpha/switchover", headers=bearer(OPERATOR))
    assert response.status_code == 202
    assert facade.calls[0][1:3] == ("alpha", "None")
    assert facade.calls[0][4] == "requested by an operator"


async def test_mutations_of_an_unknown_cluster_are_404(client: httpx.AsyncClient) -> None:
    for action, body in (("switchover", {}), ("failover", {"confirm": True})):
        response = await client.post(
            f"/api/v1/clusters/gamma/{action}", json=body, headers=bearer(OPERATOR)
        )
        assert response.status_code == 404
        assert response.json() == {"detail": "no cluster named 'gamma'"}


async def test_a_conflict_is_409_with_the_orchestrators_message(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    facade.conflict = "a saga already runs on alpha: saga-1"
    response = await client.post(
        "/api/v1/clusters/alpha/switchover", json={"to": "a2"}, headers=bearer(OPERATOR)
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "a saga already runs on alpha: saga-1"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"to": "Node_2!"}, "to: node name 'Node_2!' is invalid"),
        ({"to": 7}, "to: Input should be a valid string"),
        ({"to": "a2", "bogus": 1}, "unknown field 'bogus'"),
        ({"reason": ""}, "reason: String should have at least 1 character"),
    ],
)
async def test_bad_switchover_requests_are_422_naming_the_field(
    client: httpx.AsyncClient, facade: FakeFacade, body: dict[str, object], expected: str
) -> None:
    response = await client.post(
        "/api/v1/clusters/alpha/switchover", json=body, headers=bearer(OPERATOR)
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith(expected)
    assert facade.calls == []


async def test_a_body_that_is_not_a_json_object_is_explained(client: httpx.AsyncClient) -> None:
    url = "/api/v1/clusters/alpha/switchover"
    cases: list[dict[str, object]] = [
        {"content": b'{"to": "a2"}'},  # no Content-Type
        {"json": ["a2"]},
    ]
    for case in cases:
        response = await client.post(url, headers=bearer(OPERATOR), **case)  # type: ignore[arg-type]
        assert response.status_code == 422
        assert response.json()["detail"] == (
            "the body must be a JSON object sent with Content-Type: application/json"
        )
    response = await client.post(
        url,
        content=b'{"to": ',
        headers={**bearer(OPERATOR), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"json": {}}, {"json": {"confirm": False}}, {"json": {"to": "a2", "reason": "down"}}],
)
async def test_a_failover_needs_confirm_true(
    client: httpx.AsyncClient, facade: FakeFacade, kwargs: dict[str, object]
) -> None:
    response = await client.post(
        "/api/v1/clusters/alpha/failover",
        headers=bearer(OPERATOR),
        **kwargs,  # type: ignore[arg-type]
    )
    assert response.status_code == 422
    assert "a failover needs confirm: true" in response.json()["detail"]
    assert facade.calls == []


async def test_a_confirmed_failover_is_accepted(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    response = await client.post(
        "/api/v1/clusters/beta/failover",
        json={"to": "b2", "confirm": True, "reason": "b1 is gone"},
        headers=bearer(OPERATOR),
    )
    assert response.status_code == 202
    saga_id = response.json()["saga_id"]
    assert facade.sagas[saga_id].kind is SagaKind.FAILOVER
    assert facade.calls == [
        ("failover", "beta", "b2", f"operator:{fingerprint(OPERATOR)}", "b1 is gone")
    ]


async def test_a_group_switchover(client: httpx.AsyncClient, facade: FakeFacade) -> None:
    response = await client.post(
        "/api/v1/groups/payments/switchover", json={"reason": "dr test"}, headers=bearer(OPERATOR)
    )
    assert response.status_code == 202
    assert response.json()["status_url"] == f"/api/v1/sagas/{response.json()['saga_id']}"
    response = await client.post("/api/v1/groups/nope/switchover", headers=bearer(OPERATOR))
    assert response.status_code == 404
    assert response.json() == {"detail": "no group named 'nope'"}
    response = await client.post(
        "/api/v1/groups/payments/switchover", json={"to": "a1"}, headers=bearer(OPERATOR)
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "to: Input should be 'primary', 'secondary' or 'tertiary'"
    response = await client.post(
        "/api/v1/groups/payments/switchover", json={"towards": "a1"}, headers=bearer(OPERATOR)
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "unknown field 'towards'"


# -- the audit of mutations ------------------------------------------------------------------


async def test_accepted_and_refused_mutations_are_recorded_without_the_token(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    url = "/api/v1/clusters/alpha/switchover"
    accepted = await client.post(url, json={"to": "a2", "reason": "r1"}, headers=bearer(OPERATOR))
    saga_id = accepted.json()["saga_id"]
    await client.post(url, json={"to": "BAD!"}, headers=bearer(OPERATOR))
    await client.post(url, json={}, headers=bearer(VIEWER))
    await client.post("/api/v1/clusters/alpha/failover", json={}, headers=bearer(ADMIN))
    facade.conflict = "alpha's target a2 is out of sync"
    await client.post(url, json={"to": "a2"}, headers=bearer(OPERATOR))
    # Not recorded: without a (valid) token there is no one to name; reads are not mutations.
    await client.post(url, json={})
    await client.post(url, json={}, headers=bearer("y" * 32))
    await client.get("/api/v1/clusters", headers=bearer(OPERATOR))

    operator = f"operator:{fingerprint(OPERATOR)}"
    assert [(a.actor, a.action, a.outcome) for a in facade.actions] == [
        (operator, "switchover", f"accepted: saga {saga_id}"),
        (
            operator,
            "switchover",
            "refused: 422 to: node name 'BAD!' is invalid: use 1-63 "
            "characters of a-z, 0-9 and '-', starting with a letter or digit",
        ),
        (
            f"viewer:{fingerprint(VIEWER)}",
            "switchover",
            "refused: 403 this needs the operator role or higher; your token has the viewer role",
        ),
        (
            f"admin:{fingerprint(ADMIN)}",
            "failover",
            "refused: 422 confirm: a failover needs confirm: true",
        ),
        (operator, "switchover", "refused: 409 alpha's target a2 is out of sync"),
    ]
    assert facade.actions[0].arguments == {"cluster": "alpha", "to": "a2", "reason": "r1"}
    assert facade.actions[1].arguments == {"cluster": "alpha", "to": "BAD!"}
    assert {a.source for a in facade.actions} == {"127.0.0.1"}
    for action in facade.actions:
        text = repr(action)
        assert all(token not in text for token in (VIEWER, OPERATOR, ADMIN))


async def test_a_failing_audit_does_not_change_the_answer(
    client: httpx.AsyncClient, facade: FakeFacade
) -> None:
    facade.audit_fails = True
    response = await client.post("/api/v1/clusters/alpha/switchover", headers=bearer(OPERATOR))
    assert response.status_code == 202
    assert facade.actions == []


# -- operations: health, metrics, docs -------------------------------------------------------


async def test_healthz_needs_no_token(client: httpx.AsyncClient, facade: FakeFacade) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "leader": True}
    facade.leader = False
    assert (await client.get("/healthz")).json() == {"ok": True, "leader": False}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_and_show_the_state(client: httpx.AsyncClient) -> None:
    await client.get("/api/v1/clusters", headers=bearer(VIEWER))
    await client.get("/api/v1/clusters/gamma", headers=bearer(VIEWER))
    await client.get("/api/v1/clusters/gamma", headers=bearer(VIEWER))
    await client.get("/random/probe/path")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "tandem_api_requests_total" in text
    assert "tandem_sagas_running" in text
    got = samples(text)

    def requests(route: str, status: str, method: str = "GET") -> float:
        labels = frozenset({("route", route), ("method", method), ("status", status)})
        return got.get(("tandem_api_requests_total", labels), 0.0)

    assert requests("/api/v1/clusters", "200") == 1
    assert requests("/api/v1/clusters/{cluster}", "404") == 2
    assert requests("<unmatched>", "404") == 1
    duration = frozenset({("route", "/api/v1/clusters/{cluster}"), ("method", "GET")})
    assert got[("tandem_api_request_duration_seconds_count", duration)] == 2
    assert got[("tandem_clusters", frozenset())] == 2
    assert got[("tandem_nodes_alive", frozenset())] == 3
    assert got[("tandem_sagas_running", frozenset())] == 1
    assert got[("tandem_is_leader", frozenset())] == 1


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/v1/clusters",
        "/api/v1/clusters/{cluster}",
        "/api/v1/clusters/{cluster}/switchover",
        "/api/v1/clusters/{cluster}/failover",
        "/api/v1/groups",
        "/api/v1/groups/{group}/switchover",
        "/api/v1/sagas/{saga_id}",
        "/api/v1/events",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    assert "bearer" in spec["components"]["securitySchemes"]
    switchover = paths["/api/v1/clusters/{cluster}/switchover"]["post"]
    assert "202" in switchover["responses"] and "409" in switchover["responses"]
    assert switchover["security"] == [{"bearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    metrics = (await client.get("/metrics")).text
    assert 'route="/docs"' in metrics and 'route="/openapi.json"' in metrics


# -- the embedded server ---------------------------------------------------------------------


def test_each_app_has_its_own_registry_unless_given_one() -> None:
    first = create_app(FakeFacade(), load_tokens(None, TOKENS))
    second = create_app(FakeFacade(), load_tokens(None, TOKENS))
    assert first.state.metrics.registry is not second.state.metrics.registry
    registry = CollectorRegistry()
    third = create_app(FakeFacade(), load_tokens(None, TOKENS), metrics_registry=registry)
    assert third.state.metrics.registry is registry


async def test_serve_reports_its_port_keeps_the_signal_handlers_and_stops_on_cancel() -> None:
    app = create_app(FakeFacade(), load_tokens(None, TOKENS))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ready = asyncio.Event()
    bound: list[tuple[str, int]] = []
    task = asyncio.create_task(
        serve(app, "127.0.0.1", 0, ready=ready, on_bound=lambda h, p: bound.append((h, p)))
    )
    await asyncio.wait_for(ready.wait(), 30)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    port = app.state.port
    assert bound == [("127.0.0.1", port)] and port > 0
    async with httpx.AsyncClient(trust_env=False) as client:
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(trust_env=False) as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_a_port_in_use_is_a_clear_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(FakeFacade(), load_tokens(None, TOKENS))
        with pytest.raises(ServerStartError, match=f"cannot start on 127.0.0.1:{port}"):
            await start_server(app, "127.0.0.1", port)


async def test_stopping_is_bounded_even_with_a_request_that_never_ends() -> None:
    entered = asyncio.Event()

    class StuckFacade(FakeFacade):
        async def switchover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
            entered.set()
            await asyncio.Event().wait()  # never answers
            raise AssertionError("unreachable")

    facade = StuckFacade()
    app = create_app(facade, load_tokens(None, TOKENS))
    running = await start_server(app, "127.0.0.1", 0, shutdown_timeout=0.5)
    async with httpx.AsyncClient(base_url=running.url, timeout=60, trust_env=False) as client:
        request = asyncio.create_task(
            client.post("/api/v1/clusters/alpha/switchover", headers=bearer(OPERATOR))
        )
        await asyncio.wait_for(entered.wait(), 30)
        await running.stop()  # returns although the request is still being handled
        assert running.task.done()
        try:
            response = await request
        except httpx.HTTPError:
            pass  # the connection was closed
        else:
            assert response.status_code == 500  # uvicorn's answer for a cancelled request
