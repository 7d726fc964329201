"""The loopback stand-in for a public address: a TCP port on 127.0.0.1 that only the Active
listens on, forwarding each connection to the application's own port on that node.

Two nodes on one machine cannot both listen on the port, which is the point: a second
``expose`` fails while another node still serves the address, just as a duplicate IP must
never answer. Hiding closes the listener and every forwarded connection. It lives only in
the agent's memory, so an agent that restarts comes up hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger(__name__)


class PublicPortTaken(OSError):
    pass


class PublicPort:
    def __init__(self, host: str, port: int, target_host: str, target_port: int) -> None:
        self.host = host
        self.port = port
        self.target_host = target_host
        self.target_port = target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start(self) -> None:
        if self.listening:
            return
        try:
            self._server = await asyncio.start_server(
                self._accept, self.host, self.port, reuse_address=True
            )
        except OSError as exc:
            raise PublicPortTaken(
                f"public address {self.host}:{self.port} is in use (another node still "
                f"serves it?): {exc.strerror}"
            ) from None
        log.info("public %s:%s -> %s:%s", self.host, self.port, self.target_host, self.target_port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        for task in list(self._links):
            task.cancel()
        if self._links:
            await asyncio.wait(self._links, timeout=2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # asyncio logs a cancelled connection handler as an error in a callback: a link cut
        # by ``stop`` (the node hides) is how it is meant to end, so it ends quietly.
        try:
            await self._link(reader, writer)
        except asyncio.CancelledError:
            writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), 5
            )
        except (OSError, TimeoutError) as exc:
            log.debug("public port: application unreachable: %s", exc)
            writer.close()
            self._links.discard(task)
            return
        try:
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        finally:
            for w in (writer, up_w):
                w.close()
            self._links.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()
