"""Bearer tokens of the REST API: where they come from, what role each gives, and the checks.

Token file format (plain text, UTF-8), one token per line::

    # who may do what
    viewer    sha256:3f0c5e...(64 hex digits in all)   # the dashboard
    operator  sha256:9a41d2...                         # on-call
    admin     f0n9X1X5bSxbqk6S5bq0gV2M                  # a plain token: works, with a warning

Each line is ``<role> <token>`` or ``<role> sha256:<64 hex>``; the role is ``viewer``,
``operator`` or ``admin``. The second form holds the SHA-256 of the token instead of the
token (``tandem token new --role R`` makes a token and its line, ``tandem token hash`` the
line of a token read from stdin): whoever reads the file learns no token. A plain token has
at least 16 characters of printable ASCII and no spaces (and cannot start with ``sha256:``);
a file holding plain tokens is logged at WARNING, naming its lines, never the tokens, and so
is a file that group or others may read or write (``chmod 600`` it). Blank lines and lines
starting with ``#`` are ignored, and so is a third field starting with ``#`` (a label for
people). The environment form (``TANDEM_API_TOKENS``) is the same with ``;`` between the
entries::

    TANDEM_API_TOKENS="viewer sha256:3f0c5e...;operator 3cT1f3Yk3WlqJX3y6r1oJp3Y"

Rotation needs no restart: on a request, at most once a second, the file's
``(mtime, ctime, size, inode)`` is looked at and, when it changed, the file is read again
(in a thread). A valid file replaces its tokens entirely (a token no longer in it is refused
from then on; the environment's tokens stay); a file that cannot be used (unreadable, a bad
line) leaves the tokens in force as they were, and an ERROR names the file and why. Write
the new file beside the old one and rename it over (``mv``) so that no half-written file
is ever read.

Roles are ordered viewer < operator < admin: reading needs viewer, starting a switchover or
failover needs operator. Tokens are kept only as SHA-256 digests and compared in constant
time. What an audit record calls the caller (the *actor*) is ``"<role>:<6 hex chars of the
token's SHA-256>"``: enough to tell tokens apart, useless to an attacker. No message of this
module, logged or raised, quotes a token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tandem.events import api_tokens
from tandem.events.api_tokens import MIN_LENGTH as MIN_TOKEN_LENGTH

log = logging.getLogger(__name__)

#: The environment variable the brief form of the tokens usually comes from.
ENV_VAR = "TANDEM_API_TOKENS"
#: How often, at most, a request looks whether the token file changed.
RELOAD_CHECK_S = 1.0
#: Where ``create_app`` keeps the ``TokenStore`` (``app.state.<this>``).
STATE_KEY = "tokens"
#: Where ``require`` leaves the authenticated caller (``request.state.<this>``), so that the
#: audit of a refused mutation knows who was refused.
PRINCIPAL_KEY = "tandem_principal"

__all__ = [
    "ENV_VAR",
    "MIN_TOKEN_LENGTH",
    "ApiRole",
    "Principal",
    "TokenConfigError",
    "TokenStore",
    "authenticate",
    "load_tokens",
    "require",
]


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
    #: Given as ``sha256:<hex>`` (False: the token itself).
    hashed: bool


def _entry(role: ApiRole, digest: bytes, where: str, *, hashed: bool) -> _Entry:
    return _Entry(digest, Principal(role=role, fingerprint=digest.hex()[:6]), where, hashed)


def _token_entry(role: ApiRole, token: str, where: str) -> _Entry:
    problem = api_tokens.token_problem(token)
    if problem is not None:
        raise TokenConfigError(f"{where}: {problem}")
    return _entry(role, api_tokens.digest(token), where, hashed=False)


class _Entries:
    """Entries being collected, each token at most once."""

    def __init__(self, start: Iterable[_Entry] = ()) -> None:
        self.items: list[_Entry] = []
        for entry in start:
            self.add(entry)

    def add(self, entry: _Entry) -> None:
        for earlier in self.items:
            if hmac.compare_digest(earlier.digest, entry.digest):
                raise TokenConfigError(
                    f"{entry.where}: the same token is already given at {earlier.where}"
                )
        self.items.append(entry)


#: What tells that a file changed: (mtime_ns, ctime_ns, size, inode); ctime too, as a copy
#: may keep the old mtime but its ctime is always new.
_Stamp = tuple[int, int, int, int]


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


@dataclass
class _Watch:
    """The token file of a store, and what it looked like when last read."""

    path: Path
    stamp: _Stamp | None
    every_s: float
    next_check: float = 0.0
    #: Held while the file is looked at or read: a request arriving meanwhile waits for the
    #: new tokens rather than being let in by the old ones.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class TokenStore:
    """The accepted tokens (as SHA-256 digests) and their roles; with a token file (see
    ``load_tokens``), ``refresh`` follows its changes."""

    def __init__(self, entries: Iterable[tuple[ApiRole, str]] = ()) -> None:
        tokens = (_token_entry(r, t, f"token {n}") for n, (r, t) in enumerate(entries, start=1))
        #: Replaced whole, never changed in place: a request reads one set or the other.
        self._entries: tuple[_Entry, ...] = tuple(_Entries(tokens).items)
        #: The entries not from the file (the environment's): kept across reloads.
        self._fixed: tuple[_Entry, ...] = self._entries
        self._watch: _Watch | None = None

    def authenticate(self, token: str) -> Principal | None:
        """The caller this token belongs to, or None. Constant time in the token: every
        stored digest is compared, with ``hmac.compare_digest``."""
        digest = api_tokens.digest(token)
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        return found

    async def refresh(self) -> None:
        """Read the token file again if it changed since it was last read; looks at most
        once per ``check_every_s`` (see ``load_tokens``). The stat is done here, in the
        event loop (it is cheap), the read in a thread."""
        watch = self._watch
        if watch is None or (not watch.lock.locked() and time.monotonic() < watch.next_check):
            return
        async with watch.lock:
            now = time.monotonic()
            if now < watch.next_check:
                return  # another request looked meanwhile
            watch.next_check = now + watch.every_s
            try:
                seen: _Stamp | None = _stamp(os.stat(watch.path))
            except OSError:
                seen = None
            if seen is not None and seen == watch.stamp:
                return
            await asyncio.to_thread(self._reload, watch, seen)

    def _reload(self, watch: _Watch, seen: _Stamp | None) -> None:
        try:
            stamp, from_file = _read_token_file(watch.path)
            entries = tuple(_Entries([*from_file, *self._fixed]).items)
        except TokenConfigError as exc:
            if watch.stamp is not None or seen is not None:
                log.error(
                    "the API token file %s changed but cannot be used (%s): the %d tokens "
                    "read before stay in force",
                    watch.path,
                    exc,
                    len(self),
                )
            # Not logged again until the file changes again (None: it could not be seen).
            watch.stamp = seen
            return
        self._entries = entries
        watch.stamp = stamp
        log.info(
            "API tokens reloaded from %s: %d tokens (roles: %s)",
            watch.path,
            len(self),
            self._roles() or "none",
        )
        if not entries:
            log.warning(
                "no API token is left after reading %s again: every /api/v1 request will "
                "be refused with 401",
                watch.path,
            )

    def _roles(self) -> str:
        counts = {role: 0 for role in ApiRole}
        for entry in self._entries:
            counts[entry.principal.role] += 1
        return ", ".join(f"{n} {role.label}" for role, n in counts.items() if n)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        roles = self._roles()
        return f"TokenStore({len(self)} tokens{': ' + roles if roles else ''})"


def _parse_entry(text: str, where: str) -> _Entry | None:
    """One ``<role> <token> [# label]`` or ``<role> sha256:<hex> [# label]`` entry; None for
    a blank or comment line."""
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
    if token.startswith(api_tokens.HASH_PREFIX):
        try:
            digest = api_tokens.parse_hashed(token)
        except ValueError as exc:
            raise TokenConfigError(f"{where}: {exc}") from None
        return _entry(role, digest, where, hashed=True)
    return _token_entry(role, token, where)


def _read_token_file(file: Path) -> tuple[_Stamp, list[_Entry]]:
    """The entries of a token file and its stamp as read; warns of plain tokens and of a
    mode open to group or others."""
    try:
        with file.open("rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError as exc:
        raise TokenConfigError(
            f"cannot read the API token file {file}: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokenConfigError(f"{file}: not UTF-8 text ({exc.reason})") from None
    entries = _Entries()
    plain: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        entry = _parse_entry(line, f"{file}, line {n}")
        if entry is not None:
            entries.add(entry)
            if not entry.hashed:
                plain.append(str(n))
    if os.name == "posix" and st.st_mode & 0o077:
        log.warning(
            "the API token file %s may be read or written by group or others (mode %03o): "
            "chmod 600 %s",
            file,
            st.st_mode & 0o777,
            file,
        )
    if plain:
        log.warning(
            "the API token file %s holds plain tokens (line%s %s): put their SHA-256 there "
            "instead, as '<role> sha256:<hex>' (`tandem token hash` prints the line)",
            file,
            "s" if len(plain) > 1 else "",
            ", ".join(plain),
        )
    return _stamp(st), entries.items


def load_tokens(
    path: str | os.PathLike[str] | None,
    env_value: str | None,
    *,
    env_name: str = ENV_VAR,
    check_every_s: float = RELOAD_CHECK_S,
) -> TokenStore:
    """The tokens of a token file and of an environment value (both may be given; their
    tokens add up). Raises ``TokenConfigError`` (a ``ValueError``) naming the file and line,
    or the variable and entry, of a bad entry. No token at all is allowed but logged: the
    API then refuses every ``/api/v1`` request with 401. With a file, the store's
    ``refresh`` reads it again when it changed (looking at most every ``check_every_s``)."""
    store = TokenStore()
    entries = _Entries()
    watch: _Watch | None = None
    if path is not None:
        file = Path(path)
        stamp, from_file = _read_token_file(file)
        entries = _Entries(from_file)
        watch = _Watch(file, stamp, check_every_s, next_check=time.monotonic() + check_every_s)
    fixed: list[_Entry] = []
    if env_value is not None:
        for n, part in enumerate(env_value.split(";"), 1):
            entry = _parse_entry(part, f"{env_name}, entry {n}")
            if entry is not None:
                entries.add(entry)
                fixed.append(entry)
    store._entries = tuple(entries.items)
    store._fixed = tuple(fixed)
    store._watch = watch
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


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller of ``request`` (also left in ``request.state``); 401 with
    ``WWW-Authenticate: Bearer`` without a bearer token or with an unknown one. Checks
    first whether the token file changed (see ``TokenStore.refresh``)."""
    if credentials is None:
        raise _unauthorized("missing bearer token: send the header 'Authorization: Bearer <token>'")
    store = token_store(request)
    await store.refresh()
    principal = store.authenticate(credentials.credentials)
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
        principal = await authenticate(request, credentials)
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
