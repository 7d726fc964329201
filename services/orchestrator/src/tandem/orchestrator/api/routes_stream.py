"""``GET /api/v1/stream``: the events and the clusters' state as they change, as Server-Sent
Events, resumable from the last event a client saw.

Frames: ``hello`` first (``{"position": N}``: the last event this replica folded); then each
event as ``id: <seq>`` / ``event: event`` / the JSON of one ``GET /events`` item; after the
events that touched a cluster, ``event: cluster`` with its view (as ``GET /clusters/{c}``),
which already reflects them. A comment line every ``KEEPALIVE_S`` keeps proxies from closing
an idle stream. A client resumes with ``?after=<seq>`` or ``Last-Event-ID``; without either
it gets new events only. The stream ends when this replica stops (at once, not at the end of
its grace period) or when the client falls too far behind: the client reconnects with the
last id it saw and misses nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse

from tandem.events.names import ClusterName
from tandem.orchestrator.api.deps import PREFIX, Facade, Viewer
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.api.server import STOPPING_KEY
from tandem.orchestrator.facade import NotFoundError, OrchestratorFacade
from tandem.orchestrator.live_feed import Folded
from tandem.orchestrator.views import EventView, event_view

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, tags=["events"])

KEEPALIVE_S = 15.0
#: Events read from the stream per page while a resuming client catches up.
BACKFILL_PAGE = 500
#: A page read from the stream that takes longer ends the response (the client retries).
BACKFILL_TIMEOUT_S = 30.0
#: Cluster views made and written at a time (see ``_cluster_chunks``).
VIEWS_PER_WRITE = 50
#: What a browser's EventSource waits before reconnecting (ms).
RETRY_MS = 2000


def _frame(event: str, data: str, *, id_: int | None = None) -> bytes:
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()


def _event_frame(view: EventView) -> bytes:
    return _frame("event", view.model_dump_json(), id_=view.seq)


def _cluster_frames(facade: OrchestratorFacade, names: Iterable[str]) -> Iterator[bytes]:
    feed = facade.live_feed()
    for name in names:

        def make(name: str = name) -> bytes:
            return _frame("cluster", facade.cluster(name).model_dump_json())

        try:
            yield feed.view_frame(name, make)
        except NotFoundError:
            continue  # a central service's own events (cluster "tandem"), or not configured


def _start(after: int | None, last_event_id: str | None) -> int | None:
    if after is not None:
        return after
    if last_event_id is None or not last_event_id.strip():
        return None
    try:
        seq = int(last_event_id)
    except ValueError:
        seq = -1
    if seq < 0:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"Last-Event-ID must be an event's seq (a whole number >= 0), got {last_event_id!r}",
        )
    return seq


@router.get(
    "/stream",
    summary="Events and cluster views as they change (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the stream"},
        **error_responses(422),
    },
)
async def stream(
    request: Request,
    facade: Facade,
    _: Viewer,
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster's")] = None,
    after: Annotated[
        int | None, Query(ge=0, description="Resume after this event seq (else: new only)")
    ] = None,
    last_event_id: Annotated[str | None, Header(description="Resume after this seq")] = None,
) -> StreamingResponse:
    start = _start(after, last_event_id)
    stopping = getattr(request.app.state, STOPPING_KEY, None)
    return StreamingResponse(
        _frames(facade, cluster, start, stopping if isinstance(stopping, asyncio.Event) else None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _frames(
    facade: OrchestratorFacade, cluster: str | None, start: int | None, stop: asyncio.Event | None
) -> AsyncIterator[bytes]:
    feed = facade.live_feed()
    # Subscribed before anything is read: an event folded meanwhile is queued, not missed.
    with feed.client() as client:
        yield f"retry: {RETRY_MS}\n".encode() + _frame(
            "hello", json.dumps({"position": feed.position})
        )
        last = feed.position if start is None else start
        touched: set[str] = set()
        if start is not None:
            # Catch up: from the stream while the feed no longer keeps what follows ``last``.
            while (recent := feed.recent_after(last)) is None:
                try:
                    page = await asyncio.wait_for(
                        facade.events(cluster, last, BACKFILL_PAGE), BACKFILL_TIMEOUT_S
                    )
                except Exception as exc:  # a bus fault: end; the client resumes from ``last``
                    log.warning("stream: reading events after %d failed: %r", last, exc)
                    return
                if not page:
                    break
                yield b"".join(_event_frame(view) for view in page)
                touched.update(view.cluster for view in page)
                last = page[-1].seq
            if sent := b"".join(_send(recent or [], cluster, last, touched)):
                yield sent
            last = max([last, *(f.seq for f in recent or [])])
            async for chunk in _cluster_chunks(facade, touched):
                yield chunk
        while True:
            batch = await client.next_batch(KEEPALIVE_S, stop)
            if stop is not None and stop.is_set():
                return  # the server stops: the client resumes with the next one
            if client.overflowed:
                log.info("stream: a client fell too far behind; it resumes after seq %d", last)
                return
            if not batch:
                yield b": keepalive\n\n"
                continue
            touched = set()
            if sent := b"".join(_send(batch, cluster, last, touched)):
                yield sent
            last = max(last, batch[-1].seq)
            async for chunk in _cluster_chunks(facade, touched):
                yield chunk


async def _cluster_chunks(facade: OrchestratorFacade, names: set[str]) -> AsyncIterator[bytes]:
    """The views of ``names``, ``VIEWS_PER_WRITE`` to a write: one write per frame costs more
    than the frame, and the loop gets a turn between slices (heartbeats are handled there)."""
    ordered = sorted(names)
    for start in range(0, len(ordered), VIEWS_PER_WRITE):
        chunk = b"".join(_cluster_frames(facade, ordered[start : start + VIEWS_PER_WRITE]))
        if chunk:
            yield chunk
        await asyncio.sleep(0)


def _send(batch: list[Folded], cluster: str | None, last: int, touched: set[str]) -> list[bytes]:
    out = []
    for f in batch:
        if f.seq <= last or (cluster is not None and f.event.cluster != cluster):
            continue
        if f.frame is None:  # made once, for every client
            f.frame = _event_frame(event_view(f.seq, f.event))
        out.append(f.frame)
        touched.add(f.event.cluster)
    return out
