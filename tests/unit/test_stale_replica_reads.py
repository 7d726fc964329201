"""A role record created while a replica of the bucket is behind (chaos, a 3-server cluster).

nats-py's ``KeyValue.create`` is refused because the key exists, then reads the key itself
with a direct get, which a replica still behind may answer "not found": it raises
``KeyNotFoundError``, an ``APIError`` without an error code. The agent then crashed
(``AttributeError: ... no attribute 'err_code'`` in ``is_transient``) and its supervisor
restarted it. The stale replica cannot be produced on demand with a real server, so a stand-in
bucket plays it here; the rest is the code the agent runs.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from nats.js.errors import KeyNotFoundError

from tandem.events.errors import CasConflictError, TransientError
from tandem.events.kv import compare_and_set
from tandem.events.roles import claim_first_role
from tandem.events.transient import is_transient


class BehindReplicaBucket:
    """Refuses the create as the key exists, and reads as a replica that has not seen it."""

    async def create(self, key: str, value: bytes) -> int:
        raise KeyNotFoundError

    async def get(self, key: str) -> Any:
        raise KeyNotFoundError


def test_an_api_error_without_a_code_is_transient() -> None:
    assert is_transient(KeyNotFoundError())


async def test_a_create_refused_then_not_found_is_a_conflict() -> None:
    with pytest.raises(CasConflictError):
        await compare_and_set(cast(Any, BehindReplicaBucket()), "c1", b"{}", None)


async def test_claiming_a_record_that_exists_but_reads_as_missing_is_asked_again() -> None:
    with pytest.raises(TransientError) as raised:
        await claim_first_role(cast(Any, BehindReplicaBucket()), "c1", "n1", "first pairing")
    assert is_transient(raised.value)
