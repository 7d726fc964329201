"""The orchestrator's REST API, as the CLI sees it: where it is, a small client, what it answers.

The answers are parsed into local models (a subset of the orchestrator's views, with enums
kept as plain strings) so the CLI never imports the orchestrator package and tolerates values
a newer orchestrator adds.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tandem.cli.stacks import select

DEFAULT_API_URL = "http://127.0.0.1:8700"
API_PREFIX = "/api/v1"


# -- where the API is, and with which token ---------------------------------------------------


#: An API URL the CLI chose itself -> where from ("stack demo-a"): named by a mutation.
_ORIGIN: dict[str, str] = {}
#: A stack's operator token -> its viewer token: a client given the first reads with the second.
_READ_TOKEN: dict[str, str] = {}


def resolve_api_url(flag: str | None) -> str:
    """--api, else TANDEM_API_URL, else the chosen ``tandem up`` stack's ``api_url``
    (``stacks.select``: ``--stack`` / ``TANDEM_STACK``, or the only one running), else 8700."""
    if flag:
        return flag
    env = os.environ.get("TANDEM_API_URL")
    if env:
        return env
    stack = select()
    if stack is not None and stack.get("api_url"):
        url = str(stack.get("api_url"))
        _ORIGIN[url.rstrip("/")] = f"stack {stack.name}"
        return url
    _ORIGIN[DEFAULT_API_URL] = "the default API"
    return DEFAULT_API_URL


def resolve_token(flag: str | None) -> str | None:
    """--token, else TANDEM_API_TOKEN, else the chosen ``tandem up`` stack's operator token;
    a client given that token reads with the stack's viewer token (``ApiClient``)."""
    if flag:
        return flag
    env = os.environ.get("TANDEM_API_TOKEN")
    if env:
        return env
    stack = select()
    if stack is None or not stack.get("operator_token"):
        return None
    operator = str(stack.get("operator_token"))
    viewer = stack.get("viewer_token")
    if viewer:
        _READ_TOKEN[operator] = viewer
    return operator


def acting_on(url: str) -> str | None:
    """``acting on stack demo-a (http://127.0.0.1:8081)``: what a mutation prints first on
    stderr when the CLI chose the API itself (a stack's, or the default); None for an API
    the user named (``--api``, ``TANDEM_API_URL``: scripts, SRM)."""
    origin = _ORIGIN.get(url.rstrip("/"))
    return f"acting on {origin} ({url})" if origin else None


# -- errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """The API answered, with an error status (or with something the CLI cannot read)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


class ApiUnreachable(Exception):
    """No answer from the API at ``url`` (refused, timed out, bad URL...)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the Tandem API at {url}: {reason}")
        self.url = url
        self.reason = reason


# -- what it answers ----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Node(_Model):
    name: str
    identity: str | None = None
    role: str | None = None
    health: str = "unknown"
    alive: bool = False
    isolated: bool = False
    fenced: bool = False
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    guard_deadline: datetime | None = None
    replication: str | None = None
    #: in_sync / catching_up / out_of_sync / stopped (None on the Active or unknown).
    replica_state: str | None = None
    lag_batches: int = 0
    lag_bytes: int = 0
    lag_oldest_age_s: float | None = None
    awaiting_operator: bool = False
    standby: bool = False
    standby_reason: str = ""
    role_since: datetime | None = None
    heartbeat_age_s: float | None = None
    lease_age_s: float | None = None
    lease_role: str | None = None
    lease_epoch: int | None = None
    failover_mode: str = "automatic"


class Alert(_Model):
    code: str
    message: str = ""
    node: str = ""
    raised_at: datetime | None = None


class LastSaga(_Model):
    id: str
    kind: str = ""
    state: str = ""
    reason: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


class PendingFailover(_Model):
    failed_node: str
    to: str
    reason: str = ""
    recommended_at: datetime | None = None


class Maintenance(_Model):
    """A paused cluster (``tandem pause``): no automatic failover or switchover."""

    by: str = ""
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None


class PauseAnswer(_Model):
    cluster: str
    maintenance: Maintenance | None = None
    message: str = ""


class DnsReconcileAccepted(_Model):
    """A DNS reconcile request stored: the dns_updater's answer comes after ``seq``."""

    request_id: str
    cluster: str | None = None
    seq: int = 0


class EventRecord(_Model):
    seq: int
    id: str
    type: str
    cluster: str = ""
    node: str = ""
    correlation_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class StandbyAnswer(_Model):
    cluster: str
    node: str
    standby: bool
    reason: str = ""
    message: str = ""
    #: Set when no node is left to take over.
    note: str = ""


class Cluster(_Model):
    name: str
    active: str | None = None
    epoch: int = 0
    nodes: list[Node] = Field(default_factory=list)
    saga: str | None = None
    pending_failover: PendingFailover | None = None
    health: str = "unknown"
    #: serving / degraded / down / needs_operator ("unknown": an orchestrator too old to say).
    service: str = "unknown"
    service_reason: str = ""
    maintenance: Maintenance | None = None
    alerts: list[Alert] = Field(default_factory=list)
    last_saga: LastSaga | None = None


class SagaStep(_Model):
    index: int
    name: str
    node: str = ""
    command: str = ""
    state: str = "pending"
    reason: str = ""


class Saga(_Model):
    id: str
    kind: str = ""
    cluster: str = ""
    from_node: str | None = None
    to_node: str | None = None
    state: str = "running"
    reason: str = ""
    steps: list[SagaStep] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "needs_operator")


class GroupMember(_Model):
    cluster: str
    priority: int = 0
    depends_on: list[str] = Field(default_factory=list)
    active: str | None = None
    health: str = "unknown"
    service: str = "unknown"
    service_reason: str = ""


class Group(_Model):
    name: str
    members: list[GroupMember] = Field(default_factory=list)
    health: str = "unknown"
    service: str = "unknown"
    service_reason: str = ""
    saga: str | None = None


class Accepted(_Model):
    saga_id: str
    status_url: str = ""


class GroupAccepted(Accepted):
    """A group switchover's answer; a directed one also names the members skipped."""

    to: str | None = None
    #: Member cluster -> why the saga leaves it where it is (already Active there).
    skipped: dict[str, str] = Field(default_factory=dict)


M = TypeVar("M")


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer, readable (a 422's list becomes ``loc: msg; ...``)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason_phrase or f"HTTP {response.status_code}"
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


def _segment(name: str) -> str:
    return quote(name, safe="")


class ApiClient:
    """Synchronous client of the orchestrator API; every request bounded by ``timeout`` s."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "tandem-cli"}
        #: Reads (GET) with a stack's viewer token when given its operator token.
        self._auth = {"write": token, "read": _READ_TOKEN.get(token, token) if token else None}
        self._announced = False
        try:
            self._http = httpx.Client(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx.Timeout(timeout),
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise ApiUnreachable(self.base_url, f"invalid URL ({exc})") from exc

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """``(status, decoded JSON)`` of a 2xx answer; raises for anything else."""
        token = self._auth["read" if method == "GET" else "write"]
        headers = {"Authorization": f"Bearer {token}"} if token else None
        if method != "GET" and not self._announced:
            self._announced = True
            if (line := acting_on(self.base_url)) is not None:
                print(line, file=sys.stderr, flush=True)
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiUnreachable(self.base_url, reason) from exc
        except httpx.InvalidURL as exc:
            raise ApiUnreachable(self.base_url, f"invalid URL ({exc})") from exc
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        try:
            return response.status_code, response.json()
        except ValueError:
            raise ApiError(
                response.status_code, f"the answer to {method} {path} is not JSON"
            ) from None

    def _get(self, path: str, kind: type[M]) -> M:
        return _parse(kind, *self._request("GET", path), f"GET {path}")

    def _post(self, path: str, body: dict[str, Any]) -> Accepted:
        return self._post_as(Accepted, path, body)

    def _post_as(self, kind: type[M], path: str, body: dict[str, Any]) -> M:
        return _parse(kind, *self._request("POST", path, body), f"POST {path}")

    def read(self, kind: type[M], path: str) -> M:
        """``GET /api/v1<path>`` as ``kind`` (``Any``: the JSON as it came), for commands
        that bring their own models."""
        return self._get(f"{API_PREFIX}{path}", kind)

    def send(self, kind: type[M], path: str, body: dict[str, Any]) -> M:
        """``POST /api/v1<path>`` with ``body``, its answer as ``kind``."""
        return self._post_as(kind, f"{API_PREFIX}{path}", body)

    def healthz(self) -> Any:
        return self._request("GET", "/healthz")[1]

    def clusters(self) -> list[Cluster]:
        return self._get(f"{API_PREFIX}/clusters", list[Cluster])

    def cluster(self, name: str) -> Cluster:
        return self._get(f"{API_PREFIX}/clusters/{_segment(name)}", Cluster)

    def groups(self) -> list[Group]:
        return self._get(f"{API_PREFIX}/groups", list[Group])

    def saga(self, saga_id: str) -> Saga:
        return self._get(f"{API_PREFIX}/sagas/{_segment(saga_id)}", Saga)

    def switchover(self, cluster: str, to: str | None, reason: str) -> Accepted:
        path = f"{API_PREFIX}/clusters/{_segment(cluster)}/switchover"
        return self._post(path, {"to": to, "reason": reason})

    def failover(self, cluster: str, to: str | None, reason: str) -> Accepted:
        path = f"{API_PREFIX}/clusters/{_segment(cluster)}/failover"
        return self._post(path, {"to": to, "confirm": True, "reason": reason})

    def pause(self, cluster: str, reason: str, for_s: float | None = None) -> PauseAnswer:
        path = f"{API_PREFIX}/clusters/{_segment(cluster)}/pause"
        body: dict[str, Any] = {"reason": reason, "for_s": for_s}
        return self._post_as(PauseAnswer, path, body)

    def resume(self, cluster: str, reason: str) -> PauseAnswer:
        path = f"{API_PREFIX}/clusters/{_segment(cluster)}/resume"
        return self._post_as(PauseAnswer, path, {"reason": reason})

    def standby(self, cluster: str, node: str, on: bool, reason: str) -> StandbyAnswer:
        """``on``: keep ``node`` from being chosen as a target; else let it be again."""
        verb = "standby" if on else "unstandby"
        path = f"{API_PREFIX}/clusters/{_segment(cluster)}/nodes/{_segment(node)}/{verb}"
        return self._post_as(StandbyAnswer, path, {"reason": reason})

    def dns_reconcile(self, cluster: str | None, reason: str) -> DnsReconcileAccepted:
        body = {"cluster": cluster, "reason": reason}
        return self._post_as(DnsReconcileAccepted, f"{API_PREFIX}/dns/reconcile", body)

    def events(self, after: int, limit: int = 200) -> list[EventRecord]:
        """Events of every cluster after stream position ``after``, oldest first."""
        return self._get(f"{API_PREFIX}/events?after={after}&limit={limit}", list[EventRecord])

    def group_switchover(self, group: str, reason: str, to: str | None = None) -> GroupAccepted:
        """``to``: an identity (primary, secondary, tertiary) to move every member to."""
        path = f"{API_PREFIX}/groups/{_segment(group)}/switchover"
        body: dict[str, Any] = {"reason": reason} if to is None else {"to": to, "reason": reason}
        return self._post_as(GroupAccepted, path, body)


def _parse(kind: type[M], status: int, data: Any, what: str) -> M:
    try:
        return TypeAdapter(kind).validate_python(data)
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) if errors else ""
        why = errors[0]["msg"] if errors else str(exc)
        raise ApiError(
            status, f"unexpected answer to {what}: {where + ': ' if where else ''}{why}"
        ) from None
