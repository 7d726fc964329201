"""Rotating the API tokens without a restart, and no secret in any log: a real uvicorn (port
0, with its access log on) serving ``create_app`` over a real tokens file, called with
``httpx``; the file is rewritten under the running app."""

from __future__ import annotations

import asyncio
import logging
import os
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from tandem.events import api_tokens
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import TokenConfigError, TokenStore, load_tokens
from tandem.orchestrator.api.server import serve
from tandem.orchestrator.cluster_pages import ClusterPage, ClusterQuery
from tandem.orchestrator.facade import NotFoundError
from tandem.orchestrator.views import ClusterView, NodeView

#: Every secret this module makes; the log check looks for each of them.
A = "token-A-" + api_tokens.new_token()
B = "token-B-" + api_tokens.new_token()
C = "token-C-" + api_tokens.new_token()
VIEWER = "token-V-" + api_tokens.new_token()
ENV_ADMIN = "token-E-" + api_tokens.new_token()
SECRETS = (A, B, C, VIEWER, ENV_ADMIN)


T = TypeVar("T")


@dataclass
class Facade:
    """Just enough orchestrator for authentication and one audited mutation."""

    actions: list[tuple[str, str, str]] = field(default_factory=list)

    async def cluster_page(
        self, query: ClusterQuery, keep: Callable[[ClusterView], T]
    ) -> ClusterPage[T]:
        return ClusterPage([keep(self.cluster("alpha"))], 1)

    def cluster(self, name: str) -> ClusterView:
        if name != "alpha":
            raise NotFoundError(f"no cluster named {name!r}")
        return ClusterView(name="alpha", active="a1", epoch=1, nodes=[NodeView(name="a1")])

    async def switchover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        self.cluster(cluster)
        return "saga-1"

    async def record_operator_action(
        self, actor: str, action: str, arguments: dict[str, object], outcome: str, source: str
    ) -> None:
        self.actions.append((actor, action, outcome))

    def is_leader(self) -> bool:
        return True


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fingerprint(token: str) -> str:
    return api_tokens.digest(token).hex()[:6]


def rewrite(path: Path, text: str) -> None:
    """Replace the file as an operator should (a new file renamed over the old one), with
    an mtime moved on in case the clock is coarse."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    new = path.with_name(path.name + ".new")
    new.write_text(text, encoding="utf-8")
    new.chmod(0o600)
    os.utime(new, ns=(before + 10**9, before + 10**9))
    new.replace(path)


@dataclass
class Api:
    client: httpx.AsyncClient
    tokens: TokenStore
    facade: Facade
    path: Path

    async def status(self, token: str) -> int:
        return (await self.client.get("/api/v1/clusters", headers=bearer(token))).status_code


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-tokens"
    rewrite(path, f"operator {A}\nviewer {api_tokens.hashed(VIEWER)}\n")
    return path


@pytest.fixture
async def api(tokens_file: Path) -> AsyncIterator[Api]:
    # check_every_s=0: every request looks at the file (the default looks once a second).
    tokens = load_tokens(tokens_file, f"admin {ENV_ADMIN}", check_every_s=0)
    facade = Facade()
    app = create_app(facade, tokens)  # type: ignore[arg-type]
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve(app, "127.0.0.1", 0, access_log=True, on_bound=lambda _h, p: bound.set_result(p))
    )
    port = await asyncio.wait_for(bound, 30)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30, trust_env=False
        ) as client:
            yield Api(client, tokens, facade, tokens_file)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def test_a_rotated_token_works_without_restart_and_the_old_one_is_refused(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    assert await api.status(A) == 200
    with caplog.at_level(logging.INFO, logger="tandem.orchestrator.api.auth"):
        rewrite(api.path, f"operator {api_tokens.hashed(B)}\nviewer {api_tokens.hashed(VIEWER)}\n")
        assert await api.status(A) == 401
    assert await api.status(B) == 200
    assert await api.status(VIEWER) == 200
    assert await api.status(ENV_ADMIN) == 200  # the environment's tokens stay
    reloaded = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
    assert reloaded == [
        f"API tokens reloaded from {api.path}: 3 tokens (roles: 1 viewer, 1 operator, 1 admin)"
    ]


async def test_a_mutation_sees_the_rotation_and_audits_the_new_token(api: Api) -> None:
    rewrite(api.path, f"operator {api_tokens.hashed(B)}\n")
    old = await api.client.post("/api/v1/clusters/alpha/switchover", headers=bearer(A))
    assert old.status_code == 401
    new = await api.client.post("/api/v1/clusters/alpha/switchover", headers=bearer(B))
    assert new.status_code == 202, new.text
    assert api.facade.actions == [
        (f"operator:{fingerprint(B)}", "switchover", "accepted: saga saga-1")
    ]


async def test_requests_arriving_during_a_reload_wait_for_the_new_tokens(api: Api) -> None:
    rewrite(api.path, f"operator {api_tokens.hashed(B)}\n")
    codes = await asyncio.gather(*(api.status(A) for _ in range(20)))
    assert set(codes) == {401}


@pytest.mark.parametrize(
    "bad",
    [
        f"operator {api_tokens.hashed(C)}\nsuperuser {B}\n",  # an unknown role
        f"operator {C}\n{B} operator\n",  # a token before its role
        f"operator {api_tokens.hashed(C)}\nviewer {api_tokens.hashed(C)[:-2]}\n",  # cut hash
        f"operator {C}\nadmin {C}\n",  # the same token twice
        f"operator {C}\nviewer {C[:10]}\n",  # too short
        f"admin {ENV_ADMIN}\n",  # already given by the environment
    ],
)
async def test_an_invalid_rewrite_keeps_the_tokens_in_force_and_says_why(
    api: Api, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    rewrite(api.path, f"operator {api_tokens.hashed(B)}\n")
    assert await api.status(B) == 200
    with caplog.at_level(logging.INFO):
        rewrite(api.path, bad)
        assert await api.status(B) == 200
        assert await api.status(C) == 401
        assert await api.status(B) == 200  # looked at again: not logged again
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert f"the API token file {api.path} changed but cannot be used" in message
    assert f"{api.path}, line " in message or "already given" in message
    assert "the 2 tokens read before stay in force" in message
    for secret in SECRETS:
        assert secret not in caplog.text
    # Once fixed, the file is read again.
    rewrite(api.path, f"viewer {api_tokens.hashed(C)}\n")
    assert await api.status(C) == 200
    assert await api.status(B) == 401


async def test_a_file_that_disappears_keeps_the_tokens_in_force(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        api.path.unlink()
        for _ in range(3):
            assert await api.status(A) == 200
    assert len(caplog.records) == 1
    assert "No such file" in caplog.records[0].getMessage()
    rewrite(api.path, f"operator {api_tokens.hashed(B)}\n")
    assert await api.status(B) == 200
    assert await api.status(A) == 401


async def test_a_changed_file_is_looked_at_once_per_interval(tokens_file: Path) -> None:
    tokens = load_tokens(tokens_file, None, check_every_s=3600)
    rewrite(tokens_file, f"operator {api_tokens.hashed(B)}\n")
    await tokens.refresh()  # within the interval: not even looked at
    assert tokens.authenticate(A) is not None and tokens.authenticate(B) is None
    tokens._watch.next_check = 0  # type: ignore[union-attr]
    await tokens.refresh()
    assert tokens.authenticate(A) is None and tokens.authenticate(B) is not None


def _everything_logged(records: list[logging.LogRecord]) -> str:
    parts: list[str] = []
    for record in records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.extend(traceback.format_exception(record.exc_info[1]))
        if record.exc_text:
            parts.append(record.exc_text)
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)


async def test_no_secret_appears_in_any_log_of_the_auth_paths(
    tmp_path: Path, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    raised: list[str] = []
    # Starting: a plain token, a file open to others, bad files refused at load.
    rewrite(api.path, f"operator {A}\nviewer {VIEWER}\n")
    api.path.chmod(0o644)
    load_tokens(api.path, f"admin {ENV_ADMIN}")
    for bad in (f"superuser {B}\n", f"{B} viewer\n", f"viewer {B} {C}\n", f"viewer {B[:12]}\n"):
        rewrite(tmp_path / "bad", bad)
        with pytest.raises(TokenConfigError) as info:
            load_tokens(tmp_path / "bad", f"admin {ENV_ADMIN};viewer {C}")
        raised.append(str(info.value))
    with pytest.raises(TokenConfigError) as info:
        load_tokens(None, f"admin {ENV_ADMIN};admin {ENV_ADMIN}")
    raised.append(str(info.value))
    # Serving: good, wrong, missing and too weak tokens; reads and audited mutations.
    for token in (A, B, C, VIEWER, ENV_ADMIN, "x" * 40):
        await api.client.get("/api/v1/clusters", headers=bearer(token))
        await api.client.post(
            "/api/v1/clusters/alpha/switchover", json={"reason": "test"}, headers=bearer(token)
        )
    await api.client.get("/api/v1/clusters", headers={"Authorization": f"Basic {A}"})
    # Rotating: a good file, then bad ones, with requests in between.
    for text in (
        f"operator {api_tokens.hashed(B)}\n",
        f"superuser {C}\n",
        f"operator {C}\noperator {C}\n",
        f"viewer {api_tokens.hashed(VIEWER)}\noperator {B}\n",
    ):
        rewrite(api.path, text)
        for token in (A, B, C):
            await api.client.get("/api/v1/clusters", headers=bearer(token))
    api.path.unlink()
    await api.client.get("/api/v1/clusters", headers=bearer(B))

    logged = _everything_logged(caplog.records)
    assert "GET /api/v1/clusters" in logged  # the access log was on, and captured
    assert "reloaded" in logged and "cannot be used" in logged and "chmod 600" in logged
    actors = {actor for actor, _, _ in api.facade.actions}
    assert actors and all(":" in actor and len(actor.split(":")[1]) == 6 for actor in actors)
    for secret in SECRETS:
        assert secret not in logged, f"a token of this test is in the logs: {secret[:8]}..."
        for text in (*raised, *(repr(a) for a in api.facade.actions)):
            assert secret not in text
