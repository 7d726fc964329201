"""Real peers for the notifier's tests: an SMTP server (aiosmtpd, STARTTLS and AUTH), an HTTP
server that records what is posted, the notifier itself (in this process or as a process),
and builders of the events it notifies."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from helpers import eventually, running
from tandem.events.bus import Bus
from tandem.events.bus_tls import TlsFiles, write_local_pki
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    RoleChanged,
    SilenceCreated,
)
from tandem.events.catalog.alerts import (
    AlertClearedPayload,
    AlertRaisedPayload,
    SilenceCreatedPayload,
)
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.embedded import free_port
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM, events_filter
from tandem.notifier.service import run
from tandem.notifier.settings import NotifierSettings

SMTP_USER, SMTP_PASSWORD = "tandem", "s3cret-smtp-pw"


# --- events ----------------------------------------------------------------------------


def raised(
    code: str = "app.down",
    *,
    cluster: str = "demo",
    node: str = "primary",
    severity: Severity = Severity.CRITICAL,
    message: str = "demo app does not answer on :8081",
    subject: str = "",
) -> AlertRaised:
    payload = AlertRaisedPayload(code=code, severity=severity, message=message, subject=subject)
    return AlertRaised(cluster=cluster, node=node, payload=payload)


def cleared(
    code: str = "app.down",
    *,
    cluster: str = "demo",
    node: str = "primary",
    reason: str = "answers again",
    subject: str = "",
) -> AlertCleared:
    payload = AlertClearedPayload(code=code, reason=reason, subject=subject)
    return AlertCleared(cluster=cluster, node=node, payload=payload)


def role_changed(epoch: int, *, cluster: str = "demo") -> RoleChanged:
    active = ("primary", "secondary")[epoch % 2]
    previous = ("primary", "secondary")[(epoch + 1) % 2]
    payload = RoleChangedPayload(
        active_node=active, previous_active=previous, new_epoch=epoch, reason=f"switch {epoch}"
    )
    return RoleChanged(cluster=cluster, node="orchestrator", epoch=epoch, payload=payload)


def silence(matchers: dict[str, str], seconds: float, silence_id: str = "s1") -> SilenceCreated:
    now = datetime.now(UTC)
    payload = SilenceCreatedPayload(
        silence_id=silence_id,
        matchers=matchers,
        starts_at=now - timedelta(seconds=1),
        ends_at=now + timedelta(seconds=seconds),
        by="operator:test",
    )
    return SilenceCreated(cluster="demo", node="orchestrator", payload=payload)


# --- the notifier ------------------------------------------------------------------------


def write_config(path: Path, *routes: str, top: str = "") -> Path:
    path.write_text(top + "\n" + "\n".join(routes), encoding="utf-8")
    return path


def file_route(name: str, target: Path, extra: str = "", match: str = "") -> str:
    return (
        f'[[routes]]\nname = "{name}"\n{extra}\n'
        + (f"[routes.match]\n{match}\n" if match else "")
        + f'[routes.channel]\ntype = "file"\npath = "{target}"\n'
    )


async def events_of(bus: Bus, type_name: str) -> list[Any]:
    sub = await bus.js.subscribe(events_filter(event_type=type_name), ordered_consumer=True)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except Exception:
                break
            out.append(decode_event(msg.data))
    finally:
        await sub.unsubscribe()
    return out


async def consumer_exists(bus: Bus, durable: str = "notifier") -> bool:
    try:
        await bus.js.consumer_info(EVENTS_STREAM, durable)
    except Exception:
        return False
    return True


@contextlib.asynccontextmanager
async def notifier(bus: Bus, config: Path, state: Path, **kw: Any) -> AsyncIterator[None]:
    """The notifier in this process, until the block ends."""
    settings = NotifierSettings(config=config, state_dir=state, **kw)
    async with running(run(settings, bus)):
        await eventually(lambda: consumer_exists(bus), timeout=20, what="the notifier's consumer")
        yield


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_process(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem.notifier"], env=env, stdout=out, stderr=out
        )


# --- SMTP --------------------------------------------------------------------------------


@dataclass
class MailBox:
    messages: list[Message] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert session.authenticated, "mail without AUTH"
        content = envelope.original_content or b""
        self.messages.append(message_from_bytes(content))
        return "250 OK: queued"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == SMTP_USER
            and data.password.decode() == SMTP_PASSWORD
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


@dataclass
class SmtpServer:
    port: int
    tls: TlsFiles
    box: MailBox
    controller: Controller


@contextlib.contextmanager
def smtp_server(
    folder: Path, port: int | None = None, tls: TlsFiles | None = None
) -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1: STARTTLS required (a certificate of a CA of the test's own),
    AUTH required (over TLS only)."""
    tls = tls or write_local_pki(folder / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    box = MailBox()
    port = port or free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=box.authenticate,
    )
    controller.start()
    try:
        yield SmtpServer(port, tls, box, controller)
    finally:
        controller.stop()


def email_route(name: str, port: int, folder: Path, ca: Path, extra: str = "") -> str:
    secret = folder / "smtp-password"
    secret.write_text(SMTP_PASSWORD + "\n")
    return (
        f'[[routes]]\nname = "{name}"\n{extra}\n'
        f'[routes.channel]\ntype = "email"\nhost = "127.0.0.1"\nport = {port}\n'
        f'username = "{SMTP_USER}"\npassword_file = "{secret}"\nca_file = "{ca}"\n'
        'from = "tandem@example.net"\nto = ["oncall@example.net", "dba@example.net"]\n'
        'console_url = "http://console.example.net"\ntimeout_s = 5\n'
    )


# --- HTTP --------------------------------------------------------------------------------


@dataclass
class Posted:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpRecorder:
    port: int
    posted: list[Posted]
    #: The status answered, changeable while it runs.
    status: list[int]


@contextlib.contextmanager
def http_server() -> Iterator[HttpRecorder]:
    posted: list[Posted] = []
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(size)
            posted.append(Posted({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status[0])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpRecorder(server.server_address[1], posted, status)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
