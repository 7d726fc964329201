"""Time-ordered identifiers (UUIDv7) for events and commands."""

from __future__ import annotations

import uuid6


def new_id() -> str:
    """A new UUIDv7 as text: sortable by creation time, unique across processes."""
    return str(uuid6.uuid7())
