"""The web console: static files served at ``/`` (the page) and ``/console/`` (its assets).

The page and its assets hold no data, so they need no token; everything the console shows
it reads from ``/api/v1`` with the token the operator logs in with (kept in the tab's
``sessionStorage``). The files are package data of ``tandem.orchestrator.console``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
ASSETS_PATH = "/console"

#: The page loads only its own scripts and styles and talks only to this origin.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install_console(app: FastAPI) -> None:
    """Serve the console on ``app``: ``/`` the page, ``/console/...`` its assets."""
    index = CONSOLE_DIR / "index.html"
    if not index.is_file():  # a broken install: the API still works without its console
        log.error("web console not installed: %s is missing", index)
        return
    app.mount(ASSETS_PATH, StaticFiles(directory=CONSOLE_DIR), name="console")

    @app.get("/", include_in_schema=False)
    async def console_page() -> FileResponse:
        return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)
