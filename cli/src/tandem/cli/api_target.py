"""Which orchestrator API the CLI talks to, and with which token: ``--api`` / ``--token``,
else TANDEM_API_URL / TANDEM_API_TOKEN, else the chosen ``tandem up`` stack's (``stacks``),
else the default; and what a mutation says first when the CLI chose the API itself.
"""

from __future__ import annotations

import os

from tandem.cli.stacks import select

DEFAULT_API_URL = "http://127.0.0.1:8700"


#: An API URL the CLI chose itself -> where from ("stack demo-a"): named by a mutation.
_ORIGIN: dict[str, str] = {}
#: A stack's operator token -> its viewer token: a client given the first reads with the second.
_READ_TOKEN: dict[str, str] = {}


def resolve_api_url(flag: str | None) -> str:
    """--api, else TANDEM_API_URL, else the chosen ``tandem up`` stack's ``api_url``
    (``stacks.select``: ``--stack`` / ``TANDEM_STACK``, or the only one running), else 8700."""
    if flag:
        return flag
    env = os.environ.get("TANDEM_API_URL")
    if env:
        return env
    stack = select()
    if stack is not None and stack.get("api_url"):
        url = str(stack.get("api_url"))
        _ORIGIN[url.rstrip("/")] = f"stack {stack.name}"
        return url
    _ORIGIN[DEFAULT_API_URL] = "the default API"
    return DEFAULT_API_URL


def resolve_token(flag: str | None) -> str | None:
    """--token, else TANDEM_API_TOKEN, else the chosen ``tandem up`` stack's operator token;
    a client given that token reads with the stack's viewer token (``ApiClient``)."""
    if flag:
        return flag
    env = os.environ.get("TANDEM_API_TOKEN")
    if env:
        return env
    stack = select()
    if stack is None or not stack.get("operator_token"):
        return None
    operator = str(stack.get("operator_token"))
    viewer = stack.get("viewer_token")
    if viewer:
        _READ_TOKEN[operator] = viewer
    return operator


def read_token(token: str) -> str:
    """The token a client given ``token`` reads with: a stack's viewer token for its operator
    token (``resolve_token``), else ``token`` itself."""
    return _READ_TOKEN.get(token, token)


def acting_on(url: str) -> str | None:
    """``acting on stack demo-a (http://127.0.0.1:8081)``: what a mutation prints first on
    stderr when the CLI chose the API itself (a stack's, or the default); None for an API
    the user named (``--api``, ``TANDEM_API_URL``: scripts, SRM)."""
    origin = _ORIGIN.get(url.rstrip("/"))
    return f"acting on {origin} ({url})" if origin else None
