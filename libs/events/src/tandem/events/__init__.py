"""tandem.events: the language Tandem's services speak, and the bus they speak it on.

- ``Event`` / ``Command`` envelopes and the catalog (``tandem.events.catalog``)
- ``decode_event`` / ``decode_command`` with upcasting of old versions
- subjects, stream and bucket names (``tandem.events.subjects``)
- ``Bus`` (publish, batched publish, KV), ``DurableConsumer``, ``Projection``,
  ``send_command`` / ``CommandServer``, ``compare_and_set``
- ``NatsServer`` / ``NatsCluster``: an embedded nats-server for ``tandem up`` and tests
"""

from tandem.events import catalog
from tandem.events.bus import Bus
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Command, CommandResult, Event, Payload
from tandem.events.errors import (
    CasConflictError,
    CommandFailedError,
    DecodeError,
    TandemBusError,
    TransientError,
)
from tandem.events.kv import compare_and_set
from tandem.events.names import SYSTEM_CLUSTER, ClusterName, InvalidNameError, NodeName, check_name
from tandem.events.projection import Projection
from tandem.events.registry import command_type, decode_command, decode_event, event_type, upcaster
from tandem.events.rpc import CommandServer, send_command
from tandem.events.settings import BusSettings, SettingsError, StreamSettings

__all__ = [
    "SYSTEM_CLUSTER",
    "Bus",
    "BusSettings",
    "CasConflictError",
    "ClusterName",
    "Command",
    "CommandFailedError",
    "CommandResult",
    "CommandServer",
    "ConsumerOptions",
    "DecodeError",
    "DurableConsumer",
    "Event",
    "InvalidNameError",
    "NodeName",
    "Payload",
    "Projection",
    "SettingsError",
    "StreamSettings",
    "TandemBusError",
    "TransientError",
    "catalog",
    "check_name",
    "command_type",
    "compare_and_set",
    "decode_command",
    "decode_event",
    "event_type",
    "send_command",
    "upcaster",
]
