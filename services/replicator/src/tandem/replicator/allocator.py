"""The C allocator, tuned for the replicator's buffers.

Every batch passes through a few buffers of up to a MiB (the captured write, the encoded body,
the compressed data, the received message). glibc serves blocks that large with ``mmap`` and
returns freed memory above 128 KiB (adjusted as it goes) to the system at once, so each new
buffer page-faults in zeroed pages again: a quarter of the source's CPU in the sequential
benchmark. Raising both thresholds keeps these buffers in the heap, where they are reused;
what is kept is bounded by ``trim_threshold`` per arena.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

#: Above the largest batch (8 MiB) and its compressed copy.
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 64 << 20


def tune_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Set glibc's thresholds for this process; False (and nothing changed) elsewhere."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
    log.debug("allocator thresholds: mmap %d, trim %d (%s)", mmap_threshold, trim_threshold, ok)
    return ok
