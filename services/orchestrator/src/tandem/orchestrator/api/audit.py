"""The audit trail of mutations: every switchover or failover request that got past
authentication is recorded with ``facade.record_operator_action``, accepted or refused.

``AuditedRoute`` is the route class of the mutation routers. Around the path operation it

1. authenticates the caller first (401, not recorded: there is no one to name), before the
   body is even parsed, so that a caller without a valid token learns nothing else;
2. runs the operation (role check, validation, the facade call);
3. records ``(actor, action, arguments, outcome, source)`` where ``action`` is the route's
   name, ``arguments`` its path parameters and the JSON body as sent, ``outcome``
   ``"accepted: saga <id>"`` or ``"refused: <status> <message>"``, and ``source`` the
   client's address.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError

from tandem.orchestrator.api.auth import Principal, authenticate, bearer_scheme
from tandem.orchestrator.api.deps import get_facade
from tandem.orchestrator.api.errors import refusal
from tandem.orchestrator.views import Accepted

log = logging.getLogger(__name__)

#: How long the audit record may take before the answer goes out without it (logged).
RECORD_TIMEOUT_S = 5.0
_MAX_TEXT = 500
_MAX_ITEMS = 10


def _bounded(value: object, nested: bool = False) -> object:
    """A body value as it goes into the audit record: scalars kept (long text cut), a small
    object of scalars kept (a silence's matchers), the rest summarised, so that a record
    stays small whatever was sent."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "..."
    if isinstance(value, dict) and not nested and len(value) <= _MAX_ITEMS:
        return {str(k)[:_MAX_TEXT]: _bounded(v, nested=True) for k, v in value.items()}
    return f"<{type(value).__name__} omitted>"


def _arguments(request: Request, raw: bytes) -> dict[str, object]:
    arguments: dict[str, object] = dict(request.path_params)
    if not raw:
        return arguments
    try:
        data = json.loads(raw)
    except ValueError:
        arguments["body"] = "<not JSON>"
        return arguments
    if not isinstance(data, dict):
        arguments["body"] = "<not a JSON object>"
        return arguments
    for key, value in data.items():
        arguments.setdefault(str(key), _bounded(value))
    return arguments


def _outcome(response: Response) -> str:
    if 200 <= response.status_code < 300:
        try:
            saga_id = Accepted.model_validate_json(bytes(response.body)).saga_id
        except (ValidationError, AttributeError):
            return f"accepted: {response.status_code}"
        return f"accepted: saga {saga_id}"
    return f"refused: {response.status_code}"


async def _record(
    request: Request, principal: Principal, action: str, raw: bytes, outcome: str
) -> None:
    source = request.client.host if request.client is not None else "unknown"
    try:
        facade = get_facade(request)
        await asyncio.wait_for(
            facade.record_operator_action(
                principal.actor, action, _arguments(request, raw), outcome, source
            ),
            RECORD_TIMEOUT_S,
        )
    except Exception:
        log.exception(
            "could not record the operator action %s by %s (%s)", action, principal.actor, outcome
        )


class AuditedRoute(APIRoute):
    """Route class of mutations: authenticate first, then record what came of the request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = self.name

        async def audited(request: Request) -> Response:
            principal = await authenticate(request, await bearer_scheme(request))
            raw = b""
            try:
                raw = await request.body()
                response = await handler(request)
            except Exception as exc:
                refused = refusal(exc)
                if refused is not None:
                    outcome = f"refused: {refused[0]} {refused[1]}"
                else:
                    outcome = f"failed: 500 internal error ({type(exc).__name__})"
                await _record(request, principal, action, raw, outcome)
                raise
            await _record(request, principal, action, raw, _outcome(response))
            return response

        return audited
