"""Send what a consumer cannot handle to ``TANDEM_DLQ``, with the reason and original headers."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js.api import PubAck

from tandem.events import headers, subjects
from tandem.events.bus import Bus
from tandem.events.ids import new_id

log = logging.getLogger(__name__)

_MAX_HEADER = 2000


@dataclass(frozen=True)
class Rejected:
    """Where a message came from and why it is being put aside."""

    consumer: str
    reason: str
    subject: str
    data: bytes
    original_headers: Mapping[str, str] | None
    source_stream: str | None = None
    source_seq: int | None = None

    @classmethod
    def of_message(cls, msg: Msg, consumer: str, reason: str) -> Rejected:
        """A message a JetStream consumer was delivered (its stream and sequence known)."""
        meta = msg.metadata
        return cls(
            consumer=consumer,
            reason=reason,
            subject=msg.subject,
            data=msg.data,
            original_headers=msg.headers,
            source_stream=meta.stream,
            source_seq=meta.sequence.stream,
        )


def _header_value(text: str) -> str:
    flat = " ".join(text.split())  # header values cannot hold CR/LF
    return flat if len(flat) <= _MAX_HEADER else flat[: _MAX_HEADER - 3] + "..."


async def dead_letter(bus: Bus, rejected: Rejected) -> PubAck:
    """Store the message in the DLQ; the same source message is stored once per consumer."""
    stream = rejected.source_stream or "CORE"
    hdrs = {k: _header_value(str(v)) for k, v in (rejected.original_headers or {}).items()}
    original_id = hdrs.pop(headers.MSG_ID, None)
    if rejected.source_seq is not None:
        msg_id = f"dlq:{stream}:{rejected.source_seq}:{rejected.consumer}"
    else:
        msg_id = f"dlq:{new_id()}"
    hdrs.update(
        {
            headers.MSG_ID: msg_id,
            headers.DLQ_REASON: _header_value(rejected.reason) or "(no reason given)",
            headers.DLQ_CONSUMER: rejected.consumer,
            headers.DLQ_SOURCE_STREAM: stream,
            headers.DLQ_SOURCE_SUBJECT: rejected.subject,
        }
    )
    if rejected.source_seq is not None:
        hdrs[headers.DLQ_SOURCE_SEQ] = str(rejected.source_seq)
    if original_id is not None:
        hdrs[headers.DLQ_ORIGINAL_MSG_ID] = original_id
    log.warning(
        "dead-lettered %s (seq %s) for %s: %s",
        rejected.subject,
        rejected.source_seq,
        rejected.consumer,
        rejected.reason,
    )
    return await bus.publish_raw(
        subjects.dlq_subject(stream, rejected.consumer),
        rejected.data,
        hdrs,
        stream=subjects.DLQ_STREAM,
    )
