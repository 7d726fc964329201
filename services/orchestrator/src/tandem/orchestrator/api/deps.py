"""What the routers share: the facade and callers' roles as dependencies, the request body
base, and the 202 answer of a mutation."""

from __future__ import annotations

from typing import Annotated, cast
from urllib.parse import quote

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from tandem.orchestrator.api.auth import ApiRole, Principal, require
from tandem.orchestrator.api.errors import UNKNOWN_QUERY
from tandem.orchestrator.facade import OrchestratorFacade
from tandem.orchestrator.views import Accepted

PREFIX = "/api/v1"
#: Where ``create_app`` keeps the facade (``app.state.<this>``).
FACADE_KEY = "facade"
#: Mutation bodies are small; a larger one is refused (413) before it is read into memory.
MAX_BODY_BYTES = 16 * 1024
DEFAULT_REASON = "requested by an operator"


def get_facade(request: Request) -> OrchestratorFacade:
    facade = getattr(request.app.state, FACADE_KEY, None)
    if facade is None:
        raise RuntimeError("the app has no facade: build it with create_app")
    return cast(OrchestratorFacade, facade)


Facade = Annotated[OrchestratorFacade, Depends(get_facade)]
Viewer = Annotated[Principal, Depends(require(ApiRole.VIEWER))]
Operator = Annotated[Principal, Depends(require(ApiRole.OPERATOR))]
Admin = Annotated[Principal, Depends(require(ApiRole.ADMIN))]

Reason = Annotated[
    str, Field(min_length=1, max_length=500, description="Why; kept in the saga and the audit")
]


class RequestBody(BaseModel):
    """Base of the request bodies: unknown fields are refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def accepted(response: Response, saga_id: str) -> Accepted:
    """The 202 answer of a mutation; ``Location`` also points at the saga."""
    url = f"{PREFIX}/sagas/{quote(saga_id, safe='')}"
    response.headers["Location"] = url
    return Accepted(saga_id=saga_id, status_url=url)


def _query_params(dependant: Dependant) -> list[str]:
    """The query parameters a route reads: its own and its dependencies'."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names.extend(_query_params(sub))
    return names


async def refuse_unknown_query(request: Request) -> None:
    """Refuse (422) a query parameter the route does not read, naming it and the known
    ones: FastAPI would ignore it, and a misspelt filter would then silently match all."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = tuple(dict.fromkeys(_query_params(route.dependant)))  # a few: cheap
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        raise RequestValidationError(
            [
                {
                    "type": UNKNOWN_QUERY,
                    "loc": ("query", name),
                    "msg": "unknown query parameter",
                    "input": request.query_params[name],
                    "ctx": {"known": ", ".join(known) or "none"},
                }
                for name in unknown
            ]
        )


#: A route's parameter ``_known: Annotated[None, StrictQuery]`` (after its role's, so that a
#: caller without a token hears 401 first): its unknown query parameters are refused.
StrictQuery = Depends(refuse_unknown_query)
