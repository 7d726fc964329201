"""Errors of the event library. Each carries a reason meant for an operator's eyes."""

from __future__ import annotations


class TandemBusError(Exception):
    """Base of every error raised by ``tandem.events``."""


class DecodeError(TandemBusError):
    """A message that is not a valid event or command; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(TandemBusError):
    """Raised by a handler for a failure that may pass (a peer is away, a timeout).

    The consumer negatively acknowledges the message with a backoff delay so that it is
    delivered again; any other exception is treated as permanent for that message.
    """


class CasConflictError(TandemBusError):
    """A KV compare-and-set lost: the key changed since the revision the caller read."""

    def __init__(self, key: str, expected_revision: int | None, reason: str) -> None:
        super().__init__(
            f"compare-and-set of {key!r} at revision {expected_revision} failed: {reason}"
        )
        self.key = key
        self.expected_revision = expected_revision


class CommandFailedError(TandemBusError):
    """A command request that timed out or was answered with a failure."""
