"""What an API bearer token of the orchestrator is, and its hashed form in a tokens file.

Shared by the orchestrator, which checks tokens (``tandem.orchestrator.api.auth``), and the
CLI, which makes them (``tandem token new`` / ``hash``) without importing the orchestrator.

A token is at least ``MIN_LENGTH`` characters of printable ASCII without spaces. A tokens
file may hold, instead of the token, ``sha256:`` and the 64 hex digits of its SHA-256: what
the orchestrator keeps in memory anyway, and useless to whoever reads the file.
"""

from __future__ import annotations

import hashlib
import re
import secrets

MIN_LENGTH = 16
HASH_PREFIX = "sha256:"
#: The roles, lowest first (the orchestrator's ``ApiRole``).
ROLES = ("viewer", "operator", "admin")

_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
#: 32 random bytes: 43 URL-safe characters.
_NEW_TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(_NEW_TOKEN_BYTES)


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a token, or None. Never quotes the token."""
    if len(token) < MIN_LENGTH:
        return f"the token is too short ({len(token)} characters; at least {MIN_LENGTH} are needed)"
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        return "the token must be printable ASCII without spaces"
    return None


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def hashed(token: str) -> str:
    """``sha256:<64 hex>``: how a tokens file may name ``token`` without holding it."""
    return HASH_PREFIX + digest(token).hex()


def parse_hashed(text: str) -> bytes:
    """The digest in ``sha256:<64 hex>``; ``ValueError`` (not quoting ``text``) otherwise."""
    hex_digits = text.removeprefix(HASH_PREFIX)
    if not text.startswith(HASH_PREFIX) or not _HEX_DIGEST.fullmatch(hex_digits):
        raise ValueError(
            f"a hashed token is '{HASH_PREFIX}' and 64 hex digits, the SHA-256 of the token "
            "(`tandem token hash` prints it)"
        )
    return bytes.fromhex(hex_digits)


def file_line(role: str, token: str) -> str:
    """The tokens file line giving ``token`` the ``role``, with the token hashed."""
    return f"{role} {hashed(token)}"
