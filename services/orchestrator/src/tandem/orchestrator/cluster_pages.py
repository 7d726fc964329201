"""Pages of the cluster views (``GET /api/v1/clusters``) and views built without holding the
event loop.

A page is chosen from what is cheap first: the clusters' names (in name order, from where the
previous page ended), the members of a group, the nodes' names, a part of the name. Only a
status filter needs each candidate's view (the service status is folded from it). Views are
built a slice of ``SLICE_S`` at a time and the loop gets a turn between slices: a view costs
0.1 to 0.5 ms (a busy machine), so 2,000 of them in one go would hold heartbeats, leases and
every other request for 0.2 to 1 s.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from tandem.orchestrator.facade import NotFoundError
from tandem.orchestrator.views import ClusterView, ServiceStatus

#: The longest the loop is held between two turns while building or serializing views.
SLICE_S = 0.002
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

V = TypeVar("V")
T = TypeVar("T")


@dataclass(frozen=True)
class ClusterQuery:
    """Which clusters, and how many of them."""

    #: At most this many views; None: all of them (the orchestrator's own readers).
    limit: int | None = DEFAULT_LIMIT
    #: Only names after this one (in name order; it need not be a cluster's name).
    after: str | None = None
    #: Only clusters whose service status is one of these (empty: any).
    status: frozenset[ServiceStatus] = field(default_factory=frozenset)
    #: Only the members of this group.
    group: str | None = None
    #: Only clusters with a node of this name.
    node: str | None = None
    #: Only clusters whose name contains this (case-insensitive).
    q: str | None = None


@dataclass(frozen=True)
class ClusterPage(Generic[T]):
    #: What ``keep`` made of each view of the page (the views are not kept: 2,000 views
    #: held at once are ~60,000 objects for each full pass of the garbage collector).
    items: list[T]
    #: How many clusters match the filters, on every page.
    total: int
    #: The ``after`` of the next page; None: this is the last one.
    next_after: str | None = None


class Pacer:
    """``await pacer.turn()`` between items of a long piece of work: gives the loop a turn
    once ``slice_s`` has passed since the last one."""

    __slots__ = ("_since", "slice_s")

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self.slice_s = slice_s
        self._since = time.perf_counter()

    async def turn(self) -> None:
        if time.perf_counter() - self._since >= self.slice_s:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


async def build_views(
    names: Iterable[str], make: Callable[[str], V], keep: Callable[[V], T]
) -> list[T]:
    """``keep(make(name))`` for each name, a slice at a time; a name gone meanwhile is
    skipped."""
    out: list[T] = []
    pacer = Pacer()
    for name in names:
        await pacer.turn()
        try:
            made = make(name)
        except NotFoundError:
            continue
        out.append(keep(made))
    return out


def as_json(view: BaseModel) -> bytes:
    """A ``keep`` for the API: the view as its JSON."""
    return view.model_dump_json().encode()


async def drop(items: list[Any]) -> None:
    """Empty ``items`` a slice at a time. The last reference to 2,000 views going at once
    frees ~100,000 objects in one step: ~15 ms of the loop."""
    pacer = Pacer()
    while items:
        items.pop()
        await pacer.turn()


def json_array(parts: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(parts) + b"]"


async def json_list(items: Sequence[BaseModel]) -> bytes:
    """The JSON array of ``items`` (as each model's ``model_dump_json``), serialized a slice
    at a time."""
    parts: list[bytes] = []
    pacer = Pacer()
    for item in items:
        await pacer.turn()
        parts.append(as_json(item))
    return json_array(parts)


def _cheap(
    query: ClusterQuery,
    names: Sequence[str],
    nodes_of: Callable[[str], Collection[str]],
    members: Collection[str] | None,
) -> list[str]:
    needle = query.q.lower() if query.q else None
    out = []
    for name in names:
        if members is not None and name not in members:
            continue
        if needle is not None and needle not in name.lower():
            continue
        if query.node is not None and query.node not in nodes_of(name):
            continue
        out.append(name)
    return out


async def page_of(
    query: ClusterQuery,
    names: Sequence[str],
    *,
    view: Callable[[str], ClusterView],
    nodes_of: Callable[[str], Collection[str]],
    keep: Callable[[ClusterView], T],
    members: Collection[str] | None = None,
) -> ClusterPage[T]:
    """The page of ``query`` over ``names`` (sorted): ``view`` builds one cluster's view,
    ``keep`` makes of it what the page holds, ``nodes_of`` names a cluster's nodes,
    ``members`` are the group's clusters (with ``query.group``).

    Without a status filter only the page's views are built; with one, every candidate's
    (the total counts them all), a slice at a time."""
    candidates = _cheap(query, names, nodes_of, members)
    if not query.status:
        start = 0 if query.after is None else bisect_right(candidates, query.after)
        end = len(candidates) if query.limit is None else start + query.limit
        chosen = candidates[start:end]
        items = await build_views(chosen, view, keep)
        more = end < len(candidates) and bool(chosen)
        return ClusterPage(items, len(candidates), chosen[-1] if more else None)
    kept: list[T] = []
    last: str | None = None
    total = 0
    more = False
    pacer = Pacer()
    for name in candidates:
        await pacer.turn()
        try:
            v = view(name)
        except NotFoundError:
            continue
        if v.service not in query.status:
            continue
        total += 1
        if query.after is not None and name <= query.after:
            continue
        if query.limit is None or len(kept) < query.limit:
            kept.append(keep(v))
            last = name
        else:
            more = True
    return ClusterPage(kept, total, last if more else None)
