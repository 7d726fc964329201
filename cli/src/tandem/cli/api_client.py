"""A small synchronous client of the orchestrator's REST API, and its errors.

Where the API is and which token to give it is ``api_target.py``'s; the answers are parsed
into the local models of ``api_models.py``.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from tandem.cli.api_models import (
    Accepted,
    Cluster,
    DnsReconcileAccepted,
    EventRecord,
    Group,
    GroupAccepted,
    PauseAnswer,
    Saga,
    StandbyAnswer,
)
from tandem.cli.api_target import acting_on, read_token

API_PREFIX = "/api/v1"
#: Clusters asked for per page (the API's most).
CLUSTERS_PAGE = 1000


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


def _same_origin(base_url: str, link: str) -> str:
    """The path (and query) of a ``Link`` target, relative or absolute; an absolute one
    elsewhere than ``base_url`` is refused (the token goes only where it was given)."""
    url = httpx.URL(link)
    if url.is_relative_url:
        return link
    base = httpx.URL(base_url)
    if (url.scheme, url.host, url.port) != (base.scheme, base.host, base.port):
        raise ApiError(0, f"the API's next page is elsewhere ({link}): not followed")
    return url.raw_path.decode()


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
        self._auth = {"write": token, "read": read_token(token) if token else None}
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
        status, data, _ = self._answer(method, path, body)
        return status, data

    def _answer(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any, httpx.Response]:
        """``_request``, with the response itself (its headers)."""
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
            return response.status_code, response.json(), response
        except ValueError:
            raise ApiError(
                response.status_code, f"the answer to {method} {path} is not JSON"
            ) from None

    def _get(self, path: str, kind: type[M]) -> M:
        return _parse(kind, *self._request("GET", path), f"GET {path}")

    def _get_pages(self, path: str, item: type[M]) -> list[M]:
        """Every item of a paged list (``GET /clusters``): ``path``, then each page its
        ``Link: <...>; rel="next"`` names, until one names none."""
        out: list[M] = []
        seen: set[str] = set()
        next_path: str | None = path
        while next_path is not None and next_path not in seen:
            seen.add(next_path)
            status, data, response = self._answer("GET", next_path)
            what = f"GET {next_path}"
            out.extend(_parse(item, status, x, what) for x in _parse(list[Any], status, data, what))
            link = response.links.get("next", {}).get("url")
            next_path = _same_origin(self.base_url, link) if link else None
        return out

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

    def remove(self, kind: type[M], path: str) -> M:
        """``DELETE /api/v1<path>``, its answer as ``kind``."""
        return _parse(kind, *self._request("DELETE", f"{API_PREFIX}{path}"), f"DELETE {path}")

    def healthz(self) -> Any:
        return self._request("GET", "/healthz")[1]

    def clusters(self) -> list[Cluster]:
        """Every cluster, a page of ``CLUSTERS_PAGE`` at a time."""
        return self._get_pages(f"{API_PREFIX}/clusters?limit={CLUSTERS_PAGE}", Cluster)

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
