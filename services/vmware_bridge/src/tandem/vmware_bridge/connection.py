"""One vCenter session, shared by every remediation and kept for the life of the bridge.

pyVmomi is blocking: every call here runs in a worker thread (``VCenter.call``). The session
is opened on first use (credentials read from the credentials file at each login) and
reused; when vCenter answers ``NotAuthenticated`` (the session expired or was terminated)
the bridge logs in again once and repeats the call. ``close`` logs out. After vCenter
refused the credentials, they are not tried again for ``login_retry_s`` unless the
credentials file changed: a bridge that keeps trying a wrong password would get the
account locked out.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from tandem.events.settings import SettingsError
from tandem.vmware_bridge.config import VCenterConfig, load_credentials

log = logging.getLogger(__name__)

T = TypeVar("T")


class VCenterError(Exception):
    """vCenter cannot be reached or refused the bridge; the message says why, in one line."""


class LoginRefused(VCenterError):
    """vCenter refused the credentials."""


def fault_name(exc: BaseException) -> str:
    return type(exc).__name__.rsplit(".", 1)[-1]


def describe_fault(exc: BaseException) -> str:
    """A vSphere fault (or any error) as one line: its message and its kind."""
    if isinstance(exc, vmodl.MethodFault):
        msg = getattr(exc, "msg", None) or "; ".join(
            m.message for m in exc.faultMessage if m.message
        )
        return f"{msg} ({fault_name(exc)})" if msg else fault_name(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class Session:
    """A logged-in service instance and its content (read once per login)."""

    si: vim.ServiceInstance
    content: vim.ServiceInstanceContent


def ssl_context(config: VCenterConfig) -> ssl.SSLContext:
    if not config.verify_tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    cafile = str(config.ca_file) if config.ca_file is not None else None
    return ssl.create_default_context(cafile=cafile)


def open_session(config: VCenterConfig) -> Session:
    """Log in to vCenter (blocking). Raises ``VCenterError`` with the reason."""
    try:
        creds = load_credentials(config.credentials_file)
    except SettingsError as exc:
        raise VCenterError(str(exc).replace("\n", " ")) from None
    where = f"vCenter {config.address}"
    try:
        si = SmartConnect(
            host=config.host,
            port=config.port,
            user=creds.username,
            pwd=creds.password.get_secret_value(),
            sslContext=ssl_context(config),
            httpConnectionTimeout=config.http_timeout_s,
        )
        content = si.RetrieveContent()
    except (vim.fault.InvalidLogin, vim.fault.NoPermission) as exc:
        raise LoginRefused(
            f"{where} refused the login of {creds.username}: {describe_fault(exc)}"
        ) from None
    except vmodl.MethodFault as exc:
        raise VCenterError(f"{where}: {describe_fault(exc)}") from None
    except ssl.SSLCertVerificationError as exc:
        raise VCenterError(
            f"{where}: its TLS certificate is not trusted ({exc.verify_message}); "
            "name its CA in vcenter.ca_file (or, in a lab only, set vcenter.verify_tls = false)"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        raise VCenterError(f"cannot reach {where}: {describe_fault(exc)}") from None
    except Exception as exc:  # pyVmomi raises a bare Exception when no VIM API answers
        raise VCenterError(f"cannot use {where}: {describe_fault(exc)}") from None
    log.info("logged in to %s as %s", where, creds.username)
    return Session(si, content)


class VCenter:
    """The bridge's vCenter connection: one session, re-opened when it expired."""

    def __init__(self, config: VCenterConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._session: Session | None = None
        self._generation = 0
        #: Logins so far (the first, and one per expired session).
        self.logins = 0
        #: The last refused login: (when, digest of the credentials file, why).
        self._refused: tuple[float, bytes | None, str] | None = None
        if not config.verify_tls:
            log.warning(
                "TLS verification of vCenter %s is OFF (lab mode): do not use in production",
                config.address,
            )

    def _credentials_digest(self) -> bytes | None:
        try:
            return hashlib.sha256(self.config.credentials_file.read_bytes()).digest()
        except OSError:
            return None

    def _current(self) -> tuple[Session, int]:
        with self._lock:
            if self._session is None:
                self._session = self._login()
                self._generation += 1
                self.logins += 1
            return self._session, self._generation

    def _login(self) -> Session:
        """Log in; after a refused login, not again with the same credentials file for
        ``login_retry_s`` (vCenter locks an account out after a few wrong passwords)."""
        digest = self._credentials_digest()
        now = time.monotonic()
        if self._refused is not None:
            when, same, why = self._refused
            wait = self.config.login_retry_s - (now - when)
            if same == digest and wait > 0:
                raise LoginRefused(
                    f"{why} (not tried again: the credentials file is unchanged; "
                    f"next try in {wait:.0f} s)"
                )
        try:
            session = open_session(self.config)
        except LoginRefused as exc:
            self._refused = (now, digest, str(exc))
            raise
        self._refused = None
        return session

    def _expired(self, generation: int) -> None:
        with self._lock:
            if generation == self._generation:  # nobody logged in again meanwhile
                self._session = None

    def run(self, fn: Callable[[Session], T]) -> T:
        """``fn(session)`` in this thread; once more after a new login if the session
        expired. ``fn`` must look up what it uses from the session it is given."""
        session, generation = self._current()
        try:
            return fn(session)
        except vim.fault.NotAuthenticated:
            log.info("vCenter %s: session no longer valid; logging in again", self.config.address)
            self._expired(generation)
            session, _ = self._current()
            return fn(session)

    async def call(self, fn: Callable[[Session], T]) -> T:
        return await asyncio.to_thread(self.run, fn)

    def close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            try:
                Disconnect(session.si)
            except Exception as exc:
                log.debug("logout from vCenter %s failed: %s", self.config.address, exc)
            else:
                log.info("logged out of vCenter %s", self.config.address)
