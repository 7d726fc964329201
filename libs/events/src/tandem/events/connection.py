"""Turn ``BusSettings`` into nats-py connect options and connect, with logging callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

from tandem.events.settings import BusSettings

log = logging.getLogger(__name__)


def connect_options(settings: BusSettings, name: str | None = None) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "servers": settings.servers,
        "name": name or settings.name,
        "connect_timeout": settings.connect_timeout_s,
        "allow_reconnect": True,
        "max_reconnect_attempts": settings.max_reconnect_attempts,
        "reconnect_time_wait": settings.reconnect_wait_s,
    }
    if settings.inbox_prefix is not None:
        opts["inbox_prefix"] = settings.inbox_prefix
    if settings.user is not None:
        opts["user"] = settings.user
        opts["password"] = settings.password.get_secret_value() if settings.password else None
    if settings.token is not None:
        opts["token"] = settings.token.get_secret_value()
    if settings.creds_file is not None:
        opts["user_credentials"] = str(settings.creds_file)
    if settings.nkey_seed_file is not None:
        opts["nkeys_seed"] = str(settings.nkey_seed_file)
    if settings.tls_ca_file is not None or settings.tls_cert_file is not None:
        ctx = ssl.create_default_context(
            cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None
        )
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            ctx.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
        opts["tls"] = ctx
        if settings.tls_server_name is not None:
            opts["tls_hostname"] = settings.tls_server_name
    return opts


async def open_connection(settings: BusSettings, name: str | None = None) -> NATS:
    """Connect once, failing fast with the reason; after that nats-py reconnects by itself.

    nats-py's own first connect retries for ever when reconnects are unlimited, and a wrong
    password would then hang a command silently: so the first error ends this attempt.
    """
    nc = NATS()
    first_error: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    failures: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        if nc.is_connected or first_error.done():
            log.warning("bus error: %s", exc)
            return
        # Before the first connection: a refused login ends the attempt; an unreachable
        # server does once every configured server has been tried.
        failures.append(exc)
        if _is_auth_error(exc) or len(failures) >= len(settings.servers):
            first_error.set_result(exc)

    async def on_disconnected() -> None:
        if nc.is_closed:  # our own close(), not a lost connection
            log.debug("bus connection closed")
        else:
            log.warning("bus disconnected; reconnecting")

    async def on_reconnected() -> None:
        log.info("bus reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")

    connecting = asyncio.create_task(
        nc.connect(
            **connect_options(settings, name),
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
    )
    done, _ = await asyncio.wait(
        {connecting, first_error},  # type: ignore[type-var]
        timeout=settings.connect_timeout_s + 1.0,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if connecting in done and connecting.exception() is None:
        where = nc.connected_url.netloc if nc.connected_url else settings.servers[0]
        if nc._server_info.get("auth_required"):
            return nc
        if settings.insecure_bus:
            log.warning(
                "the bus at %s lets anyone in without a login; used because insecure_bus = true",
                where,
            )
            return nc
        await nc.close()
        raise InsecureBusError(
            f"the bus at {where} lets anyone in without a login: refused "
            "(insecure_bus = true allows it)"
        )
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await nc.close()
    if connecting in done:
        reason: object = connecting.exception()
    elif first_error.done():
        reason = first_error.result()
    else:
        reason = f"no answer within {settings.connect_timeout_s + 1.0:.0f}s"
    message = f"cannot connect to {', '.join(settings.servers)}: {reason}"
    if isinstance(reason, Exception) and _is_auth_error(reason):
        raise BusRefusedLoginError(message)
    raise ConnectionError(message)


class BusRefusedLoginError(ConnectionError):
    """The bus answered and refused these credentials: asking again will not help."""


class InsecureBusError(BusRefusedLoginError):
    """The bus requires no login and ``insecure_bus`` is off: asking again will not help."""


def _is_auth_error(exc: Exception) -> bool:
    return isinstance(exc, nats.errors.AuthorizationError) or "authorization" in str(exc).lower()


async def open_connection_retrying(
    settings: BusSettings, name: str | None = None, *, deadline_s: float | None = 60.0
) -> NATS:
    """Connect, retrying with exponential backoff (0.2 s doubling to 5 s) until ``deadline_s``
    (None: for as long as it takes; a refused login still ends it at once)."""
    loop = asyncio.get_running_loop()
    give_up = None if deadline_s is None else loop.time() + deadline_s
    delay = 0.2
    while True:
        try:
            return await open_connection(settings, name)
        except BusRefusedLoginError:
            raise
        except ConnectionError as exc:
            if give_up is not None and loop.time() + delay > give_up:
                raise ConnectionError(
                    f"cannot reach the bus at {', '.join(settings.servers)} "
                    f"within {deadline_s or 0:.0f}s: {exc}"
                ) from exc
            log.info("bus not reachable yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
