"""Files that hold a secret (tokens, credentials, a config with a password): written so that
only their owner can read them, from their first byte on."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Read and write for the owner, nothing for group and others.
PRIVATE_MODE = 0o600


def write_private(path: Path, data: str | bytes) -> None:
    """Write ``path`` whole with mode 0600 (on POSIX; Windows has no such bits).

    The text goes to a temporary file beside ``path``, which ``mkstemp`` creates 0600 whatever
    the umask, and is then renamed over ``path``: a reader never sees half a file, and a file
    that was readable by others before is replaced, not rewritten in place with its old mode
    (as ``Path.write_text`` would)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
