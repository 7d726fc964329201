"""The ``intercept`` capture backend on a real FUSE mount.

What is shown: changes made through the mount reach the source unchanged and are captured in
the order they took effect, so replaying the captured ops on an empty replica reproduces the
source, and every prefix of the ops reproduces a state the source actually had.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import random
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from conftest import require
from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.capture import ListSink, OpSink
from tandem.replicator.intercept import InterceptCapture, InterceptError
from tandem.replicator.ops import Op, OpKind

MiB = 1 << 20
Tree = dict[str, tuple[object, ...]]
Mount = Callable[..., tuple[InterceptCapture, Any]]


def need_fuse() -> None:
    require(
        "FUSE",
        Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None,
        "apt-get install fuse3",
    )


@pytest.fixture
def mount() -> Iterator[Mount]:
    """Start captures; every one is stopped (unmounted) at teardown, even after a failure."""
    captures: list[InterceptCapture] = []

    def start(
        source: Path, mountpoint: Path | None = None, sink: OpSink | None = None
    ) -> tuple[InterceptCapture, Any]:
        sink = sink if sink is not None else ListSink()
        capture = InterceptCapture(source=source, sink=sink, mountpoint=mountpoint)
        captures.append(capture)
        capture.start()
        return capture, sink

    yield start
    for capture in captures:
        capture.stop()


def folders(tmp_path: Path) -> tuple[Path, Path]:
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    src.mkdir()
    mnt.mkdir()
    return src, mnt


# -- tree comparison ---------------------------------------------------------------------------


def tree(root: Path) -> Tree:
    """Relative path -> (type, ...): file mode and content hash, symlink target, directory."""
    out: Tree = {}
    pending = [""]
    while pending:
        rel = pending.pop()
        with os.scandir(root / rel if rel else root) as entries:
            for entry in entries:
                path = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    out[path] = ("link", os.readlink(entry.path))
                elif stat.S_ISDIR(st.st_mode):
                    out[path] = ("dir",)
                    pending.append(path)
                elif stat.S_ISREG(st.st_mode):
                    digest = hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
                    out[path] = ("file", oct(stat.S_IMODE(st.st_mode)), st.st_size, digest)
                else:
                    out[path] = ("other", stat.S_IFMT(st.st_mode))
    return out


def assert_same_tree(expected: Tree, actual: Tree, where: str = "") -> None:
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    differ = sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k])
    details = [f"{k}: {expected[k]} != {actual[k]}" for k in differ[:10]]
    assert not (missing or extra or differ), (
        f"trees differ {where}: missing {missing[:10]}, extra {extra[:10]}, differ {details}"
    )


def replay(ops: list[Op], replica: Path) -> None:
    writer = ReplicaWriter(replica)
    for op in ops:
        writer.apply(op)


def umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    return 0o022


# -- workload ----------------------------------------------------------------------------------


class Workload:
    """Seeded random file-system activity under ``mnt/<base>`` (one writer per base)."""

    WEIGHTS: ClassVar[dict[str, int]] = {
        "create": 14, "write_at": 14, "overwrite": 5, "append": 6, "truncate": 6,
        "rename": 8, "rename_dir": 2, "unlink": 6, "mkdir": 4, "rmdir": 3, "symlink": 4,
        "chmod": 5, "utime": 2, "fsync": 2,
    }  # fmt: skip
    MODES = (0o600, 0o644, 0o640, 0o755, 0o700, 0o444)

    def __init__(self, mnt: Path, base: str, seed: int, big_files: int = 1) -> None:
        self.mnt, self.base = mnt, base
        self.rng = random.Random(seed)
        self.files: list[str] = []
        self.dirs: list[str] = [base]
        self.links: list[str] = []
        self.count = 0
        self.big_at = set(self.rng.sample(range(5, 60), big_files))
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps in self.big_at:
            return self.big()
        action = self.rng.choices(list(self.WEIGHTS), weights=list(self.WEIGHTS.values()))[0]
        if not self.files and action not in ("mkdir", "create"):
            action = "create"
        getattr(self, action)()

    # helpers
    def p(self, rel: str) -> Path:
        return self.mnt / rel

    def fresh(self, prefix: str, parents: list[str] | None = None) -> str:
        self.count += 1
        return f"{self.rng.choice(parents or self.dirs)}/{prefix}{self.count}"

    def data(self, most: int = 16384) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, most))

    def some_file(self) -> str:
        return self.rng.choice(self.files)

    # actions
    def create(self) -> None:
        path = self.fresh("f")
        self.p(path).write_bytes(self.data())
        self.files.append(path)

    def big(self) -> None:
        path = self.fresh("big")
        with open(self.p(path), "wb") as fh:
            for _ in range(16):
                fh.write(self.rng.randbytes(64 * 1024))
        self.files.append(path)

    def write_at(self) -> None:
        fd = os.open(self.p(self.some_file()), os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            os.pwrite(fd, self.data(8192) or b"x", self.rng.randint(0, size + 4096))
        finally:
            os.close(fd)

    def overwrite(self) -> None:
        self.p(self.some_file()).write_bytes(self.data())

    def append(self) -> None:
        with open(self.p(self.some_file()), "ab") as fh:
            fh.write(self.data(4096))

    def truncate(self) -> None:
        path = self.p(self.some_file())
        size = self.rng.randint(0, 2 * path.stat().st_size + 100)
        if self.rng.random() < 0.5:
            os.truncate(path, size)
        else:
            fd = os.open(path, os.O_RDWR)
            try:
                os.ftruncate(fd, size)
            finally:
                os.close(fd)

    def rename(self) -> None:
        old = self.some_file()
        self.files.remove(old)
        if self.files and self.rng.random() < 0.3:
            new = self.some_file()  # replaces an existing file
            self.files.remove(new)
        else:
            new = self.fresh("r")
        os.rename(self.p(old), self.p(new))
        self.files.append(new)

    def rename_dir(self) -> None:
        movable = [d for d in self.dirs if d != self.base]
        if not movable:
            return self.mkdir()
        old = self.rng.choice(movable)
        parents = [d for d in self.dirs if d != old and not d.startswith(old + "/")]
        new = self.fresh("m", parents)
        os.rename(self.p(old), self.p(new))

        def moved(path: str) -> str:
            return new + path[len(old) :] if path == old or path.startswith(old + "/") else path

        self.files = [moved(f) for f in self.files]
        self.links = [moved(x) for x in self.links]
        self.dirs = [moved(d) for d in self.dirs]

    def unlink(self) -> None:
        pool = self.links if self.links and self.rng.random() < 0.3 else self.files
        path = self.rng.choice(pool)
        os.unlink(self.p(path))
        pool.remove(path)

    def mkdir(self) -> None:
        path = self.fresh("d")
        os.mkdir(self.p(path))
        self.dirs.append(path)

    def rmdir(self) -> None:
        everything = self.files + self.links + self.dirs
        empty = [
            d
            for d in self.dirs
            if d != self.base and not any(x.startswith(d + "/") for x in everything)
        ]
        if not empty:
            return self.mkdir()
        path = self.rng.choice(empty)
        os.rmdir(self.p(path))
        self.dirs.remove(path)

    def symlink(self) -> None:
        path = self.fresh("l")
        os.symlink(self.rng.choice([*self.files, "nowhere", "../x/y"]), self.p(path))
        self.links.append(path)

    def chmod(self) -> None:
        os.chmod(self.p(self.some_file()), self.rng.choice(self.MODES))

    def utime(self) -> None:
        times = (self.rng.randrange(10**18), self.rng.randrange(10**18))
        os.utime(self.p(self.some_file()), ns=times)

    def fsync(self) -> None:
        fd = os.open(self.p(self.some_file()), os.O_RDWR)
        try:
            os.write(fd, self.data(64) or b"y")
            os.fsync(fd)
        finally:
            os.close(fd)


# -- tests -------------------------------------------------------------------------------------


def test_changes_reach_the_source_and_are_captured_in_order(tmp_path: Path, mount: Mount) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    capture, sink = mount(src, mnt)
    big = random.Random(1).randbytes(MiB)

    (mnt / "a.txt").write_bytes(b"hello")
    os.mkdir(mnt / "d", 0o750)
    with open(mnt / "d" / "big.bin", "wb") as fh:
        fh.write(big)
    os.rename(mnt / "d" / "big.bin", mnt / "d" / "moved.bin")
    os.symlink("d/moved.bin", mnt / "link")
    os.chmod(mnt / "a.txt", 0o600)
    os.truncate(mnt / "a.txt", 2)
    fd = os.open(mnt / "a.txt", os.O_RDWR)
    os.ftruncate(fd, 4)
    os.fsync(fd)
    os.close(fd)
    os.utime(mnt / "a.txt", ns=(1_000_000_000, 2_000_000_000))
    os.chown(mnt / "a.txt", 1234, 5678)
    # Unlinked while open: later writes touch no file of the tree, so nothing is captured.
    fd = os.open(mnt / "gone.txt", os.O_CREAT | os.O_RDWR, 0o644)
    os.unlink(mnt / "gone.txt")
    os.write(fd, b"invisible")
    os.ftruncate(fd, 1)
    os.close(fd)
    os.mkdir(mnt / "e")
    os.rmdir(mnt / "e")
    (mnt / "a.txt").write_bytes(b"again")  # O_TRUNC on an existing file
    os.unlink(mnt / "link")

    assert (mnt / "d" / "moved.bin").read_bytes() == big
    assert (src / "d" / "moved.bin").read_bytes() == big
    assert (src / "a.txt").read_bytes() == b"again"
    assert sorted(os.listdir(mnt)) == sorted(os.listdir(src)) == ["a.txt", "d"]
    assert_same_tree(tree(src), tree(mnt), "between the source and the mount")
    capture.stop()

    ops = sink.ops
    # The 1 MiB file may arrive as one or several writes (the kernel splits by max_write).
    big_writes = [op for op in ops if op.kind is OpKind.WRITE and op.path == "d/big.bin"]
    assert sum(len(op.data) for op in big_writes) == MiB
    assert [op.offset for op in big_writes] == sorted(op.offset for op in big_writes)
    assert b"".join(op.data for op in big_writes) == big
    steps = [(op.kind, op.path) for op in ops if op not in big_writes]
    K = OpKind
    assert steps == [
        (K.CREATE, "a.txt"), (K.WRITE, "a.txt"), (K.MKDIR, "d"), (K.CREATE, "d/big.bin"),
        (K.RENAME, "d/big.bin"), (K.SYMLINK, "link"), (K.CHMOD, "a.txt"), (K.TRUNCATE, "a.txt"),
        (K.TRUNCATE, "a.txt"), (K.FSYNC, "a.txt"), (K.SET_TIMES, "a.txt"), (K.CHOWN, "a.txt"),
        (K.CREATE, "gone.txt"), (K.UNLINK, "gone.txt"), (K.MKDIR, "e"), (K.RMDIR, "e"),
        (K.TRUNCATE, "a.txt"), (K.WRITE, "a.txt"), (K.UNLINK, "link"),
    ]  # fmt: skip
    fields = [op for op in ops if op not in big_writes]
    assert fields[0].mode == 0o666 & ~umask()
    assert (fields[1].offset, fields[1].data) == (0, b"hello")
    assert fields[2].mode == 0o750 & ~umask()
    assert fields[4].target == "d/moved.bin" and fields[5].target == "d/moved.bin"
    assert fields[6].mode == 0o600
    assert (fields[7].size, fields[8].size, fields[16].size) == (2, 4, 0)
    assert (fields[10].atime_ns, fields[10].mtime_ns) == (1_000_000_000, 2_000_000_000)
    assert (fields[11].uid, fields[11].gid) == (1234, 5678)
    assert (fields[17].offset, fields[17].data) == (0, b"again")
    assert not [name for name in os.listdir(src) if name.startswith(".fuse_hidden")]

    replica = tmp_path / "replica"
    replay(ops, replica)
    assert_same_tree(tree(src), tree(replica))


def test_replaying_a_concurrent_workload_reproduces_the_source(
    tmp_path: Path, mount: Mount
) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    capture, sink = mount(src, mnt)
    writers = [Workload(mnt, f"t{i}", seed=100 + i) for i in range(4)]
    for w in writers:
        os.mkdir(mnt / w.base)
    failures: list[BaseException] = []

    def run(w: Workload) -> None:
        try:
            for _ in range(500):
                w.step()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert_same_tree(tree(src), tree(mnt), "between the source and the mount")
    capture.stop()

    ops = list(sink.ops)
    assert set(OpKind) <= {op.kind for op in ops} | {OpKind.CHOWN}
    assert sum(len(op.data) for op in ops if op.kind is OpKind.WRITE) > 4 * MiB
    replica = tmp_path / "replica"
    replay(ops, replica)
    assert_same_tree(tree(src), tree(replica), "after replaying every op")


def test_every_prefix_gives_a_state_the_source_had(tmp_path: Path, mount: Mount) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    capture, sink = mount(src, mnt)
    os.mkdir(mnt / "t")
    writer = Workload(mnt, "t", seed=7, big_files=2)
    steps = 600
    points = set(random.Random(8).sample(range(1, steps + 1), 20))
    checkpoints: list[tuple[int, Tree]] = []
    for step in range(1, steps + 1):
        writer.step()
        if step in points:  # a single writer: nothing changes while the snapshot is taken
            checkpoints.append((len(sink.ops), tree(src)))
    capture.stop()

    replica = tmp_path / "replica"
    apply = ReplicaWriter(replica).apply
    applied = 0
    for count, snapshot in checkpoints:
        for op in sink.ops[applied:count]:
            apply(op)
        applied = count
        assert_same_tree(snapshot, tree(replica), f"after the first {count} ops")


def test_mount_over_the_source_folder_itself(tmp_path: Path, mount: Mount) -> None:
    need_fuse()
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    old = random.Random(3).randbytes(100_000)
    (src / "a.txt").write_bytes(b"before")
    (src / "sub" / "b.bin").write_bytes(old)
    original = tree(src)
    capture, sink = mount(src)  # mount point == source

    assert os.path.ismount(src)
    assert (src / "a.txt").read_bytes() == b"before"
    assert (src / "sub" / "b.bin").read_bytes() == old
    assert sorted(os.listdir(src)) == ["a.txt", "sub"]
    (src / "new.txt").write_bytes(b"new")
    with open(src / "a.txt", "ab") as fh:
        fh.write(b" and after")
    os.rename(src / "sub" / "b.bin", src / "sub" / "c.bin")
    seen = tree(src)
    capture.stop()

    assert not os.path.ismount(src)
    assert_same_tree(seen, tree(src), "after unmounting")  # the changes are in the folder
    assert (src / "a.txt").read_bytes() == b"before and after"
    assert [(op.kind, op.path) for op in sink.ops] == [
        (OpKind.CREATE, "new.txt"),
        (OpKind.WRITE, "new.txt"),
        (OpKind.WRITE, "a.txt"),
        (OpKind.RENAME, "sub/b.bin"),
    ]
    assert (sink.ops[2].offset, sink.ops[2].data) == (len(b"before"), b" and after")
    replica = tmp_path / "replica"
    replica.mkdir()
    (replica / "sub").mkdir()
    (replica / "a.txt").write_bytes(b"before")
    (replica / "sub" / "b.bin").write_bytes(old)
    assert_same_tree(original, tree(replica))
    replay(sink.ops, replica)
    assert_same_tree(tree(src), tree(replica))


def renameat2(old: Path, new: Path, flags: int) -> int:
    """renameat2(2) through libc; 0 or the errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, bytes(old), at_fdcwd, bytes(new), flags) == 0:
        return 0
    return ctypes.get_errno()


def test_failed_operations_return_the_errno_and_submit_nothing(
    tmp_path: Path, mount: Mount
) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    _, sink = mount(src, mnt)
    os.mkdir(mnt / "d")
    (mnt / "d" / "f").write_bytes(b"keep")
    before, ops_before = tree(src), len(sink.ops)

    def fails(code: int, action: Callable[[], object]) -> None:
        with pytest.raises(OSError) as caught:
            action()
        assert caught.value.errno == code, (caught.value, errno.errorcode[code])

    fails(errno.ENOTEMPTY, lambda: os.rmdir(mnt / "d"))
    fails(errno.ENOENT, lambda: os.rename(mnt / "missing", mnt / "other"))
    fails(errno.ENOENT, lambda: os.unlink(mnt / "missing"))
    fails(errno.EEXIST, lambda: os.mkdir(mnt / "d"))
    fails(errno.EEXIST, lambda: os.open(mnt / "d" / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    fails(errno.ENOTDIR, lambda: os.mkdir(mnt / "d" / "f" / "x"))
    fails(errno.EOPNOTSUPP, lambda: os.link(mnt / "d" / "f", mnt / "hard"))
    fails(errno.EINVAL, lambda: (mnt / "back\\slash").write_bytes(b"x"))  # not journal-safe
    assert renameat2(mnt / "d", mnt / "d" / "f", 1) == errno.EEXIST  # RENAME_NOREPLACE
    (src / "plain").write_bytes(b"p")  # (directly in the source: nothing is captured)
    assert renameat2(mnt / "plain", mnt / "d" / "f", 1) == errno.EEXIST
    assert renameat2(mnt / "plain", mnt / "d" / "f", 2) == errno.EINVAL  # RENAME_EXCHANGE

    assert sink.ops[ops_before:] == []
    (src / "plain").unlink()
    assert_same_tree(before, tree(src))
    assert renameat2(mnt / "d" / "f", mnt / "d" / "g", 1) == 0  # NOREPLACE, free name
    assert sink.ops[ops_before:] == [Op(OpKind.RENAME, "d/f", target="d/g")]


class RefusingSink:
    def submit(self, op: Op) -> None:
        raise RuntimeError("queue closed")


def test_a_sink_failure_is_an_io_error_and_marks_the_capture(tmp_path: Path, mount: Mount) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    capture, _ = mount(src, mnt, RefusingSink())
    with pytest.raises(OSError) as caught:
        os.mkdir(mnt / "d")
    assert caught.value.errno == errno.EIO
    assert isinstance(capture.broken, RuntimeError)


def test_stop_with_a_file_still_open_returns_and_loses_nothing(tmp_path: Path) -> None:
    need_fuse()
    src, mnt = folders(tmp_path)
    sink = ListSink()
    capture = InterceptCapture(source=src, sink=sink, mountpoint=mnt, stop_timeout=0.5)
    capture.start()
    fd = os.open(mnt / "open.txt", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"abc")
        capture.stop()  # busy: lazy unmount, then the open file is severed or left to drain
        assert not os.path.ismount(mnt)
        try:
            os.write(fd, b"def")  # still captured while the loop drains, or ENOTCONN if severed
        except OSError as exc:
            assert exc.errno == errno.ENOTCONN
    finally:
        try:
            os.close(fd)
        except OSError as exc:  # the flush on close of a severed connection
            assert exc.errno == errno.ENOTCONN
    content = (src / "open.txt").read_bytes()
    writes = [op.data for op in sink.ops if op.kind is OpKind.WRITE]
    assert b"".join(writes) == content and content in (b"abc", b"abcdef")


def test_a_mount_that_cannot_be_made_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_fuse()
    import tandem.replicator.intercept_fs as intercept_fs

    src, mnt = folders(tmp_path)
    with pytest.raises(InterceptError, match="is not a directory"):
        InterceptCapture(source=src, sink=ListSink(), mountpoint=tmp_path / "nowhere").start()
    (src / "inner").mkdir()
    with pytest.raises(InterceptError, match="inside the source"):
        InterceptCapture(source=src, sink=ListSink(), mountpoint=src / "inner").start()

    options = intercept_fs.mount_options
    monkeypatch.setattr(intercept_fs, "mount_options", lambda name: {**options(name), "bogus": 1})
    capture = InterceptCapture(source=src, sink=ListSink(), mountpoint=mnt)
    with pytest.raises(InterceptError, match="libfuse exited with status"):
        capture.start()
    assert not capture.running and not os.path.ismount(mnt)
