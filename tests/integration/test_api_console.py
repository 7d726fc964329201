"""The web console's files as the orchestrator's API serves them: the page at ``/`` and its
assets under ``/console/`` without a token, ``/api/v1`` still behind one, ``/docs`` kept;
every module a script imports is there (no build step: a missing file is a blank page)."""

from __future__ import annotations

import re
from typing import cast

import httpx
import pytest

from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.console import CONSOLE_DIR
from tandem.orchestrator.facade import OrchestratorFacade

TOKENS = "viewer viewer-token-for-console-tests-0123"
IMPORT = re.compile(r"""from\s+"(\./[^"]+)"|import\s+"(\./[^"]+)\"""")


@pytest.fixture
async def client() -> httpx.AsyncClient:
    # The console's routes never reach the facade.
    app = create_app(cast(OrchestratorFacade, object()), load_tokens(None, TOKENS))
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://console.test")


async def test_the_page_and_its_assets_need_no_token_and_the_api_still_does(
    client: httpx.AsyncClient,
) -> None:
    async with client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert '<script type="module" src="/console/main.js">' in page.text

        script = await client.get("/console/main.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert (await client.get("/console/console.css")).status_code == 200

        assert (await client.get("/api/v1/clusters")).status_code == 401
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/console/../api/console.py")).status_code == 404
        assert (await client.get("/console/%2e%2e/api/console.py")).status_code == 404


async def test_every_module_a_script_imports_is_served(client: httpx.AsyncClient) -> None:
    scripts = sorted(CONSOLE_DIR.rglob("*.js"))
    assert len(scripts) > 5
    async with client:
        for script in scripts:
            relative = script.parent.relative_to(CONSOLE_DIR)
            for match in IMPORT.finditer(script.read_text()):
                target = (relative / (match.group(1) or match.group(2))).as_posix()
                answer = await client.get(f"/console/{target}")
                assert answer.status_code == 200, f"{script.name} imports {target}: missing"
