"""``cluster_pages``: which views a query selects, what the page holds and where the next
starts, and long work that gives the loop a turn."""

from __future__ import annotations

import asyncio
import json
import time

from pydantic import TypeAdapter

from tandem.orchestrator.cluster_pages import (
    ClusterQuery,
    Pacer,
    as_json,
    drop,
    json_list,
    page_of,
)
from tandem.orchestrator.facade import NotFoundError
from tandem.orchestrator.views import ClusterView, ServiceStatus

NAMES = [f"c{i}" for i in range(10)]  # c0..c9, in name order
#: c0, c3, c6, c9 serve; the others are down; c4 is gone by the time its view is built.
SERVING = {"c0", "c3", "c6", "c9"}


def view(name: str) -> ClusterView:
    if name == "c4":
        raise NotFoundError(name)
    status = ServiceStatus.SERVING if name in SERVING else ServiceStatus.DOWN
    return ClusterView(name=name, service=status)


def nodes_of(name: str) -> list[str]:
    return ["a", "b"] if name in {"c1", "c2", "c7"} else ["a"]


async def page(
    query: ClusterQuery, members: set[str] | None = None
) -> tuple[list[str], int, str | None]:
    got = await page_of(
        query, NAMES, view=view, nodes_of=nodes_of, keep=lambda v: v.name, members=members
    )
    return got.items, got.total, got.next_after


async def test_without_a_status_only_the_pages_views_are_built() -> None:
    built: list[str] = []

    def counted(name: str) -> ClusterView:
        built.append(name)
        return view(name)

    got = await page_of(
        ClusterQuery(limit=3, after="c1"), NAMES, view=counted, nodes_of=nodes_of, keep=as_json
    )
    assert built == ["c2", "c3", "c4"]
    assert [json.loads(b)["name"] for b in got.items] == ["c2", "c3"]  # c4 is gone: skipped
    assert (got.total, got.next_after) == (10, "c4")  # the next page starts after it all the same
    assert await page(ClusterQuery(limit=None)) == ([n for n in NAMES if n != "c4"], 10, None)
    assert await page(ClusterQuery(limit=5, after="c5")) == (["c6", "c7", "c8", "c9"], 10, None)


async def test_a_status_filter_counts_every_match_and_pages_them() -> None:
    query = ClusterQuery(limit=2, status=frozenset({ServiceStatus.SERVING}))
    assert await page(query) == (["c0", "c3"], 4, "c3")
    assert await page(ClusterQuery(limit=2, after="c3", status=query.status)) == (
        ["c6", "c9"],
        4,
        None,
    )
    down = frozenset({ServiceStatus.DOWN})
    assert await page(ClusterQuery(limit=10, status=down)) == (
        ["c1", "c2", "c5", "c7", "c8"],
        5,
        None,
    )


async def test_cheap_filters_group_node_and_part_of_the_name() -> None:
    assert await page(ClusterQuery(), members={"c7", "c2", "zz"}) == (["c2", "c7"], 2, None)
    assert await page(ClusterQuery(node="b")) == (["c1", "c2", "c7"], 3, None)
    assert await page(ClusterQuery(q="C1")) == (["c1"], 1, None)
    both = ClusterQuery(node="b", status=frozenset({ServiceStatus.DOWN}), limit=1)
    assert await page(both) == (["c1"], 3, "c1")


async def test_long_work_gives_the_loop_a_turn_every_slice() -> None:
    turns = 0
    stop = False

    async def other() -> None:
        nonlocal turns
        while not stop:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    pacer = Pacer(slice_s=0.002)
    started = time.perf_counter()
    before = turns
    while time.perf_counter() - started < 0.03:
        await pacer.turn()  # busy: 30 ms of work in between
    during = turns - before
    stop = True
    await task
    assert 5 <= during <= 30  # about one turn per 2 ms slice, not one per item


async def test_drop_empties_and_json_list_writes_the_views_as_the_api_does() -> None:
    views = [view(n) for n in ("c0", "c1")]
    body = await json_list(views)
    assert json.loads(body) == json.loads(TypeAdapter(list[ClusterView]).dump_json(views))
    await drop(views)
    assert views == []
