"""The orchestrator's REST API (FastAPI): ``create_app`` over an ``OrchestratorFacade``,
``load_tokens`` for its bearer tokens, ``serve`` to run it with uvicorn in the service's
event loop."""

from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import (
    ApiRole,
    Principal,
    TokenConfigError,
    TokenStore,
    load_tokens,
)
from tandem.orchestrator.api.server import RunningServer, ServerStartError, serve, start_server

__all__ = [
    "ApiRole",
    "Principal",
    "RunningServer",
    "ServerStartError",
    "TokenConfigError",
    "TokenStore",
    "create_app",
    "load_tokens",
    "serve",
    "start_server",
]
