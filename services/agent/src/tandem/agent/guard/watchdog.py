"""The optional Linux watchdog backstop (``[fencing] watchdog = "/dev/watchdog"``).

As Patroni does: the guard opens the device while the node may serve, sets its timeout,
writes a keepalive every loop while the deadline is ahead, and closes it with the magic
character ``V`` (which disarms it) when the node no longer serves. If the guard itself hangs,
or fencing could not hide the node, the keepalives stop and the kernel reboots the machine.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct

log = logging.getLogger(__name__)

#: _IOWR('W', 6, int): set the timeout in seconds (linux/watchdog.h).
WDIOC_SETTIMEOUT = 0xC0045706


class Watchdog:
    def __init__(self, path: str, timeout_s: int) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.fd: int | None = None

    @property
    def armed(self) -> bool:
        return self.fd is not None

    def arm(self) -> None:
        if self.fd is not None:
            return
        self.fd = os.open(self.path, os.O_WRONLY)
        try:
            fcntl.ioctl(self.fd, WDIOC_SETTIMEOUT, struct.pack("i", self.timeout_s))
        except OSError as exc:  # a device without the ioctl keeps its own timeout
            log.warning("watchdog %s: cannot set the timeout: %s", self.path, exc)
        log.info("watchdog %s armed (%ds)", self.path, self.timeout_s)

    def keepalive(self) -> None:
        if self.fd is not None:
            os.write(self.fd, b"1")

    def disarm(self) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, b"V")  # the magic close: the kernel stops the countdown
        finally:
            os.close(self.fd)
            self.fd = None
        log.info("watchdog %s disarmed", self.path)

    def abandon(self) -> None:
        """Close without the magic character: the countdown goes on and the node reboots."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            log.critical("watchdog %s left running: the node reboots", self.path)
