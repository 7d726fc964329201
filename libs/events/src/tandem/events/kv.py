"""Compare-and-set on a KV key: the only way ``tandem_roles`` changes."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from tandem.events.errors import CasConflictError


async def compare_and_set(
    kv: KeyValue, key: str, value: bytes, expected_revision: int | None
) -> int:
    """Write ``value`` only if ``key`` is still at ``expected_revision``; return the new revision.

    ``expected_revision=None`` means the key must not exist yet. On a lost race raise
    ``CasConflictError``: the caller re-reads and decides again.
    """
    try:
        if expected_revision is None:
            return await kv.create(key, value)
        return await kv.update(key, value, last=expected_revision)
    except KeyWrongLastSequenceError as exc:
        raise CasConflictError(key, expected_revision, str(exc.description or exc)) from None
    except KeyNotFoundError:
        if expected_revision is not None:
            raise
        # nats-py's create: refused because the key exists, then its own read of the key
        # (a direct get, which a replica still behind may answer) did not find it.
        raise CasConflictError(
            key, None, "the key exists (a replica behind did not show it)"
        ) from None
