"""The role record of a cluster in ``tandem_roles``: which node is Active, at which epoch.

It changes only by compare-and-set on the KV revision (``compare_and_set``), and the epoch
grows by one at every change. Every node reads it to know its role and to fence commands and
journal batches from an older epoch.
"""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.events.errors import CasConflictError, DecodeError, TransientError
from tandem.events.kv import compare_and_set
from tandem.events.names import NodeName
from tandem.events.subjects import role_key


class RoleRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    active: NodeName
    epoch: int = Field(ge=1)
    reason: str = ""


async def read_role(kv: KeyValue, cluster: str) -> tuple[RoleRecord | None, int | None]:
    """The record and its revision, or (None, None) when the cluster has none yet."""
    try:
        entry = await kv.get(role_key(cluster))
    except KeyNotFoundError:
        return None, None
    if entry.value is None:
        return None, entry.revision
    try:
        return RoleRecord.model_validate_json(entry.value), entry.revision
    except ValidationError as exc:
        raise DecodeError(f"role record of {cluster!r} is invalid: {exc}") from None


def may_write_roles(user: str | None) -> bool:
    """A node agent's own login may not write role records (issue 17): on a bus with
    per-node logins, a cluster's first record is the admin's (``tandem bus provision
    --first-active``), and the node waits for it instead of claiming."""
    return user is None or not user.startswith("agent:")


def first_role_hint(cluster: str, node: str) -> str:
    return (
        f"no role record for {cluster} yet, and this node's login may not write one: "
        f"waiting for it (an admin writes it: tandem bus provision --first-active {cluster}={node})"
    )


async def claim_first_role(kv: KeyValue, cluster: str, node: str, reason: str) -> RoleRecord:
    """At first pairing: make ``node`` Active at epoch 1 unless a record exists; return the
    record that holds afterwards (ours, or the one another node wrote first)."""
    record = RoleRecord(active=node, epoch=1, reason=reason)
    try:
        await compare_and_set(kv, role_key(cluster), record.model_dump_json().encode(), None)
        return record
    except CasConflictError:
        existing, _ = await read_role(kv, cluster)
        if existing is None:  # written, but the replica that answered is still behind
            raise TransientError(
                f"the role record of {cluster} exists but is not readable yet"
            ) from None
        return existing
