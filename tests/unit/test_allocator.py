"""The replicator tunes glibc's allocator thresholds for its large batch buffers."""

from __future__ import annotations

import platform
import sys

from tandem.replicator.allocator import tune_allocator


def test_thresholds_are_set_on_glibc_and_left_alone_elsewhere() -> None:
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_allocator() is glibc
    big = [bytes(1 << 20) for _ in range(8)]  # large buffers still allocate and free
    assert sum(map(len, big)) == 8 << 20
