"""The ``watch`` capture backend on real notifications (inotify through watchdog).

Each test copies the source to a replica before capture starts (the state verify &
synchronize would leave), changes the source, waits until capture is quiet, applies the
captured operations to the replica with ``ReplicaWriter`` and compares both trees.
Notifications are asynchronous: tests wait with a bounded poll (until two successive flushes
bring nothing new), never with a fixed sleep, and assert no timing.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.capture import ListSink
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.watch import WatchCapture

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="exercises inotify (Linux)"),
    # watchdog warns when it re-adds a watch it had filed under a stale path (renames).
    pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning"),
]

BLOCK = 64 * 1024
MIB = 1024 * 1024


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Relative path -> (type, content digest or link target, mode for regular files)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", digest, st.st_size, oct(stat.S_IMODE(st.st_mode)))
    return out


def assert_same_tree(source: Path, replica: Path) -> None:
    want, got = snapshot(source), snapshot(replica)
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
    assert (missing, extra, differ) == ([], [], []), {
        "missing": missing,
        "extra": extra,
        "differ": {k: (want[k], got[k]) for k in differ},
    }


def wait_quiet(capture: WatchCapture, sink: ListSink, limit_s: float = 10.0) -> None:
    """Flush until two successive flushes bring no new operation (at most ``limit_s``)."""
    deadline = time.monotonic() + limit_s
    seen, quiet = len(sink.ops), 0
    while quiet < 2 and time.monotonic() < deadline:
        capture.flush(timeout=5.0)
        now = len(sink.ops)
        quiet = quiet + 1 if now == seen else 0
        seen = now


def apply_all(ops: list[Op], replica: Path) -> None:
    writer = ReplicaWriter(replica)
    for op in ops:
        writer.apply(op)


class Env:
    def __init__(self, tmp_path: Path) -> None:
        self.source = tmp_path / "source"
        self.replica = tmp_path / "replica"
        self.outside = tmp_path / "outside"
        self.source.mkdir()
        self.outside.mkdir()
        self.sink = ListSink()
        self.capture: WatchCapture | None = None

    def start(self, cls: type[WatchCapture] = WatchCapture, **kw: float) -> WatchCapture:
        shutil.copytree(self.source, self.replica, symlinks=True)
        self.capture = cls(self.source, self.sink, settle_s=kw.pop("settle_s", 0.05))
        self.capture.start()
        return self.capture

    def settle_and_check(self) -> list[Op]:
        assert self.capture is not None
        wait_quiet(self.capture, self.sink)
        ops = list(self.sink.ops)
        apply_all(ops, self.replica)
        assert_same_tree(self.source, self.replica)
        return ops


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    if e.capture is not None:
        e.capture.stop()


def seed_tree(root: Path, rng: random.Random) -> None:
    for d in ("a", "a/b", "c", "empty"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in ("a/one", "a/b/two", "c/three", "top"):
        (root / name).write_bytes(rng.randbytes(rng.randrange(0, 200_000)))
    (root / "a/big").write_bytes(rng.randbytes(MIB + 1234))
    os.symlink("a/one", root / "link-to-one")


class Workload:
    """Random changes on a live tree; every choice is drawn from a seeded generator."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def listing(self) -> tuple[list[Path], list[Path]]:
        files: list[Path] = []
        dirs: list[Path] = [self.root]
        for dirpath, dirnames, filenames in os.walk(self.root):
            for d in dirnames:
                p = Path(dirpath) / d
                (files if p.is_symlink() else dirs).append(p)
            files.extend(Path(dirpath) / f for f in filenames)
        regular = [f for f in files if not f.is_symlink()]
        return regular, dirs

    def step(self) -> None:
        rng = self.rng
        files, dirs = self.listing()
        action = rng.choices(
            [
                "create", "big", "overwrite", "append", "shrink", "extend", "rename_file",
                "replace_file", "rename_dir", "delete", "mkdir", "rmtree", "symlink", "chmod",
            ],
            weights=[12, 2, 14, 8, 5, 3, 6, 3, 3, 5, 5, 1, 2, 4],
        )[0]  # fmt: skip
        if action in ("overwrite", "append", "shrink", "extend", "delete", "chmod", "rename_file"):
            if not files:
                action = "create"
        if action in ("rename_dir", "rmtree") and len(dirs) < 3:
            action = "mkdir"
        if action == "create":
            (rng.choice(dirs) / self.name("f")).write_bytes(
                rng.randbytes(rng.randrange(0, 150_000))
            )
        elif action == "big":
            (rng.choice(dirs) / self.name("big")).write_bytes(
                rng.randbytes(MIB + rng.randrange(BLOCK))
            )
        elif action == "overwrite":
            path = rng.choice(files)
            size = path.stat().st_size
            with path.open("r+b") as f:
                f.seek(rng.randrange(size + 1))
                f.write(rng.randbytes(rng.randrange(1, 3 * BLOCK)))
        elif action == "append":
            with rng.choice(files).open("ab") as f:
                f.write(rng.randbytes(rng.randrange(1, 2 * BLOCK)))
        elif action == "shrink":
            path = rng.choice(files)
            os.truncate(path, rng.randrange(path.stat().st_size + 1))
        elif action == "extend":
            path = rng.choice(files)
            os.truncate(path, path.stat().st_size + rng.randrange(1, 3 * BLOCK))
        elif action == "rename_file":
            os.rename(rng.choice(files), rng.choice(dirs) / self.name("moved"))
        elif action == "replace_file":
            # The "write a temporary file, then rename it over the original" save pattern.
            if files:
                target = rng.choice(files)
                temp = target.with_name(self.name(".tmp"))
                temp.write_bytes(rng.randbytes(rng.randrange(0, 100_000)))
                os.replace(temp, target)
        elif action == "rename_dir":
            movable = [d for d in dirs if d != self.root]
            src = rng.choice(movable)
            dest_parents = [d for d in dirs if d != src and src not in d.parents]
            os.rename(src, rng.choice(dest_parents) / self.name("d"))
        elif action == "delete":
            rng.choice(files).unlink()
        elif action == "mkdir":
            parent = rng.choice(dirs)
            if len(parent.relative_to(self.root).parts) < 4:
                (parent / self.name("d")).mkdir()
        elif action == "rmtree":
            shutil.rmtree(rng.choice([d for d in dirs if d != self.root]))
        elif action == "symlink":
            target = rng.choice([*files, Path("nowhere")])
            os.symlink(os.path.relpath(target, self.root), rng.choice(dirs) / self.name("ln"))
        elif action == "chmod":
            rng.choice(files).chmod(rng.choice([0o600, 0o640, 0o644, 0o700, 0o755]))


@pytest.mark.parametrize("seed", [1, 2])
def test_random_workload_replicates_the_tree(env: Env, seed: int) -> None:
    rng = random.Random(seed)
    seed_tree(env.source, rng)
    env.start()
    workload = Workload(env.source, rng)
    for _ in range(120):
        workload.step()

    ops = env.settle_and_check()

    kinds = {op.kind for op in ops}
    assert {OpKind.CREATE, OpKind.WRITE, OpKind.RENAME, OpKind.UNLINK} <= kinds


def test_only_changed_blocks_are_journaled(env: Env) -> None:
    data = random.Random(5).randbytes(2 * MIB)
    (env.source / "db.bin").write_bytes(data)
    env.start()

    with (env.source / "db.bin").open("r+b") as f:
        f.seek(10 * BLOCK + 100)
        f.write(b"one small change")

    ops = env.settle_and_check()

    writes = [op for op in ops if op.kind is OpKind.WRITE]
    assert writes, ops
    assert {op.offset for op in writes} == {10 * BLOCK}
    assert all(len(op.data) == BLOCK for op in writes)
    assert [op.kind for op in ops if op.kind is not OpKind.WRITE] == []


def test_directory_rename_moves_the_subtree(env: Env) -> None:
    (env.source / "d/sub").mkdir(parents=True)
    (env.source / "d/sub/f").write_bytes(b"content")
    env.start()

    os.rename(env.source / "d", env.source / "e")
    (env.source / "e/sub/f").write_bytes(b"changed after the move")
    (env.source / "e/sub/g").write_bytes(b"new")

    ops = env.settle_and_check()

    assert Op(OpKind.RENAME, "d", target="e") in ops
    assert not any(op.kind is OpKind.RENAME and op.path.startswith("d/") for op in ops)
    assert all(not op.path.startswith("d/") for op in ops)


def test_directory_moved_out_and_in(env: Env) -> None:
    (env.source / "gone/deep").mkdir(parents=True)
    (env.source / "gone/deep/f").write_bytes(b"1")
    (env.source / "gone/g").write_bytes(b"2")
    (env.outside / "incoming/sub").mkdir(parents=True)
    (env.outside / "incoming/sub/h").write_bytes(b"3" * 100_000)
    os.symlink("sub/h", env.outside / "incoming/ln")
    env.start()

    os.rename(env.source / "gone", env.outside / "gone")
    os.rename(env.outside / "incoming", env.source / "incoming")

    ops = env.settle_and_check()

    removal = [(op.kind, op.path) for op in ops if op.path.startswith("gone")]
    assert removal[-1] == (OpKind.RMDIR, "gone")
    assert set(removal) == {
        (OpKind.UNLINK, "gone/deep/f"),
        (OpKind.RMDIR, "gone/deep"),
        (OpKind.UNLINK, "gone/g"),
        (OpKind.RMDIR, "gone"),
    }
    assert removal.index((OpKind.UNLINK, "gone/deep/f")) < removal.index(
        (OpKind.RMDIR, "gone/deep")
    )
    assert Op(OpKind.SYMLINK, "incoming/ln", target="sub/h") in ops


def test_chmod_alone_is_a_chmod(env: Env) -> None:
    (env.source / "f").write_bytes(b"x" * 1000)
    (env.source / "f").chmod(0o644)
    (env.source / "d").mkdir()
    (env.source / "d").chmod(0o755)
    env.start()

    (env.source / "f").chmod(0o600)
    (env.source / "d").chmod(0o700)

    ops = env.settle_and_check()

    assert Op(OpKind.CHMOD, "f", mode=0o600) in ops
    assert Op(OpKind.CHMOD, "d", mode=0o700) in ops
    assert not [op for op in ops if op.kind is OpKind.WRITE]
    assert stat.S_IMODE(os.lstat(env.replica / "d").st_mode) == 0o700


def test_type_changes_and_quick_sequences(env: Env) -> None:
    (env.source / "was-file").write_bytes(b"file")
    (env.source / "was-dir/x").mkdir(parents=True)
    (env.source / "was-dir/x/y").write_bytes(b"y")
    (env.source / "was-link-target").write_bytes(b"t")
    os.symlink("was-link-target", env.source / "was-link")
    env.start()

    (env.source / "was-file").unlink()
    (env.source / "was-file").mkdir()
    (env.source / "was-file/inside").write_bytes(b"inside")
    shutil.rmtree(env.source / "was-dir")
    os.symlink("elsewhere", env.source / "was-dir")
    (env.source / "was-link").unlink()
    (env.source / "was-link").write_bytes(b"now a file")
    # created, written, renamed twice and deleted again before any event is handled
    (env.source / "brief").write_bytes(b"brief")
    os.rename(env.source / "brief", env.source / "brief2")
    os.rename(env.source / "brief2", env.source / "brief3")
    (env.source / "brief3").unlink()
    # a new directory filled and renamed right away
    (env.source / "fresh/a/b").mkdir(parents=True)
    (env.source / "fresh/a/b/c").write_bytes(b"c" * 70_000)
    os.rename(env.source / "fresh", env.source / "fresh2")

    env.settle_and_check()


def test_stop_sends_everything_that_took_effect(env: Env) -> None:
    (env.source / "f").write_bytes(b"old")
    capture = env.start(settle_s=5.0)  # a long settle: stop must not wait for it

    (env.source / "f").write_bytes(b"new content")
    (env.source / "g").write_bytes(b"g")
    capture.stop()
    env.capture = None

    apply_all(env.sink.ops, env.replica)
    assert_same_tree(env.source, env.replica)


def test_directory_created_just_before_its_parent_is_renamed_is_watched(env: Env) -> None:
    """mkdir X/d then rename X at once: watchdog may try to watch X/d after it moved away.

    The capture must still see what happens in the new directory afterwards.
    """
    for i in range(5):
        (env.source / f"x{i}").mkdir()
    env.start()  # the x* directories are watched once start() returns

    for i in range(5):
        (env.source / f"x{i}/d").mkdir()
        os.rename(env.source / f"x{i}", env.source / f"y{i}")
    assert env.capture is not None
    wait_quiet(env.capture, env.sink)
    for i in range(5):
        (env.source / f"y{i}/d/later").write_bytes(b"written after the rename")
        (env.source / f"y{i}/d/sub").mkdir()
        (env.source / f"y{i}/d/sub/deeper").write_bytes(b"deeper")

    env.settle_and_check()


def rotate_logs(root: Path, rounds: int, started: threading.Event | None = None) -> None:
    """Log rotation, no pause: append to log, rename it to log.1, then over log.2."""
    for r in range(rounds):
        d = root / f"r{r % 7}"
        d.mkdir(exist_ok=True)
        with (d / "log").open("ab") as out:
            out.write(os.urandom(3000))
        (d / "log").rename(d / "log.1")
        if (d / "log.2").exists():
            (d / "log.2").unlink()
        (d / "log.1").rename(d / "log.2")
        if started is not None and r == 30:
            started.set()


class RotatingWhileScanning(WatchCapture):
    def _scan_initial(self) -> None:  # the watch is in place: rotate during the scan
        started = threading.Event()
        self.rotation = threading.Thread(target=rotate_logs, args=(self.root, 300, started))
        self.rotation.start()
        started.wait(10.0)
        super()._scan_initial()


@pytest.mark.parametrize("cls", [WatchCapture, RotatingWhileScanning])
def test_files_renamed_before_their_creation_is_handled(env: Env, cls: type) -> None:
    """Such a file was never sent: its move must not be a RENAME (FileNotFoundError on the
    copy). The scan may also see files whose creation is still queued (not on the copy)."""
    for i in range(4):  # r4..r6 are created by the rotation
        (env.source / f"r{i}").mkdir()
    capture = env.start(cls=cls)
    if isinstance(capture, RotatingWhileScanning):
        capture.rotation.join()
    else:
        rotate_logs(env.source, 300)

    env.settle_and_check()  # every op applies, and the trees are equal
