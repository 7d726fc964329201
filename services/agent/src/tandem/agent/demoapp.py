"""A small protected application for the demo: items stored as files in a data directory that
Tandem replicates.

    python -m tandem.agent.demoapp --data DIR --port N [--host 127.0.0.1]

``PUT /items/<name>`` stores the body, ``GET /items/<name>`` returns it, ``GET /items`` lists
the names (JSON), ``GET /health`` answers ``{"ok": true}`` (the data folder is usable: one
stat, however many items), or 503 ``{"ok": false}`` when it is not. Logs go to stderr; a
SIGTERM (or SIGINT) ends it cleanly with exit code 0.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import sys
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

NAME = re.compile(r"^(?!\.)[A-Za-z0-9_.-]{1,100}$")
MAX_BODY = 64 * 1024 * 1024
_PREFIX = "/items/"


class ItemStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def names(self) -> list[str]:
        # Temporary files start with '.', which no valid name does.
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and NAME.match(p.name))

    def usable(self) -> bool:
        """The data folder is there and readable (one stat, whatever it holds)."""
        try:
            return self.root.is_dir() and os.access(self.root, os.R_OK | os.W_OK | os.X_OK)
        except OSError:
            return False

    def get(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, name: str, body: bytes) -> None:
        # Temp file, fsync, rename, fsync of the directory: replication and a crash only ever
        # see the old or the new content, never a partial one.
        tmp = self.root / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            with tmp.open("wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / name)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Handler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"
    # Socket timeout, so a client that stalls mid-request cannot hold a thread forever.
    timeout = 30.0

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        store = self.server.store
        if path == "/health":
            # Cheap whatever the data holds: listing every item made it slower with each
            # write (a chaos run's 20,000 records took it past its check's 1 s timeout).
            # Unusable: 503, not a 200 saying false, which every http check (no body_match)
            # took for healthy: a demo app without its data folder was never reported down.
            ok = store.usable()
            self._json(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, {"ok": ok})
        elif path == "/items":
            self._json(HTTPStatus.OK, store.names())
        elif path.startswith(_PREFIX):
            name = self._name(path)
            if name is None:
                return
            data = store.get(name)
            if data is None:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no item {name!r}"})
            else:
                self._send(HTTPStatus.OK, data, "application/octet-stream")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path {path!r}"})

    def do_PUT(self) -> None:
        path = urlsplit(self.path).path
        if not path.startswith(_PREFIX):
            self._json(HTTPStatus.NOT_FOUND, {"error": f"cannot PUT {path!r}"})
            return
        name = self._name(path)
        if name is None:
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "Content-Length is required"})
            return
        if not 0 <= length <= MAX_BODY:
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"max {MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._json(HTTPStatus.BAD_REQUEST, {"error": "body shorter than Content-Length"})
            return
        try:
            self.server.store.put(name, body)
        except OSError as exc:  # a full or failing disk: the client hears it, nothing is stored
            log.warning("item %s not stored: %s", name, exc)
            status = (
                HTTPStatus.INSUFFICIENT_STORAGE
                if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                else HTTPStatus.INTERNAL_SERVER_ERROR
            )
            self._json(status, {"error": f"not stored: {exc.strerror or exc}"})
            return
        log.info("stored item %s (%d bytes)", name, len(body))
        self._json(HTTPStatus.OK, {"stored": name, "bytes": len(body)})

    def _name(self, path: str) -> str | None:
        """The item name of ``path``, or None after answering 400."""
        name = unquote(path[len(_PREFIX) :])
        if NAME.match(name):
            return name
        self._json(
            HTTPStatus.BAD_REQUEST,
            {
                "error": f"bad item name {name!r}: use 1-100 of A-Z a-z 0-9 _ . -, "
                "not starting with '.'"
            },
        )
        return None

    def _json(self, status: HTTPStatus, value: object) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if status >= 400:
            # A refused request's body may be unread: the connection cannot carry another one.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # The access log goes through logging (stderr) rather than straight to sys.stderr.
        log.info("%s %s", self.address_string(), format % args)


class DemoServer(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], store: ItemStore) -> None:
        super().__init__(address, Handler)
        self.store = store

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A client that gave up (a probe's timeout) is not the server's problem: one line.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.info("%s:%s went away: %s", *client_address[:2], exc)
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.agent.demoapp", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory holding the items")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    server = DemoServer((args.host, args.port), ItemStore(args.data))
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # Served from a thread: shutdown() must come from another thread than serve_forever().
    serving = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    serving.start()
    log.info("demo app serving %s on %s:%d", args.data, *server.server_address[:2])
    while not stopping.wait(1.0):
        if not serving.is_alive():
            log.error("HTTP server thread ended unexpectedly")
            return 1
    log.info("signal received; shutting down")
    server.shutdown()
    server.server_close()
    serving.join(timeout=10.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
