"""Passwords for the bus identities, and the nats-server ``authorization`` block with them.

The server's config holds only bcrypt hashes (nats-server checks a ``$2a$`` password as a
hash): a leaked config gives no password. The passwords themselves go to the components, one
each; a local deployment keeps them in a 0600 JSON file (``write_bus_passwords``).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bcrypt

from tandem.events.bus_identities import BusIdentity, Permissions
from tandem.events.private_files import write_private
from tandem.events.settings import BusSettings, load_bus_settings

#: bcrypt's work factor: the server pays it at every connect (about 0.1 s at 11).
DEFAULT_ROUNDS = 11


def new_password() -> str:
    return secrets.token_urlsafe(32)


def hash_password(password: str, rounds: int = DEFAULT_ROUNDS) -> str:
    # nats-server recognises bcrypt by the "$2a$" prefix.
    salt = bcrypt.gensalt(rounds=rounds, prefix=b"2a")
    return bcrypt.hashpw(password.encode(), salt).decode()


def issue_passwords(
    identities: Sequence[BusIdentity], keep: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A password per identity: the one in ``keep`` if there is one, else a new one. To
    rotate a password, leave it out of ``keep``."""
    keep = keep or {}
    return {i.user: keep.get(i.user) or new_password() for i in identities}


def authorization_config(
    identities: Sequence[BusIdentity],
    passwords: Mapping[str, str],
    *,
    rounds: int = DEFAULT_ROUNDS,
) -> str:
    """The ``authorization`` block for nats-server: every identity a user with the hash of
    its password and its permissions. Every client must log in as one of them."""
    users = []
    for identity in identities:
        user: dict[str, Any] = {
            "user": identity.user,
            "password": hash_password(passwords[identity.user], rounds),
        }
        if identity.permissions is not None:
            user["permissions"] = _server_permissions(identity.permissions)
        users.append(user)
    # The config format reads JSON; quoted strings keep "$JS.API.>" and "$2a$..." literal.
    return "authorization " + json.dumps({"users": users}, indent=2) + "\n"


def _server_permissions(p: Permissions) -> dict[str, Any]:
    publish: dict[str, list[str]] = {"allow": list(p.publish)}
    if p.publish_deny:
        publish["deny"] = list(p.publish_deny)
    return {"publish": publish, "subscribe": {"allow": list(p.subscribe)}}


def bus_settings_for(identity: BusIdentity, password: str, **bus: Any) -> BusSettings:
    """Settings that log in as ``identity`` (``bus``: servers, TLS files, ...; an
    ``inbox_prefix`` there replaces the identity's)."""
    bus.setdefault("inbox_prefix", identity.inbox_prefix)
    return load_bus_settings(user=identity.user, password=password, **bus)


def write_bus_passwords(path: Path, passwords: Mapping[str, str]) -> None:
    write_private(path, json.dumps(dict(passwords), indent=2, sort_keys=True) + "\n")


def read_bus_passwords(path: Path) -> dict[str, str]:
    """The passwords file, or {} when there is none yet."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"{path}: not a JSON object of user -> password")
    return {str(k): v for k, v in data.items()}
