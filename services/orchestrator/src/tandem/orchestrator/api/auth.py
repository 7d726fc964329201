"""Bearer tokens of the REST API: where they come from, what role each gives, and the checks.

Token file format (plain text, UTF-8), one token per line::

    # who may do what
    viewer    Zq0l8d1bXQnEKm6yWm2rR4pG      # the dashboard
    operator  3cT1f3Yk3WlqJX3y6r1oJp3Y      # on-call
    admin     f0n9X1X5bSxbqk6S5bq0gV2M

Each line is ``<role> <token>``; the role is ``viewer``, ``operator`` or ``admin``; a token
has at least 16 characters of printable ASCII and no spaces. Blank lines and lines starting
with ``#`` are ignored, and so is a third field starting with ``#`` (a label for people).
The environment form (``TANDEM_API_TOKENS``) is the same with ``;`` between the entries::

    TANDEM_API_TOKENS="viewer Zq0l8d1bXQnEKm6yWm2rR4pG;operator 3cT1f3Yk3WlqJX3y6r1oJp3Y"

Roles are ordered viewer < operator < admin: reading needs viewer, starting a switchover or
failover needs operator. Tokens are kept only as SHA-256 digests and compared in constant
time. What an audit record calls the caller (the *actor*) is ``"<role>:<6 hex chars of the
token's SHA-256>"``: enough to tell tokens apart, useless to an attacker.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

log = logging.getLogger(__name__)

#: The environment variable the brief form of the tokens usually comes from.
ENV_VAR = "TANDEM_API_TOKENS"
MIN_TOKEN_LENGTH = 16
#: Where ``create_app`` keeps the ``TokenStore`` (``app.state.<this>``).
STATE_KEY = "tokens"
#: Where ``require`` leaves the authenticated caller (``request.state.<this>``), so that the
#: audit of a refused mutation knows who was refused.
PRINCIPAL_KEY = "tandem_principal"


class TokenConfigError(ValueError):
    """A token file or ``TANDEM_API_TOKENS`` entry that cannot be used; says where and why
    (never quoting the token)."""


class ApiRole(IntEnum):
    """What a token allows; a higher role includes the lower ones."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> ApiRole:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}") from None


_ROLE_NAMES = ", ".join(role.label for role in ApiRole)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    role: ApiRole
    #: The first 6 hex characters of the token's SHA-256.
    fingerprint: str

    @property
    def actor(self) -> str:
        """How audit records and sagas name this caller: ``"operator:1a2b3c"``."""
        return f"{self.role.label}:{self.fingerprint}"

    def allows(self, needed: ApiRole) -> bool:
        return self.role >= needed


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal
    where: str


class TokenStore:
    """The accepted tokens (as SHA-256 digests) and their roles."""

    def __init__(self, entries: Iterable[tuple[ApiRole, str]] = ()) -> None:
        self._entries: list[_Entry] = []
        for index, (role, token) in enumerate(entries, start=1):
            self._add(role, token, f"token {index}")

    def _add(self, role: ApiRole, token: str, where: str) -> None:
        problem = _token_problem(token)
        if problem is not None:
            raise TokenConfigError(f"{where}: {problem}")
        digest = _digest(token)
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                raise TokenConfigError(f"{where}: the same token is already given at {entry.where}")
        principal = Principal(role=role, fingerprint=digest.hex()[:6])
        self._entries.append(_Entry(digest, principal, where))

    def authenticate(self, token: str) -> Principal | None:
        """The caller this token belongs to, or None. Constant time in the token: every
        stored digest is compared, with ``hmac.compare_digest``."""
        digest = _digest(token)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        counts = {role: 0 for role in ApiRole}
        for entry in self._entries:
            counts[entry.principal.role] += 1
        roles = ", ".join(f"{n} {role.label}" for role, n in counts.items() if n)
        return f"TokenStore({len(self)} tokens{': ' + roles if roles else ''})"


def _token_problem(token: str) -> str | None:
    if len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the token is too short ({len(token)} characters; "
            f"at least {MIN_TOKEN_LENGTH} are needed)"
        )
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        return "the token must be printable ASCII without spaces"
    return None


def _parse_entry(text: str, where: str) -> tuple[ApiRole, str] | None:
    """One ``<role> <token> [# label]`` entry; None for a blank or comment line."""
    fields = text.split()
    if not fields or fields[0].startswith("#"):
        return None
    if len(fields) >= 3 and fields[2].startswith("#"):
        fields = fields[:2]
    if len(fields) != 2:
        # Never quote the text: it may well hold a token.
        raise TokenConfigError(
            f"{where}: expected '<role> <token>', got {len(fields)} field"
            f"{'s' if len(fields) != 1 else ''}"
        )
    role_text, token = fields
    try:
        role = ApiRole.parse(role_text)
    except ValueError:
        # A long "role" may be a token written first: do not quote that one either.
        shown = f" {role_text!r}" if len(role_text) < MIN_TOKEN_LENGTH else ""
        raise TokenConfigError(
            f"{where}: unknown role{shown} (use one of {_ROLE_NAMES}; "
            "each entry is '<role> <token>')"
        ) from None
    return role, token


def parse_tokens(entries: Iterable[tuple[str, str]], store: TokenStore | None = None) -> TokenStore:
    """Add ``(where, text)`` entries to ``store`` (a new one by default)."""
    store = store if store is not None else TokenStore()
    for where, text in entries:
        parsed = _parse_entry(text, where)
        if parsed is not None:
            store._add(parsed[0], parsed[1], where)
    return store


def load_tokens(
    path: str | os.PathLike[str] | None,
    env_value: str | None,
    *,
    env_name: str = ENV_VAR,
) -> TokenStore:
    """The tokens of a token file and of an environment value (both may be given; their
    tokens add up). Raises ``TokenConfigError`` (a ``ValueError``) naming the file and line,
    or the variable and entry, of a bad entry. No token at all is allowed but logged: the
    API then refuses every ``/api/v1`` request with 401."""
    store = TokenStore()
    if path is not None:
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokenConfigError(
                f"cannot read the API token file {file}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError as exc:
            raise TokenConfigError(f"{file}: not UTF-8 text ({exc.reason})") from None
        lines = ((f"{file}, line {n}", line) for n, line in enumerate(text.splitlines(), 1))
        parse_tokens(lines, store)
    if env_value is not None:
        parts = ((f"{env_name}, entry {n}", part) for n, part in enumerate(env_value.split(";"), 1))
        parse_tokens(parts, store)
    if not len(store):
        log.warning(
            "no API tokens are configured (token file or %s): every /api/v1 request "
            "will be refused with 401",
            env_name,
        )
    return store


# -- FastAPI dependencies ------------------------------------------------------------------

#: Only reads the header and documents the scheme in OpenAPI; ``require`` makes the decisions.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token from the orchestrator's token file or TANDEM_API_TOKENS.",
)

_CHALLENGE = "Bearer"


def _unauthorized(detail: str, error: str | None = None) -> HTTPException:
    challenge = f'{_CHALLENGE} error="{error}"' if error else _CHALLENGE
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


def token_store(request: Request) -> TokenStore:
    store = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(store, TokenStore):
        raise RuntimeError("the app has no TokenStore: build it with create_app")
    return store


def authenticated_principal(request: Request) -> Principal | None:
    """The caller ``require`` let in (or refused with 403) on this request, if any."""
    principal = getattr(request.state, PRINCIPAL_KEY, None)
    return principal if isinstance(principal, Principal) else None


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """The caller of ``request`` (also left in ``request.state``); 401 with
    ``WWW-Authenticate: Bearer`` without a bearer token or with an unknown one."""
    if credentials is None:
        raise _unauthorized("missing bearer token: send the header 'Authorization: Bearer <token>'")
    principal = token_store(request).authenticate(credentials.credentials)
    if principal is None:
        raise _unauthorized("unknown API token", error="invalid_token")
    setattr(request.state, PRINCIPAL_KEY, principal)
    return principal


def require(role: ApiRole | str) -> Callable[[Request, Credentials], Awaitable[Principal]]:
    """A dependency admitting callers whose token has ``role`` or a higher one.

    401 (with ``WWW-Authenticate: Bearer``) without a bearer token or with an unknown one;
    403 when the token's role is too low, saying which role is needed."""
    needed = role if isinstance(role, ApiRole) else ApiRole.parse(role)

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = authenticate(request, credentials)
        if not principal.allows(needed):
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=(
                    f"this needs the {needed.label} role or higher; "
                    f"your token has the {principal.role.label} role"
                ),
            )
        return principal

    dependency.__name__ = f"require_{needed.label}"
    return dependency
