"""What every Tandem service shares at run time: its lifetime events and its ``main``.

A service module exposes a ``ServiceSpec``: its name, a function that builds its settings
and its ``run(settings, bus)`` entry point. ``service_main`` (``python -m tandem.<service>``)
and the CLI's ``tandem run`` both start a service through ``run_service``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from tandem.events.bus import Bus
from tandem.events.catalog import ServiceStarted, ServiceStopped
from tandem.events.catalog.services import ServiceStartedPayload, ServiceStoppedPayload
from tandem.events.connection import BusRefusedLoginError
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.outbox import Outbox
from tandem.events.settings import SettingsError, load_bus_settings, load_stream_settings
from tandem.events.transient import retry_transient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    load_settings: Callable[[], Any]
    run: Callable[[Any, Bus], Awaitable[None]]


def tandem_version() -> str:
    try:
        return version("tandem-events")
    except PackageNotFoundError:
        return "0+unknown"


@contextlib.asynccontextmanager
async def service_lifetime(
    bus: Bus,
    service: str,
    *,
    node: str,
    cluster: str = SYSTEM_CLUSTER,
    listen: dict[str, str] | None = None,
    outbox: Outbox | None = None,
) -> AsyncIterator[ServiceStarted]:
    """Publish ``ServiceStarted`` on entry and ``ServiceStopped`` (with why) on exit.

    With ``outbox`` both go through it (a durable outbox sends a ``ServiceStopped`` the bus
    did not take before the exit after the restart); without, each is retried while the
    bus is away: the start for as long as it takes, the stop for at most 5 seconds."""
    started = ServiceStarted(
        cluster=cluster,
        node=node,
        payload=ServiceStartedPayload(
            service=service,
            version=tandem_version(),
            host=socket.gethostname(),
            pid=os.getpid(),
            listen=listen or {},
        ),
    )
    if outbox is not None:
        outbox.put(started)
    else:
        await retry_transient(f"recording that {service} started", lambda: bus.publish(started))
    log.info("%s started (node %s, cluster %s)", service, node, cluster)
    reason = "stopped"
    try:
        yield started
    except asyncio.CancelledError:
        reason = "stopped on request"
        raise
    except Exception as exc:
        reason = f"crashed: {type(exc).__name__}: {exc}"
        raise
    finally:
        stopped = ServiceStopped(
            cluster=cluster,
            node=node,
            payload=ServiceStoppedPayload(service=service, reason=reason),
        ).caused(started)
        if outbox is not None:
            outbox.put(stopped)
        else:
            try:
                await retry_transient(
                    f"recording that {service} stopped",
                    lambda: bus.publish(stopped, timeout=2),
                    deadline_s=5,
                )
            except Exception as exc:
                log.warning("could not record that %s stopped: %s", service, exc)


async def idle_until_cancelled() -> None:
    """Park a service that has nothing to do yet; it ends when its task is cancelled."""
    await asyncio.Event().wait()


async def run_service(spec: ServiceSpec, *, connect_for_s: float | None = None) -> None:
    """Build settings, connect (retrying, by default for as long as it takes: a bus that is
    away is waited for, never a reason to exit), make sure the streams exist, run until
    cancelled."""
    settings = spec.load_settings()
    bus = await Bus.connect(
        load_bus_settings(), name=f"tandem-{spec.name}", retry_for_s=connect_for_s
    )
    try:
        streams = load_stream_settings()
        await retry_transient(
            "making sure the streams exist",
            lambda: bus.provision(streams, update_existing=False),
            deadline_s=connect_for_s,
        )
        await spec.run(settings, bus)
    finally:
        await bus.close()


def configure_logging(level: str | None = None) -> None:
    logging.basicConfig(
        level=(level or os.environ.get("TANDEM_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One INFO line per HTTP request made (health checks several times a second, the API
    # client) buried everything else in an agent's log; their failures are ours to say.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def service_main(spec: ServiceSpec) -> int:
    """Process entry point: run ``spec`` until SIGTERM or SIGINT; exit code 0 on a clean stop."""
    configure_logging()
    try:
        raw = os.environ.get("TANDEM_STOP_DEADLINE_S", "30")
        try:
            deadline = float(raw)
        except ValueError:
            raise SettingsError(
                f"TANDEM_STOP_DEADLINE_S: not a number of seconds: {raw!r}"
            ) from None
        asyncio.run(until_signalled(run_service(spec), stop_deadline_s=deadline))
    except (SettingsError, ConnectionError, BaseExceptionGroup) as exc:
        # A task group wraps what its tasks raised: look inside for the reason.
        cause = _first(exc, (SettingsError, ConnectionError))
        if cause is None:
            raise
        log.error("%s", cause)
        # A refused login is configuration (credentials) too.
        return 2 if isinstance(cause, (SettingsError, BusRefusedLoginError)) else 3
    return 0


def _first(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kinds)
            if found is not None:
                return found
    return None


#: What a stopping process is doing now (set by its stop path), for the deadline's message.
stopping_stage = ""


def stop_stage(what: str) -> None:
    """Say what the stop does now: the bounded stop names it if the deadline passes."""
    global stopping_stage
    stopping_stage = what
    log.info("stopping: %s", what)


async def until_signalled(work: Awaitable[None], *, stop_deadline_s: float | None = None) -> None:
    """Run ``work`` until SIGTERM or SIGINT cancels it. With ``stop_deadline_s``, the stop is
    bounded: a process that has not ended that long after the signal (a hung application, a
    FUSE unmount that blocks, a thread that never returns) logs why and exits with code 1,
    from a timer thread that needs neither the event loop nor the other threads."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals) -> None:
        if stop_deadline_s is not None:
            _arm_stop_deadline(sig, stop_deadline_s)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    with contextlib.suppress(asyncio.CancelledError):
        await task


_deadline_armed = threading.Event()


def _arm_stop_deadline(sig: signal.Signals, deadline_s: float) -> None:
    if _deadline_armed.is_set():
        return
    _deadline_armed.set()
    log.info("%s: stopping (at most %gs)", sig.name, deadline_s)

    def expired() -> None:
        main = threading.main_thread()
        frame = sys._current_frames().get(main.ident or -1)
        where = (
            f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
            if frame is not None
            else "unknown"
        )
        busy = sorted(
            t.name
            for t in threading.enumerate()
            if t.is_alive() and t is not threading.current_thread() and t is not main
        )
        log.error(
            "did not stop within %gs of %s (%s; main thread at %s; other threads: %s): exiting now",
            deadline_s,
            sig.name,
            stopping_stage or "no stop stage reported",
            where,
            ", ".join(busy) or "none",
        )
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(deadline_s, expired)
    timer.name = "stop-deadline"
    timer.daemon = True
    timer.start()
