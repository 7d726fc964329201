"""Run the API with uvicorn inside the service's own event loop.

``serve(app, host, port)`` runs until cancelled; on cancellation it asks uvicorn to stop
(``should_exit``), lets open requests finish for ``shutdown_timeout`` seconds, then forces
the exit: stopping takes at most about ``shutdown_timeout`` + 4 seconds.

It installs no signal handlers: the process's own handling of SIGINT and SIGTERM stays in
charge (the service cancels ``serve`` when it stops). It leaves logging as it finds it (no
``log_config``): uvicorn's loggers propagate to the service's.

With ``port=0`` the system picks a free port: it is passed to ``on_bound(host, port)``, set
on ``app.state.port`` (when the app has a ``state``, as FastAPI apps do) and then ``ready``
is set. ``start_server`` wraps all that for callers that want a handle (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0
#: Beyond the graceful shutdown timeout, how long a stop may take before it is forced.
_FORCE_AFTER_S = 2.0
#: An ``asyncio.Event`` in ``app.state`` that a stop sets before it waits for open requests.
STOPPING_KEY = "stopping"


class ServerStartError(RuntimeError):
    """The API server could not start (port in use, address not available, ...)."""


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone and reports the
    address it bound."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[_EmbeddedServer], None]):
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn >= 0.29 installs its handlers here for the duration of serve().
        yield

    def install_signal_handlers(self) -> None:
        # uvicorn < 0.29 installed them with this method.
        return

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started(self)


def bound_address(server: uvicorn.Server) -> tuple[str, int]:
    """The (host, port) the started server listens on (its first socket)."""
    sockname = server.servers[0].sockets[0].getsockname()
    return str(sockname[0]), int(sockname[1])


class _StartupErrors(logging.Handler):
    """Keeps what uvicorn logs at ERROR while starting: it logs a bind failure, then exits."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def serve(
    app: Any,
    host: str,
    port: int,
    *,
    ready: asyncio.Event | None = None,
    on_bound: Callable[[str, int], None] | None = None,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    access_log: bool = False,
    proxy_headers: bool = False,
) -> None:
    """Serve the ASGI ``app`` on ``host:port`` until cancelled (see the module docstring).
    Raises ``ServerStartError`` when it cannot start.

    ``proxy_headers`` is off by default so that the client address the audit records is the
    peer's, not what an ``X-Forwarded-For`` header claims; turn it on behind a trusted proxy."""
    grace = max(1, math.ceil(shutdown_timeout))
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=access_log,
        proxy_headers=proxy_headers,
        lifespan="auto",
        timeout_graceful_shutdown=grace,
    )
    errors = _StartupErrors()

    def started(server: _EmbeddedServer) -> None:
        bound_host, bound_port = bound_address(server)
        logging.getLogger("uvicorn.error").removeHandler(errors)
        state = getattr(app, "state", None)
        if state is not None:
            state.port = bound_port
        if on_bound is not None:
            on_bound(bound_host, bound_port)
        log.info("API listening on %s:%d", bound_host, bound_port)
        if ready is not None:
            ready.set()

    server = _EmbeddedServer(config, started)

    async def run() -> None:
        logging.getLogger("uvicorn.error").addHandler(errors)
        try:
            await server.serve()
        except SystemExit as exc:
            # uvicorn exits the process when it cannot bind or the app's startup fails.
            reason = "; ".join(errors.messages) or f"uvicorn exited with status {exc.code}"
            raise ServerStartError(
                f"the API server cannot start on {host}:{port}: {reason}"
            ) from None
        finally:
            logging.getLogger("uvicorn.error").removeHandler(errors)

    task = asyncio.create_task(run(), name=f"uvicorn {host}:{port}")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await _stop(server, task, grace)
        raise


async def _stop(server: uvicorn.Server, task: asyncio.Task[None], grace: float) -> None:
    """Ask uvicorn to exit (it gives open requests ``grace`` seconds), force it if it is not
    done ``_FORCE_AFTER_S`` later; ``task`` is over when this returns (if this is cancelled
    again, ``task`` is cancelled too)."""
    if not task.done():
        server.should_exit = True
        # Endless responses (the live stream) end now, not at the end of the grace period.
        stopping = getattr(getattr(server.config.app, "state", None), STOPPING_KEY, None)
        if isinstance(stopping, asyncio.Event):
            stopping.set()
        try:
            done, _ = await asyncio.wait({task}, timeout=grace + _FORCE_AFTER_S)
            if not done:
                log.warning("the API server did not stop in time: forcing it")
                server.force_exit = True
                task.cancel()
                await asyncio.wait({task}, timeout=_FORCE_AFTER_S)
        finally:
            if not task.done():
                task.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.warning("the API server stopped with an error", exc_info=task.exception())


@dataclass
class RunningServer:
    """A server started by ``start_server``."""

    host: str
    port: int
    task: asyncio.Task[None] = field(repr=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop the server and wait for it (bounded by its ``shutdown_timeout``)."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
    startup_timeout: float = 30.0,
) -> RunningServer:
    """Run ``serve`` in a task, wait until it listens and return a handle with the bound
    port. Raises ``ServerStartError`` if it does not start."""
    ready = asyncio.Event()
    address: list[tuple[str, int]] = []
    task = asyncio.create_task(
        serve(
            app,
            host,
            port,
            ready=ready,
            on_bound=lambda h, p: address.append((h, p)),
            shutdown_timeout=shutdown_timeout,
        )
    )
    waiter = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait(
            {task, waiter}, timeout=startup_timeout, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if not ready.is_set():
        if task.done():
            task.result()  # raises the ServerStartError
            raise ServerStartError(f"the API server on {host}:{port} stopped while starting")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise ServerStartError(
            f"the API server on {host}:{port} did not start in {startup_timeout}s"
        )
    bound_host, bound_port = address[0]
    return RunningServer(bound_host, bound_port, task)
