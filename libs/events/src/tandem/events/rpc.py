"""Commands as request/reply on ``tandem.cmd.<cluster>.<node>.<Command>``.

The server side answers every request, refuses a command from an older epoch (fencing),
and remembers results by idempotency key: a repeated command gets the first answer and is
not carried out twice. The memory is bounded and lives in the process; the steps behind
commands are idempotent themselves, so a repeat after a restart is still safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import ValidationError

from tandem.events import headers, subjects
from tandem.events.bus import Bus
from tandem.events.bus_identities import ADMIN, ORCHESTRATOR
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.envelope import Command, CommandResult
from tandem.events.errors import CommandFailedError, DecodeError
from tandem.events.registry import decode_command
from tandem.events.transient import describe, is_bus_fault

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], Awaitable[CommandResult]]
#: Told of every command carried out or refused (not of replayed answers): (command, result,
#: seconds it took). Used to record each step as a ``CommandExecuted`` event.
ResultListener = Callable[[Command, CommandResult, float], None]


class NoAnswerError(CommandFailedError):
    """A command that got no answer at all: no agent listening (yet), no answer in time, or
    the connection away. The node may not have seen it, or may have answered into a bus that
    was electing a leader or reconnecting: sending it again with the same idempotency key is
    safe (a node that has it replays its first answer). An answered failure is not this."""


#: nats-py's errors for a request that could not be sent or whose answer never came back.
_NO_ANSWER = (
    NoRespondersError,
    NatsTimeoutError,
    TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
)


async def _request_once(bus: Bus, command: Command, timeout: float) -> CommandResult:
    subject = subjects.command_subject(command.cluster, command.node, command.type)
    where = f"{command.type} to {command.cluster}/{command.node}"
    try:
        reply = await bus.nc.request(
            subject,
            command.to_json(),
            timeout=timeout,
            headers={headers.SENDER: bus.settings.user or ""},
        )
    except NoRespondersError:
        raise NoAnswerError(f"{where}: no agent is listening") from None
    except (NatsTimeoutError, TimeoutError):
        raise NoAnswerError(f"{where}: no answer within {timeout:g}s") from None
    except _NO_ANSWER as exc:
        raise NoAnswerError(f"{where}: the bus is away ({type(exc).__name__})") from None
    try:
        return CommandResult.model_validate_json(reply.data)
    except ValidationError as exc:
        raise CommandFailedError(
            f"{command.type}: the answer is not a command result: {exc}"
        ) from None


async def send_command(
    bus: Bus,
    command: Command,
    *,
    timeout: float = 5.0,
    retry_for_s: float = 0.0,
    keep_going: Callable[[], bool] | None = None,
) -> CommandResult:
    """Send ``command`` to its node and wait for the answer (ok or not).

    ``timeout`` bounds one request. With ``retry_for_s`` > 0 a request that got no answer
    (``NoAnswerError``: no agent listening, no answer in time, the connection away) is sent
    again, the same command with the same idempotency key, with backoff, until an answer
    comes, ``retry_for_s`` has passed since the first send, or ``keep_going()`` turns false;
    then the last ``NoAnswerError`` is raised, saying how long it was tried. An answer is
    returned as it is, a failure too: the node carried the command out (or refused it), and
    asking again would only replay that answer. An undecodable answer raises
    ``CommandFailedError`` at once.
    """
    if retry_for_s <= 0:
        return await _request_once(bus, command, timeout)
    loop = asyncio.get_running_loop()
    started = loop.time()
    give_up = started + retry_for_s
    delay, attempts = 0.1, 0
    while True:
        raise_if_cancelled()  # a timed wait may have swallowed a stop
        attempts += 1
        left = give_up - loop.time()
        try:
            result = await _request_once(bus, command, max(0.1, min(timeout, left)))
        except NoAnswerError as exc:
            stop = keep_going is not None and not keep_going()
            if stop or loop.time() + delay >= give_up:
                raise NoAnswerError(
                    f"{exc} (sent {attempts} times over {loop.time() - started:.1f}s)"
                ) from None
            level = logging.WARNING if attempts == 1 else logging.DEBUG
            log.log(level, "%s; sending it again (key %s)", exc, command.idempotency_key)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if attempts > 1:
            log.info(
                "%s to %s/%s answered after %s sends",
                command.type,
                command.cluster,
                command.node,
                attempts,
            )
        return result


#: The identities that may command a node: the orchestrator (sagas) and the admin (an
#: operator's ``tandem verify``...).
COMMANDERS = frozenset({ORCHESTRATOR, ADMIN})


class CommandServer:
    """Serve the commands addressed to one node. ``current_epoch`` is read per command."""

    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        handler: CommandHandler,
        current_epoch: Callable[[], int],
        *,
        remember: int = 4096,
        commands: list[str] | None = None,
        on_result: ResultListener | None = None,
    ) -> None:
        self.bus = bus
        #: Who may command this node, by the sender a command carries. NATS permissions
        #: let only these identities publish commands at all; this check says so again at
        #: the node and names a refused sender. Not applied on a bus without logins.
        self.commanders = COMMANDERS
        self.cluster = cluster
        self.node = node
        self.handler = handler
        self.current_epoch = current_epoch
        self._remember = remember
        self._results: OrderedDict[str, asyncio.Future[CommandResult]] = OrderedDict()
        #: Serve only these command types (several servers may share a node); None: all.
        self.commands = commands
        self._subs: list[Subscription] = []
        self.on_result = on_result

    async def start(self) -> None:
        if self.commands is None:
            wanted = [subjects.commands_filter(self.cluster, self.node)]
        else:
            wanted = [subjects.command_subject(self.cluster, self.node, c) for c in self.commands]
        for subject in wanted:
            self._subs.append(await self.bus.nc.subscribe(subject, cb=self._on_request))

    async def stop(self) -> None:
        for sub in self._subs:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await sub.unsubscribe()
        self._subs = []

    async def _on_request(self, msg: Msg) -> None:
        try:
            command = decode_command(msg.data)
        except DecodeError as exc:
            # Dead-lettered before the answer: whoever gets the error finds the message kept.
            try:
                await dead_letter(
                    self.bus,
                    Rejected(
                        consumer=f"cmd-{self.cluster}-{self.node}",
                        reason=f"undecodable: {exc.reason}",
                        subject=msg.subject,
                        data=msg.data,
                        original_headers=msg.headers,
                    ),
                )
            except Exception as dlq_exc:  # the answer still goes out
                log.error("could not dead-letter an undecodable command: %s", dlq_exc)
            await self._answer(
                msg,
                CommandResult(
                    command_id=None,
                    idempotency_key=None,
                    ok=False,
                    reason=f"undecodable command: {exc.reason}",
                ),
            )
            return
        sender = (msg.headers or {}).get(headers.SENDER, "")
        await self._answer(msg, await self.execute(command, sender=sender))

    async def execute(self, command: Command, *, sender: str = "") -> CommandResult:
        """Carry out ``command`` once per idempotency key; fenced by sender, epoch and
        addressee. Who commanded what is logged."""
        started = asyncio.get_running_loop().time()
        refusal = self._sender_refusal(sender) or self._refusal(command)
        if refusal:
            log.warning("refused %s %s from %r: %s", command.type, command.id, sender, refusal)
            refused = CommandResult(
                command_id=command.id,
                idempotency_key=command.idempotency_key,
                ok=False,
                reason=refusal,
            )
            self._tell(command, refused, started)
            return refused
        key = command.idempotency_key
        earlier = self._results.get(key)
        if earlier is not None:
            result = await earlier
            return result.model_copy(update={"replayed": True, "command_id": command.id})
        log.info(
            "%s %s (e%d, key %s) from %s", command.type, command.id, command.epoch, key, sender
        )
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._results[key] = future
        while len(self._results) > self._remember:
            self._results.popitem(last=False)
        try:
            result = await self.handler(command)
        except Exception as exc:
            result = CommandResult(
                command_id=command.id, idempotency_key=key, ok=False, reason=describe(exc)
            )
            if is_bus_fault(exc):
                # The bus was passing through a fault (an election, a lost node): the sender
                # retries with the same key, and that retry must run the step again rather
                # than be answered with this failure.
                log.warning("command %s failed for now: %s", command.type, describe(exc))
                if self._results.get(key) is future:
                    del self._results[key]
            else:
                log.exception("command %s failed", command.type)
        future.set_result(result)
        self._tell(command, result, started)
        return result

    def _tell(self, command: Command, result: CommandResult, started: float) -> None:
        if self.on_result is None:
            return
        try:
            self.on_result(command, result, asyncio.get_running_loop().time() - started)
        except Exception:
            log.exception("result listener failed for %s", command.type)

    def _sender_refusal(self, sender: str) -> str:
        if self.bus.settings.user is None or sender in self.commanders:
            return ""  # no logins on this bus: senders are not known
        allowed = ", ".join(sorted(self.commanders))
        return f"sent by {sender or 'no one named'}, who may not command nodes (only {allowed})"

    def _refusal(self, command: Command) -> str:
        if command.cluster != self.cluster or command.node != self.node:
            return (
                f"addressed to {command.cluster}/{command.node}, this is {self.cluster}/{self.node}"
            )
        epoch = self.current_epoch()
        if command.epoch < epoch:
            return f"stale epoch {command.epoch}: the cluster is at epoch {epoch}"
        return ""

    async def _answer(self, msg: Msg, result: CommandResult) -> None:
        if msg.reply:
            await msg.respond(result.model_dump_json().encode())
