"""The ``intercept`` capture backend (Linux): a FUSE passthrough mount in front of the source.

Applications use the mount point; every call passes through to the protected source folder and
every change is submitted to the sink in the order it took effect (see ``intercept_fs``). The
mount point may be the source folder itself: the source is reached through a directory
descriptor opened before mounting, so the mount covers the folder for everyone else.

Notes for operators:
- by default only the mounting user (root for the service) can use the mount: the kernel
  refuses every other user (EACCES). With ``allow_other`` (an application running as its own
  user) every user may, and ``default_permissions`` is set with it, so the kernel checks each
  caller against the owner and mode of the files (the daemon itself, root, would allow all).
  Entries another user creates are given to that user, as a local filesystem would (see
  ``intercept_fs``). A non-root agent needs ``user_allow_other`` in /etc/fuse.conf for it;
- libfuse installs handlers for SIGTERM / SIGHUP when they are at their default (SIG_DFL) and
  then ends the FUSE loop on them instead of ending the process: install your own handlers
  first. An unexpected end of the loop is logged as an error (``running`` turns False);
- after ``stop()`` of a mount over the source folder, writes reach the folder uncaptured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import threading
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from tandem.replicator.capture import OpSink
from tandem.replicator.intercept_mounts import (
    MountError,
    abort_connection,
    clear_dead_mount,
    fsname_for,
    our_mounts,
)

log = logging.getLogger(__name__)

FUSE_CONF = Path("/etc/fuse.conf")


class InterceptError(RuntimeError):
    """The intercept mount could not be set up; the message says why."""


class InterceptCapture:
    """Capture by FUSE passthrough: ``start()`` mounts, ``stop()`` unmounts."""

    name = "intercept"

    def __init__(
        self,
        source: Path | str,
        sink: OpSink,
        mountpoint: Path | str | None = None,
        *,
        mount_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        allow_other: bool = False,
    ) -> None:
        self.source = Path(source)
        self.allow_other = allow_other
        self.mountpoint = Path(mountpoint) if mountpoint is not None else self.source
        self.sink = sink
        self.mount_timeout = mount_timeout
        self.stop_timeout = stop_timeout
        self._root_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._exited = threading.Event()
        self._exit_lock = threading.Lock()
        self._orphaned = False  # stop() gave up waiting: the loop closes its descriptor itself
        self._exit_error: BaseException | None = None
        self._stopping = False
        self._live = False  # the mount was up (an end before that is a start failure)
        self._connection: str | None = None  # fusectl name ("minor" of the mount's device)
        self._ops: Any = None

    def read_root(self) -> Path:
        """The folder under the mount, reached through the descriptor opened before it (a
        magic /proc link does not cross the mount on top): the service never waits on its
        own FUSE loop, which a killed process can no longer answer."""
        fd = self._root_fd
        return Path(f"/proc/self/fd/{fd}") if fd is not None else self.source

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._exited.is_set()

    def exclusive(self) -> AbstractContextManager[object]:
        """Hold every change of the application off while the caller reads the source
        (verify & synchronize): what it then journals cannot race a live write."""
        return contextlib.nullcontext() if self._ops is None else self._ops.mutation_lock

    @property
    def broken(self) -> BaseException | None:
        """The sink error that left a change on the source without an op, if any."""
        return None if self._ops is None else self._ops.broken

    # -- start ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise InterceptError("intercept capture is already started")
        if self._orphaned and not self._exited.is_set():
            raise InterceptError("the previous FUSE loop still serves files opened before stop()")
        try:  # a killed agent's mount would make every call fail
            clear_dead_mount(self.mountpoint)
        except MountError as exc:
            raise InterceptError(str(exc)) from None
        source, mountpoint = self.source.resolve(), self.mountpoint.resolve()
        self._check(source, mountpoint)
        try:
            from tandem.replicator.intercept_fs import (
                PassthroughFuse,
                PassthroughOps,
                mount_options,
                sharing_options,
            )
        except (OSError, AttributeError) as exc:  # mfusepy loads libfuse when imported
            raise InterceptError(f"libfuse is not usable: {exc} (apt-get install fuse3)") from exc

        before = _fuse_mounts(mountpoint)
        self._root_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            cwd_fd: int | None = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            cwd_fd = None
        cwd_lock, serving = threading.Lock(), threading.Event()

        def on_init() -> None:
            # libfuse 3's fuse_main_real changes the process's working directory to "/" even
            # in the foreground, just before serving; put it back at once (other threads may
            # see "/" in between: use absolute paths while starting a capture).
            with cwd_lock:
                if cwd_fd is not None:
                    os.fchdir(cwd_fd)
            serving.set()

        self._ops = PassthroughOps(self._root_fd, self.sink, on_init)
        self._exited.clear()
        self._exit_error, self._stopping, self._orphaned = None, False, False
        self._live = False
        self._connection = None
        kwargs = {**mount_options(fsname_for(os.getpid())), **sharing_options(self.allow_other)}
        self._thread = threading.Thread(
            target=self._serve, args=(PassthroughFuse, str(mountpoint), kwargs, self._root_fd),
            name=f"intercept-fuse:{mountpoint.name}", daemon=True,
        )  # fmt: skip
        self._thread.start()

        try:
            self._await_mount(mountpoint, before, serving)
        finally:
            with cwd_lock:
                if cwd_fd is not None:
                    os.close(cwd_fd)
                    cwd_fd = None
        self._live = True
        where = "over the source" if source == mountpoint else f"at {mountpoint}"
        log.info("intercept: capturing %s through a FUSE mount %s", source, where)

    def _await_mount(
        self, mountpoint: Path, before: set[tuple[int, str]], serving: threading.Event
    ) -> None:
        """Wait until the mount is listed and the loop serves (INIT answered)."""
        deadline = time.monotonic() + self.mount_timeout
        while self._connection is None or not serving.is_set():
            if self._connection is None:
                new = _fuse_mounts(mountpoint) - before
                if new:
                    self._connection = sorted(new)[-1][1]
            if self._exited.wait(0.01):
                self._abandon()
                error = self._exit_error
                reason = (
                    f"libfuse exited with status {error}"  # mfusepy: RuntimeError(status)
                    if type(error) is RuntimeError
                    else str(error or "the FUSE loop ended at once")
                )
                raise InterceptError(
                    f"mounting {mountpoint} failed: {reason} (libfuse's message is on stderr)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise InterceptError(f"{mountpoint} was not mounted within {self.mount_timeout} s")

    def _check(self, source: Path, mountpoint: Path) -> None:
        if not source.is_dir():
            raise InterceptError(f"source {source} is not a directory")
        if not mountpoint.is_dir():
            raise InterceptError(f"mount point {mountpoint} is not a directory")
        if mountpoint != source and mountpoint.is_relative_to(source):
            # Lookups through the source descriptor would re-enter the mount.
            raise InterceptError(f"mount point {mountpoint} lies inside the source {source}")
        try:
            os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
        except OSError as exc:
            raise InterceptError(
                f"cannot use /dev/fuse: {exc} (apt-get install fuse3; modprobe fuse; "
                "in a container, pass the device and CAP_SYS_ADMIN)"
            ) from exc
        if os.geteuid() != 0 and not shutil.which("fusermount3"):
            raise InterceptError("fusermount3 is missing (apt-get install fuse3)")
        problem = sharing_problem(self.allow_other, os.geteuid(), FUSE_CONF)
        if problem is not None:
            raise InterceptError(problem)

    def _serve(self, fuse_class: Any, mountpoint: str, kwargs: dict[str, Any], fd: int) -> None:
        try:
            fuse_class(self._ops, mountpoint, **kwargs)  # returns when unmounted
        except BaseException as exc:
            self._exit_error = exc
        finally:
            with self._exit_lock:
                self._exited.set()
                orphaned = self._orphaned
            if orphaned:
                os.close(fd)
                log.info("intercept: the FUSE loop for %s has ended", mountpoint)
            elif self._live and not self._stopping:
                log.error(
                    "intercept: the FUSE loop for %s ended unexpectedly (%s); "
                    "changes are no longer captured",
                    mountpoint, self._exit_error or "unmounted",
                )  # fmt: skip

    def _abandon(self) -> None:
        """Forget a start that failed before the mount appeared."""
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
        self._thread = None
        self._close_root()

    def flush(self, timeout: float) -> None:
        """Nothing to wait for: every operation is submitted before its syscall returns."""

    # -- stop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping = True
        mountpoint = self.mountpoint.resolve()
        if not self._exited.is_set():
            self._unmount(mountpoint)
        # After a lazy unmount the loop still serves the files that were open (and captures
        # their changes) until they are closed: give them stop_timeout, then sever them.
        if not self._exited.wait(self.stop_timeout) and self._abort_connection():
            self._exited.wait(self.stop_timeout)
        with self._exit_lock:
            if not self._exited.is_set():
                # Leave the descriptor to the loop: closing it under a live loop could send its
                # calls to whatever reuses the number.
                self._orphaned, self._root_fd = True, None
                log.warning(
                    "intercept: %s is unmounted, but files opened before still write through "
                    "it (and are captured); its loop ends when they are closed",
                    mountpoint,
                )
        if not self._orphaned:
            thread.join(self.stop_timeout)
        self._thread = None
        self._close_root()
        log.info("intercept: %s unmounted", mountpoint)

    def _unmount(self, mountpoint: Path) -> None:
        tool = shutil.which("fusermount3") or shutil.which("fusermount")
        attempts = (
            [[tool, "-u", str(mountpoint)], [tool, "-uz", str(mountpoint)]]
            if tool
            else [["umount", str(mountpoint)], ["umount", "-l", str(mountpoint)]]
        )
        for cmd in attempts:
            try:
                done = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=self.stop_timeout
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("intercept: %s failed: %s", " ".join(cmd), exc)
                continue
            if done.returncode == 0:
                return
            if self._exited.is_set():  # unmounted meanwhile (e.g. by an operator)
                return
            log.warning("intercept: %s failed: %s", " ".join(cmd), done.stderr.strip())
        log.error("intercept: could not unmount %s", mountpoint)

    def _abort_connection(self) -> bool:
        """Sever the FUSE connection (after a lazy unmount, open files keep the loop alive)."""
        if self._connection is None:
            return False
        if not abort_connection(self._connection):
            return False
        log.warning("intercept: aborted FUSE connection %s; open files fail", self._connection)
        return True

    def _close_root(self) -> None:
        if self._root_fd is not None:
            os.close(self._root_fd)
            self._root_fd = None


def sharing_problem(allow_other: bool, euid: int, conf: Path) -> str | None:
    """Why a mount with ``allow_other`` by ``euid`` would be refused, or None."""
    if not allow_other or euid == 0 or user_allow_other(conf):
        return None
    return (
        f"allow_other is set, but the agent runs as uid {euid}, not root, and {conf} lacks a "
        "line 'user_allow_other' (add it, or run the agent as root)"
    )


def user_allow_other(conf: Path = FUSE_CONF) -> bool:
    """Whether fuse.conf lets users other than root mount with ``allow_other`` (the option on
    a line by itself, as fusermount3 reads it)."""
    try:
        lines = conf.read_text(errors="replace").splitlines()
    except OSError:
        return False
    return any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines)


def _fuse_mounts(mountpoint: Path) -> set[tuple[int, str]]:
    """(mount id, fusectl connection name) of the FUSE mounts of ours at ``mountpoint``."""
    return {(m.mount_id, m.connection) for m in our_mounts(mountpoint)}
