"""Turn ``BusSettings`` into nats-py connect options and connect, with logging callbacks."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import nats
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
    return opts


async def open_connection(settings: BusSettings, name: str | None = None) -> NATS:
    """Connect once; reconnection after that is nats-py's (with the configured wait)."""

    async def on_error(exc: Exception) -> None:
        log.warning("bus error: %s", exc)

    async def on_disconnected() -> None:
        log.warning("bus disconnected; reconnecting")

    async def on_reconnected() -> None:
        log.info("bus reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")

    nc = await nats.connect(
        **connect_options(settings, name),
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )
    return nc


async def open_connection_retrying(
    settings: BusSettings, name: str | None = None, *, deadline_s: float = 60.0
) -> NATS:
    """Connect, retrying with exponential backoff (0.2 s doubling to 5 s) until ``deadline_s``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + deadline_s
    delay = 0.2
    while True:
        try:
            return await open_connection(settings, name)
        except (OSError, nats.errors.Error, asyncio.TimeoutError) as exc:
            if loop.time() + delay > give_up:
                raise ConnectionError(
                    f"cannot reach the bus at {', '.join(settings.servers)} within {deadline_s:.0f}s: {exc}"
                ) from exc
            log.info("bus not reachable yet (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
