"""The ``intercept`` mount used by an application running as its own user (a root daemon).

With ``allow_other`` the user gets in, the kernel checks its rights against the files
(``default_permissions``: a root-only file stays unreadable to it), and what it creates is
its own on the source and, through the CHOWN journalled right after each creation, on a
replica. Without ``allow_other`` (the default) the same user is refused (EACCES).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from app_user import SYSTEM_PYTHON, app_user, shared_dir
from conftest import require
from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.capture import ListSink
from tandem.replicator.intercept import InterceptCapture, sharing_problem, user_allow_other
from tandem.replicator.ops import OpKind

NOGROUP = 65534

# Run as the test user: what it makes through the mount, and the errno of what it may not do.
USER_WORK = r"""
import errno, json, os, sys
mnt = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as exc:
        out[name] = errno.errorcode.get(exc.errno, exc.errno)
def make():
    with open(os.path.join(mnt, "app", "data.bin"), "wb") as f:
        f.write(b"x" * 100_000)
        f.flush()
        os.fsync(f.fileno())
    os.mkdir(os.path.join(mnt, "app", "dir"), 0o750)
    with open(os.path.join(mnt, "app", "dir", "inner"), "w") as f:
        f.write("inner")
    os.symlink("data.bin", os.path.join(mnt, "app", "link"))
    with open(os.path.join(mnt, "app", "shared", "in-setgid"), "w") as f:
        f.write("g")
attempt("make", make)
attempt("read_secret", lambda: open(os.path.join(mnt, "secret")).read())
attempt("create_in_root", lambda: open(os.path.join(mnt, "mine-at-root"), "w").close())
attempt("chown_to_root", lambda: os.chown(os.path.join(mnt, "app", "data.bin"), 0, 0))
print(json.dumps(out))
"""


def need_fuse() -> None:
    require(
        "FUSE",
        Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None,
        "apt-get install fuse3",
    )


@pytest.fixture
def folders() -> Iterator[tuple[Path, Path]]:
    """source and mount point on a path the test user can reach; the source holds ``app``
    (the user's, 0700), ``app/shared`` (setgid, group nogroup) and a root-only ``secret``."""
    need_fuse()
    user = app_user()
    with shared_dir("tandem-allow-other-") as top:
        src, mnt = top / "src", top / "mnt"
        src.mkdir(mode=0o755)
        mnt.mkdir(mode=0o755)
        (src / "app").mkdir()
        os.chown(src / "app", user.pw_uid, user.pw_gid)
        (src / "app").chmod(0o700)
        (src / "app" / "shared").mkdir()
        os.chown(src / "app" / "shared", user.pw_uid, NOGROUP)
        (src / "app" / "shared").chmod(0o2770)
        secret = src / "secret"
        secret.write_text("root only")
        secret.chmod(0o600)
        yield src, mnt


def as_user(mnt: Path) -> dict[str, object]:
    user = app_user()
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", USER_WORK, str(mnt)],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_a_user_creates_its_own_files_through_an_allow_other_mount(
    folders: tuple[Path, Path], tmp_path: Path
) -> None:
    src, mnt = folders
    user = app_user()
    sink = ListSink()
    capture = InterceptCapture(src, sink, mnt, allow_other=True)
    capture.start()
    try:
        result = as_user(mnt)
    finally:
        capture.stop()
    assert result == {
        "make": 0,
        "read_secret": "EACCES",  # default_permissions: the kernel checks the mode bits
        "create_in_root": "EACCES",  # the root is root's, 0755
        "chown_to_root": "EPERM",  # only root gives files away
    }
    assert not (src / "mine-at-root").exists()

    mine = {
        "app/data.bin": (OpKind.CREATE, user.pw_gid),
        "app/dir": (OpKind.MKDIR, user.pw_gid),
        "app/dir/inner": (OpKind.CREATE, user.pw_gid),
        "app/link": (OpKind.SYMLINK, user.pw_gid),
        # In a setgid directory the new file keeps the group it inherited.
        "app/shared/in-setgid": (OpKind.CREATE, NOGROUP),
    }
    for rel, (_, gid) in mine.items():
        st = os.lstat(src / rel)
        assert (st.st_uid, st.st_gid) == (user.pw_uid, gid), rel
    assert stat.S_ISLNK(os.lstat(src / "app" / "link").st_mode)
    assert (src / "app" / "data.bin").read_bytes() == b"x" * 100_000
    assert stat.S_IMODE(os.lstat(src / "app" / "dir").st_mode) == 0o750

    # Each creation is followed at once by the CHOWN that gives it to the user.
    ops = sink.ops
    for rel, (kind, gid) in mine.items():
        [at] = [i for i, op in enumerate(ops) if op.path == rel and op.kind is kind]
        chown = ops[at + 1]
        assert (chown.kind, chown.path, chown.uid, chown.gid) == (
            OpKind.CHOWN,
            rel,
            user.pw_uid,
            gid,
        ), rel
    assert sum(op.kind is OpKind.CHOWN for op in ops) == len(mine)

    # A replica built from the journal has the same owners.
    replica = tmp_path / "replica"
    replica.mkdir()
    (replica / "app").mkdir()
    (replica / "app" / "shared").mkdir()
    writer = ReplicaWriter(replica)
    for op in ops:
        writer.apply(op)
    for rel, (_, gid) in mine.items():
        st = os.lstat(replica / rel)
        assert (st.st_uid, st.st_gid) == (user.pw_uid, gid), rel


def test_without_allow_other_another_user_is_refused(folders: tuple[Path, Path]) -> None:
    """Today's default: only the mounting user (root) may use the mount."""
    src, mnt = folders
    sink = ListSink()
    capture = InterceptCapture(src, sink, mnt)
    capture.start()
    try:
        result = as_user(mnt)
        assert os.listdir(mnt) is not None  # root still gets in
    finally:
        capture.stop()
    assert result["make"] == "EACCES" and result["read_secret"] == "EACCES"
    assert not (src / "app" / "data.bin").exists() and sink.ops == []


def test_root_creations_are_not_given_away(folders: tuple[Path, Path]) -> None:
    """The daemon's own user creating through an allow_other mount: no CHOWN is journalled."""
    src, mnt = folders
    sink = ListSink()
    capture = InterceptCapture(src, sink, mnt, allow_other=True)
    capture.start()
    try:
        (mnt / "by-root").write_text("r")
        (mnt / "root-dir").mkdir()
    finally:
        capture.stop()
    kinds = [op.kind for op in sink.ops]
    assert OpKind.CREATE in kinds and OpKind.MKDIR in kinds
    assert OpKind.CHOWN not in [op.kind for op in sink.ops]
    assert os.lstat(src / "by-root").st_uid == 0


def test_allow_other_under_a_non_root_agent_needs_fuse_conf(tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("#user_allow_other\nmount_max = 1000\n")
    assert not user_allow_other(conf)
    problem = sharing_problem(True, 1000, conf)
    assert problem is not None
    assert "uid 1000, not root" in problem and f"{conf} lacks a line 'user_allow_other'" in problem
    assert sharing_problem(True, 0, conf) is None  # root may, whatever the file says
    assert sharing_problem(False, 1000, conf) is None
    conf.write_text("  user_allow_other  # let users share their mounts\n")
    assert user_allow_other(conf) and sharing_problem(True, 1000, conf) is None
    assert not user_allow_other(tmp_path / "missing.conf")
