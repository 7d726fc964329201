"""A system user for tests of applications that run as their own user (not root).

``app_user()`` creates ``tandem-app-test`` (``useradd --system --no-create-home``) when it is
missing and returns its passwd entry; the test is skipped when not root (only root can drop
to another user or create one). ``shared_dir()`` is a folder that user can reach: pytest's
``tmp_path`` lives under ``/tmp/pytest-of-root`` (mode 0700), which it cannot traverse.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import require

APP_USER = "tandem-app-test"
#: An interpreter the test user can run (the venv's lives under /root, mode 0700).
SYSTEM_PYTHON = "/usr/bin/python3"


def app_user() -> pwd.struct_passwd:
    require("root", os.geteuid() == 0, "run the tests as root (they drop to another user)")
    require("python3", os.access(SYSTEM_PYTHON, os.X_OK), f"{SYSTEM_PYTHON} is needed")
    try:
        return pwd.getpwnam(APP_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    require("useradd", useradd is not None, "apt-get install passwd")
    assert useradd is not None
    done = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", APP_USER],
        capture_output=True,
        text=True,
    )
    # 9: created meanwhile by another test run.
    assert done.returncode in (0, 9), f"useradd failed: {done.stderr.strip()}"
    return pwd.getpwnam(APP_USER)


@contextmanager
def shared_dir(prefix: str) -> Iterator[Path]:
    """A fresh folder under /tmp that every user can traverse (0755), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
