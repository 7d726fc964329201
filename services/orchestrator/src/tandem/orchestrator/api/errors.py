"""Errors as the API answers them: ``{"detail": "<what went wrong, for a person>"}``.

``NotFoundError`` -> 404, ``ConflictError`` -> 409, request validation, an unknown query
parameter and ``InvalidQueryError`` -> 422 (the detail names each wrong field; ``errors``
lists them one by one for programs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from tandem.orchestrator.facade import ConflictError, InvalidQueryError, NotFoundError

#: The error type of an unknown query parameter (``deps.refuse_unknown_query``).
UNKNOWN_QUERY = "unknown_query_parameter"


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorBody(ErrorBody):
    errors: list[FieldError]


_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_NOT_AN_OBJECT = {"model_attributes_type", "model_type", "dict_type"}
_JSON_OBJECT_NEEDED = "the body must be a JSON object sent with Content-Type: application/json"


def _field(loc: Sequence[Any]) -> str:
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    if loc and loc[0] == "query":  # a repeated parameter's index says nothing to a person
        parts = [part for part in parts if not isinstance(part, int)]
    return ".".join(str(part) for part in parts)


def _message(error: dict[str, Any]) -> FieldError:
    loc = tuple(error.get("loc", ()))
    kind = error.get("type", "")
    field = _field(loc)
    msg = str(error.get("msg", "invalid value"))
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = ctx.get("error", "JSON decode error")
        return FieldError(field="body", message=f"the body is not valid JSON: {reason}{where}")
    if kind in _NOT_AN_OBJECT and loc in {("body",), ()}:
        return FieldError(field="body", message=_JSON_OBJECT_NEEDED)
    if kind == UNKNOWN_QUERY:
        known = ctx.get("known", "")
        return FieldError(
            field=field, message=f"unknown query parameter {field!r} (known: {known})"
        )
    if kind == "extra_forbidden":
        return FieldError(field=field, message=f"unknown field {field!r}")
    if kind == "missing":
        return FieldError(field=field, message=f"{field}: this field is required")
    if kind == "value_error":
        cause = ctx.get("error")
        text = str(cause) if cause is not None else msg.removeprefix("Value error, ")
        return FieldError(field=field, message=f"{field}: {text}")
    return FieldError(field=field, message=f"{field}: {msg}" if field else msg)


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, list[FieldError]]:
    """A one-line explanation of ``RequestValidationError.errors()`` and the per-field list."""
    fields = [_message(dict(error)) for error in errors]
    text = "; ".join(item.message for item in fields) or "invalid request"
    return text, fields


def refusal(exc: BaseException) -> tuple[int, str] | None:
    """The status and message the API answers ``exc`` with, if it is an expected refusal."""
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code, str(exc.detail)
    if isinstance(exc, RequestValidationError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT, describe_validation_errors(exc.errors())[0]
    if isinstance(exc, NotFoundError):
        return status.HTTP_404_NOT_FOUND, _text(exc, "not found")
    if isinstance(exc, ConflictError):
        return status.HTTP_409_CONFLICT, _text(exc, "conflict with the current state")
    if isinstance(exc, InvalidQueryError):
        return status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)
    return None


def _text(exc: BaseException, fallback: str) -> str:
    # str(KeyError("x")) quotes the key; args[0] is what the raiser wrote.
    if exc.args and isinstance(exc.args[0], str) and exc.args[0]:
        return exc.args[0]
    return str(exc) or fallback


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": _text(exc, "not found")}, status.HTTP_404_NOT_FOUND)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": _text(exc, "conflict with the current state")}, status.HTTP_409_CONFLICT
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    text, fields = describe_validation_errors(exc.errors())
    body = ValidationErrorBody(detail=text, errors=fields)
    return JSONResponse(body.model_dump(), status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _bad_query(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidQueryError)
    error = FieldError(field=exc.field, message=str(exc))
    body = ValidationErrorBody(detail=error.message, errors=[error])
    return JSONResponse(body.model_dump(), status.HTTP_422_UNPROCESSABLE_CONTENT)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(InvalidQueryError, _bad_query)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(RequestValidationError, _invalid)


#: For ``responses=`` of the routes, so that OpenAPI shows the error bodies.
def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        401: "Missing or unknown bearer token",
        403: "The token's role is too low",
        404: "No such cluster, group or saga",
        409: "Not possible in the current state (the message says why)",
        413: "The request body is too large",
        422: "Invalid request (the message names the field)",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = ValidationErrorBody if code == 422 else ErrorBody
        out[code] = {"model": model, "description": descriptions.get(code, "Error")}
    return out
