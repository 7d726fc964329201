"""The ``watch`` capture backend: file notifications (watchdog) plus block hashes.

Portable (inotify on Linux, ReadDirectoryChangesW on Windows), at the price of precision: the
backend learns *that* a path changed and reconstructs *what* changed by comparing the tree
with what it has already sent. It keeps a model of the copy (every directory with its mode,
every symlink with its target, every file with its mode and, in a ``BlockIndex``, its size
and block digests) and turns each event into the operations that bring the copy to the
current state of that path on disk:

- created directory  -> MKDIR(mode), then its content (a directory that appears with content,
  e.g. moved in from outside the root, is scanned: watchdog's own synthetic events for the
  content then find nothing left to do);
- created file       -> CREATE(mode), then its content diff (scheduled like a modification);
- modified file      -> CHMOD if the mode changed, and the WRITE/TRUNCATE of the changed blocks;
  bursts are coalesced: a file is diffed once ``settle_s`` after its first pending change
  (never postponed further, so a file written continuously is still sent regularly);
- attribute change   -> CHMOD when the mode differs from the known mode (files, directories);
- deleted            -> UNLINK / RMDIR; a directory's remaining known children are removed
  first, deepest first (a directory moved out of the root is reported as one deletion);
- moved              -> RENAME, the model (and the index) re-keyed for the whole subtree;
  watchdog's synthetic "moved" events for the children of a moved directory are skipped, and
  the moved directory is scanned instead (what was created in it just before the move was
  reported under paths that no longer existed when those events were handled);
- symlink created    -> SYMLINK(target = the link's content, never followed).

Every event is handled against the *current* state of the disk (events arrive late), which
makes handling idempotent: a duplicate or stale event finds nothing to send. A path that is
gone when its event is handled is left to what necessarily follows in the queue: its deletion,
its move, or the move of a parent directory (the scan of the moved directory finds it). A
file whose diff finds it gone stays "dirty" and is diffed again at its new path. Events are
handled in one worker thread, in the order watchdog delivered them; the operations are
submitted to the sink in that order.

On Linux, watchdog's inotify observer is extended (``_RewatchingWatchGroup``) to watch
directories that a quick rename of their parent left unwatched; see there.

Limits (why the ``intercept`` backend exists): writes are observed after the fact, so the copy
only receives a file's state at diff time (no crash-consistent ordering between files); files
already present at ``start()`` are assumed to be on the copy already (initial sync is verify &
synchronize's job, which must also run after a notification overflow or a crash).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import posixpath
import queue
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, EventDispatcher
from watchdog.utils import UnsupportedLibcError

from tandem.replicator.blockindex import DEFAULT_MAX_WRITE, BlockIndex
from tandem.replicator.capture import OpSink
from tandem.replicator.ops import Op, OpKind, PathRefusedError, safe_path

_HAVE_INOTIFY = False
if sys.platform.startswith("linux"):
    try:  # the names below are watchdog 7.x internals, hence the fallback
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
        from watchdog.observers.inotify_c import InotifyEvent, WatchDescriptor

        _HAVE_INOTIFY = True
    except (ImportError, UnsupportedLibcError):  # pragma: no cover
        pass

logger = logging.getLogger(__name__)

_DIR, _FILE, _LINK = "dir", "file", "link"

#: How long watchdog may hold an event before handing it over: on Linux it keeps an
#: IN_MOVED_FROM up to 0.5 s to pair it with its IN_MOVED_TO, and everything behind it waits.
DELIVERY_LAG_S = 0.6

#: Delay before reading again a file that could not be read.
RETRY_S = 1.0

#: Event types that say nothing the backend needs.
_IGNORED_EVENTS = {"opened", "closed_no_write"}


@dataclass(slots=True)
class _Node:
    kind: str
    mode: int = 0
    target: str = ""
    #: A file whose content may differ from the index: set when a diff is scheduled, cleared
    #: when one completes. A diff that finds the file gone leaves it set; the file's node moves
    #: with a later rename, which schedules the diff again at the new path.
    dirty: bool = False
    #: The mode could not be read when a change was reported (the path was renamed already):
    #: checked again at the new path when the rename event is handled.
    stale_mode: bool = False


def _parent(rel: str) -> str:
    return posixpath.dirname(rel)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class _Tree:
    """The model of the copy: known paths and, per directory, its known children."""

    def __init__(self) -> None:
        self.nodes: dict[str, _Node] = {}
        self.children: dict[str, set[str]] = {}

    def get(self, rel: str) -> _Node | None:
        return self.nodes.get(rel)

    def add(self, rel: str, node: _Node) -> None:
        self.nodes[rel] = node
        self.children.setdefault(_parent(rel), set()).add(rel)

    def discard(self, rel: str) -> None:
        """Forget ``rel`` alone (its children, if any, must be forgotten already)."""
        self.nodes.pop(rel, None)
        self.children.pop(rel, None)
        siblings = self.children.get(_parent(rel))
        if siblings is not None:
            siblings.discard(rel)
            if not siblings:
                del self.children[_parent(rel)]

    def subtree(self, rel: str) -> list[str]:
        """``rel`` and its known descendants, every directory before its content."""
        out: list[str] = []
        stack = [rel]
        while stack:
            path = stack.pop()
            out.append(path)
            stack.extend(self.children.get(path, ()))
        return out

    def move(self, old: str, new: str) -> list[tuple[str, str, _Node]]:
        """Re-key the subtree at ``old`` to ``new``; returns (old, new, node) per path."""
        moved = [(path, new + path[len(old) :], self.nodes[path]) for path in self.subtree(old)]
        for path, _, _ in reversed(moved):
            self.discard(path)
        for _, path, node in moved:
            self.add(path, node)
        return moved


class _Fence:
    """Queued by ``flush``: set once everything queued before it is handled."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class _Handler(FileSystemEventHandler):
    """Runs in watchdog's dispatcher thread: only hands events over to the worker."""

    def __init__(self, events: queue.SimpleQueue[object]) -> None:
        self._events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _IGNORED_EVENTS:
            self._events.put(event)


_WATCH_GROUP_FIELDS = {
    "_inotify_fd", "path", "event_mask", "is_recursive", "follow_symlink", "_lock", "_id",
    "_active_callbacks_by_watch", "_active_callbacks_by_path",
}  # fmt: skip
_WATCH_GROUP_METHODS = (
    "__post_init__", "on_event", "_build_event_source_path", "_add_callback", "_move_watches",
    "_remove_watch_internally",
)  # fmt: skip


def _make_observer() -> BaseObserver:
    """watchdog's native observer; on Linux with the fixes of ``_RewatchingWatchGroup``.

    The fixes rely on watchdog internals (7.1); with another layout the stock observer is used.
    """
    if sys.platform.startswith("linux") and _HAVE_INOTIFY:
        fields = {f.name for f in dataclasses.fields(InotifyWatchGroup)}
        if _WATCH_GROUP_FIELDS <= fields and all(
            hasattr(InotifyWatchGroup, name) for name in _WATCH_GROUP_METHODS
        ):
            return _RewatchingInotifyObserver()
        logger.warning("watch capture: unexpected watchdog internals; using the stock observer")
    return Observer()


if sys.platform.startswith("linux") and _HAVE_INOTIFY:

    class _RewatchingWatchGroup(InotifyWatchGroup):
        """watchdog's recursive inotify watch, with two holes of its path bookkeeping closed.

        1. watchdog adds the watch of a new directory when it reads the directory's IN_CREATE.
           If the parent was renamed in between, adding the watch fails (the path is gone)
           and, the parent being watched, the later move only re-keys existing watches: the
           new directory would never report anything. After every directory move, this
           watches whatever directory under the destination is not watched yet. What was
           created in it before is found by the capture, which scans a moved directory when
           it handles the move (after this ran). Directories whose inode is watched already
           (under their old path: their own move event is still to come) are left alone, so
           that the paths of the events still queued for them stay right.
        2. A directory moved into a directory that is not watched yet produces an unpaired
           IN_MOVED_FROM only; watchdog keeps its watches filed under the old paths. When the
           new parent gets watched, adding the moved directory returns its existing watch:
           watchdog then re-files that one watch but not the ones below it, and a later rename
           of the old parent re-keys those stale paths, so events are reported under paths
           that do not exist. Here, a watch found filed under another path moves its whole
           subtree to the new path.
        """

        def __post_init__(self) -> None:
            self._inode_of_watch: dict[int, tuple[int, int]] = {}
            self._watched_inodes: set[tuple[int, int]] = set()
            super().__post_init__()

        def _add_callback(self, path: bytes) -> None:
            try:
                st = os.stat(path, follow_symlinks=self.follow_symlink)
                wd = self._inotify_fd.add_callback(path, self.event_mask, self._callback, self._id)
            except OSError:
                if path == self.path:
                    raise
                return
            previous = self._active_callbacks_by_watch.get(wd)
            if previous is not None and previous != path:
                self._move_watches(previous, path)
            self._active_callbacks_by_path[path] = wd
            self._active_callbacks_by_watch[wd] = path
            inode = (st.st_dev, st.st_ino)
            self._inode_of_watch[wd] = inode
            self._watched_inodes.add(inode)

        def _remove_watch_internally(self, wd: WatchDescriptor) -> None:
            super()._remove_watch_internally(wd)
            inode = self._inode_of_watch.pop(wd, None)
            if inode is not None:
                self._watched_inodes.discard(inode)

        def on_event(self, event: InotifyEvent) -> None:
            super().on_event(event)
            if not (event.is_moved_to and event.is_directory and self.is_recursive):
                return
            with self._lock:
                if not self.is_active:
                    return
                dest = self._build_event_source_path(event)
                if dest is None:
                    return
                for top, dirnames, _ in os.walk(dest):
                    for name in dirnames:
                        path = os.path.join(top, name)
                        if path in self._active_callbacks_by_path:
                            continue
                        try:
                            st = os.lstat(path)
                        except OSError:
                            continue
                        if stat.S_ISDIR(st.st_mode) and (
                            (st.st_dev, st.st_ino) not in self._watched_inodes
                        ):
                            self._add_callback(path)

    class _RewatchingEmitter(InotifyEmitter):
        def on_thread_start(self) -> None:
            self._inotify = _RewatchingWatchGroup(
                self._inotify_fd,
                os.fsencode(self.watch.path),
                is_recursive=self.watch.is_recursive,
                event_mask=self.get_event_mask_from_filter(),
                follow_symlink=self.watch.follow_symlink,
            )

    class _RewatchingInotifyObserver(InotifyObserver):
        def __init__(self) -> None:
            super().__init__()
            self._emitter_class = _RewatchingEmitter


class WatchCapture:
    """A ``Capture`` over ``root`` built on watchdog notifications and block hashes."""

    name = "watch"

    def __init__(
        self,
        root: Path,
        sink: OpSink,
        *,
        block_size: int = 65536,
        settle_s: float = 0.2,
        max_write: int = DEFAULT_MAX_WRITE,
        delivery_lag_s: float = DELIVERY_LAG_S,
        join_timeout_s: float = 10.0,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.sink = sink
        self.settle_s = settle_s
        self.delivery_lag_s = delivery_lag_s
        self.join_timeout_s = join_timeout_s
        self.index = BlockIndex(block_size, max_write)
        self._root_str = str(self.root)
        self._prefix = self._root_str.rstrip(os.sep) + os.sep
        self._tree = _Tree()
        self._pending: dict[str, float] = {}  # rel -> monotonic deadline of its diff
        self._unreadable: set[str] = set()
        self._events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Watch, index the existing tree, then handle events; returns once capture is live.

        The watch starts before the scan so that nothing changed during the scan is missed
        (its events are handled after the scan, and find the index up to date when the scan
        already saw the change).
        """
        if self._worker is not None:
            raise RuntimeError("WatchCapture already started")
        if not self.root.is_dir():
            raise NotADirectoryError(f"protected root {self._root_str!r} is not a directory")
        self.index = BlockIndex(self.index.block_size, self.index.max_write)
        self._tree = _Tree()
        self._pending.clear()
        self._unreadable.clear()
        observer = _make_observer()
        observer.schedule(_Handler(self._events), self._root_str, recursive=True)
        observer.start()  # the emitters' watches are in place when this returns
        self._observer = observer
        try:
            self._scan_initial()
        except BaseException:
            observer.stop()
            observer.join(self.join_timeout_s)
            raise
        self._worker = threading.Thread(target=self._run, name="tandem-watch", daemon=True)
        self._worker.start()
        logger.info(
            "watch capture on %s: %d directories, %d files indexed",
            self._root_str,
            sum(1 for n in self._tree.nodes.values() if n.kind == _DIR),
            len(self.index),
        )

    def stop(self) -> None:
        """Hand over what was observed, stop watching, handle the rest, diff what is pending."""
        observer, worker = self._observer, self._worker
        if observer is None or worker is None:
            return
        try:
            self.flush(self.join_timeout_s)
        except TimeoutError:
            logger.warning("watch capture: flush before stop timed out")
        observer.stop()
        observer.join(self.join_timeout_s)
        if observer.is_alive():
            logger.warning("watch capture: watchdog observer did not stop in time")
        # Events the emitters queued but the dispatcher did not deliver before it stopped.
        while True:
            try:
                entry = observer.event_queue.get_nowait()
            except queue.Empty:
                break
            if entry is not EventDispatcher.stop_event:
                event, _watch = entry
                if event.event_type not in _IGNORED_EVENTS:
                    self._events.put(event)
        self._events.put(_STOP)
        worker.join(self.join_timeout_s)
        if worker.is_alive():
            logger.error("watch capture: worker did not finish in time; operations may be missing")
        self._observer = None
        self._worker = None

    def flush(self, timeout: float) -> None:
        """Wait until every event delivered so far is handled and every pending diff is sent.

        Notifications are asynchronous: this first waits ``delivery_lag_s`` for watchdog to
        hand over what the OS reported (and until its dispatch queue is empty), then pushes a
        fence through the worker queue. A change made just before the call is covered once
        watchdog delivered it; callers that need certainty poll (flush until nothing new).
        Raises ``TimeoutError`` when the worker does not reach the fence within ``timeout``.
        """
        worker, observer = self._worker, self._observer
        if worker is None or not worker.is_alive():
            return
        deadline = time.monotonic() + timeout
        time.sleep(max(0.0, min(self.delivery_lag_s, timeout)))
        if observer is not None:
            while observer.event_queue.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.01)
        fence = _Fence()
        self._events.put(fence)
        if not fence.done.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"watch capture did not handle its events within {timeout} s")

    # ---------------------------------------------------------------- worker

    def _run(self) -> None:
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, min(self._pending.values()) - time.monotonic())
            try:
                item = self._events.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                self._run_pending(force=True)
                if self._unreadable:
                    logger.error(
                        "watch capture stopped with unreadable files not sent: %s",
                        sorted(self._unreadable),
                    )
                return
            if isinstance(item, _Fence):
                try:
                    self._run_pending(force=True)
                finally:
                    item.done.set()
                continue
            if isinstance(item, FileSystemEvent):
                try:
                    self._handle(item)
                except Exception:
                    logger.exception("watch capture: failed to handle %r", item)
            self._run_pending(force=False)

    def _run_pending(self, *, force: bool) -> None:
        now = time.monotonic()
        due = [rel for rel, at in self._pending.items() if force or at <= now]
        for rel in due:
            del self._pending[rel]
            try:
                self._diff(rel)
            except OSError as exc:
                # E.g. a file another process holds open exclusively (Windows sharing
                # violation): try again later; the index still holds what was sent.
                if rel not in self._unreadable:
                    logger.warning("watch capture: cannot read %r (%s); will retry", rel, exc)
                    self._unreadable.add(rel)
                self._pending[rel] = time.monotonic() + max(self.settle_s, RETRY_S)
            except Exception:
                logger.exception("watch capture: failed to diff %r", rel)
            else:
                self._unreadable.discard(rel)

    def _handle(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind == "moved":
            if event.is_synthetic:
                return  # a child of a moved directory: the directory's RENAME covered it
            self._on_moved(self._rel(event.src_path), self._rel(event.dest_path))
            return
        rel = self._rel(event.src_path)
        if rel is None:
            if kind == "deleted" and os.fsdecode(event.src_path) == self._root_str:
                logger.error("watch capture: the protected root %s was removed", self._root_str)
            return
        if kind == "created":
            self._sync_tree(rel)
        elif kind == "deleted":
            self._on_deleted(rel)
        elif kind in ("modified", "closed"):
            self._on_changed(rel, content=True)
        elif kind == "attrib":
            self._on_changed(rel, content=False)

    # ---------------------------------------------------------------- event handlers

    def _on_changed(self, rel: str, *, content: bool) -> None:
        node = self._tree.get(rel)
        if node is None:
            self._sync_tree(rel)  # missed or not yet handled creation
        elif node.kind == _FILE:
            if content:
                self._schedule(rel)
            else:
                self._check_mode(rel, node)
        elif node.kind == _DIR:
            # Every change inside a directory also reports it as modified; only its mode matters.
            self._check_mode(rel, node)
        else:
            self._sync_one(rel)

    def _on_deleted(self, rel: str) -> None:
        if self._tree.get(rel) is None:
            self._drop_pending(rel)
            return
        self._remove_known(rel)

    def _on_moved(self, src: str | None, dest: str | None) -> None:
        node = self._tree.get(src) if src is not None else None
        if src is None or node is None:
            # Moved in from outside, or a source we never sent: it is new content at dest.
            if src is not None:
                self._drop_pending(src)
            if dest is not None:
                self._sync_tree(dest, full=True)
                dest_node = self._tree.get(dest)
                if dest_node is not None and dest_node.kind == _FILE:
                    # Possibly an unknown temporary file renamed over a known one: the content
                    # at dest is new either way.
                    self._schedule(dest)
            return
        if dest is None:  # moved out of the root
            self._remove_known(src)
            return
        if dest == src:
            return
        if not self._ensure_parent(dest):
            # dest's directory is gone already (moved or deleted since): send the removal of src;
            # the later event about that directory brings dest's content wherever it now is.
            self._remove_known(src)
            return
        replaced = self._tree.get(dest)
        if replaced is not None:
            if replaced.kind == _DIR or node.kind == _DIR:
                self._remove_known(dest)
            else:
                self._forget(dest)  # the copy's rename replaces it
        self._submit(Op(OpKind.RENAME, src, target=dest))
        self._drop_pending(src)
        for old, new, moved in self._tree.move(src, dest):
            if moved.kind == _FILE:
                self.index.rename(old, new)
                if moved.dirty:
                    self._schedule(new)
            if moved.stale_mode:
                self._check_mode(new, moved)
        if node.kind == _DIR:
            self._sync_tree(dest, full=True)

    # ---------------------------------------------------------------- reconciliation

    def _sync_tree(self, rel: str, *, full: bool = False) -> None:
        """Reconcile ``rel`` and, if it is a directory, what is under it.

        By default only directories new to the model are scanned: changes inside a known one
        come with their own events. ``full`` scans every directory of the subtree; it is used
        after a directory was renamed, because what was created inside it shortly before may
        have been reported under a path it no longer had when the event was handled.
        Known files are not read again (they are diffed when their own events say so).
        """
        known = self._tree.get(rel)
        node = self._sync_one(rel)
        if node is None or node.kind != _DIR or (node is known and not full):
            return
        stack = [rel]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(self._abs(directory)) as entries:
                    names = [entry.name for entry in entries]
            except OSError:
                continue  # gone meanwhile: its deletion event follows
            for name in sorted(names):
                child = self._child(directory, name)
                if child is None:
                    continue
                child_known = self._tree.get(child)
                child_node = self._sync_one(child)
                if (
                    child_node is not None
                    and child_node.kind == _DIR
                    and (full or child_node is not child_known)
                ):
                    stack.append(child)

    def _sync_one(self, rel: str) -> _Node | None:
        """Bring the model (and the copy) of ``rel`` to what is on disk now; its node or None."""
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except OSError:
            return None  # gone: the deletion (or move) event is still queued
        if not self._ensure_parent(rel):
            return None
        node = self._tree.get(rel)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            if node is not None and node.kind == _DIR:
                self._check_mode(rel, node, mode)
                return node
            if node is not None:
                self._remove_known(rel)
            self._submit(Op(OpKind.MKDIR, rel, mode=mode))
            node = _Node(_DIR, mode)
            self._tree.add(rel, node)
            return node
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                return None
            if node is not None and node.kind == _LINK and node.target == target:
                return node
            if node is not None and node.kind == _DIR:
                self._remove_known(rel)
            elif node is not None:
                self._forget(rel)  # the copy's SYMLINK replaces a file or an older link
            self._submit(Op(OpKind.SYMLINK, rel, target=target))
            node = _Node(_LINK, target=target)
            self._tree.add(rel, node)
            return node
        if stat.S_ISREG(st.st_mode):
            if node is not None and node.kind == _FILE:
                # Known already (a duplicate creation event): content changes come as
                # modifications of their own.
                self._check_mode(rel, node, mode)
                if node.dirty:
                    self._schedule(rel)
                return node
            if node is not None:
                self._remove_known(rel)
            self._submit(Op(OpKind.CREATE, rel, mode=mode))
            node = _Node(_FILE, mode)
            self._tree.add(rel, node)
            self.index.set_empty(rel)
            self._schedule(rel)
            return node
        logger.debug("watch capture: ignoring %r (not a file, directory or symlink)", rel)
        return None

    def _ensure_parent(self, rel: str) -> bool:
        """Make sure the model knows every ancestor of ``rel`` as a directory."""
        missing: list[str] = []
        parent = _parent(rel)
        while parent:
            node = self._tree.get(parent)
            if node is not None and node.kind == _DIR:
                break
            missing.append(parent)
            parent = _parent(parent)
        for ancestor in reversed(missing):
            node = self._sync_one(ancestor)
            if node is None or node.kind != _DIR:
                return False
        return True

    def _schedule(self, rel: str) -> None:
        """Diff ``rel`` ``settle_s`` after its first pending change (not postponed further)."""
        node = self._tree.get(rel)
        if node is not None and node.kind == _FILE:
            node.dirty = True
            self._pending.setdefault(rel, time.monotonic() + self.settle_s)

    def _diff(self, rel: str) -> None:
        node = self._tree.get(rel)
        if node is None or node.kind != _FILE:
            return
        path = self._abs(rel)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISREG(st.st_mode):
            return  # replaced: the deletion event is still queued
        self._check_mode(rel, node, stat.S_IMODE(st.st_mode))
        before = self.index.get(rel)
        # forget_missing=False: a file gone meanwhile stays known until its event is handled.
        for op in self.index.iter_diff(rel, path, forget_missing=False):
            self._submit(op)
        if self.index.get(rel) is not before:  # a completed diff stores a new entry
            node.dirty = False

    def _check_mode(self, rel: str, node: _Node, mode: int | None = None) -> None:
        if node.kind == _LINK:
            return
        if mode is None:
            try:
                mode = stat.S_IMODE(os.lstat(self._abs(rel)).st_mode)
            except OSError:
                node.stale_mode = True
                return
        node.stale_mode = False
        if mode != node.mode:
            self._submit(Op(OpKind.CHMOD, rel, mode=mode))
            node.mode = mode

    def _remove_known(self, rel: str) -> None:
        """Send the removal of ``rel`` and of everything known under it, deepest first."""
        for path in reversed(self._tree.subtree(rel)):
            node = self._tree.get(path)
            if node is None:
                continue
            kind = OpKind.RMDIR if node.kind == _DIR else OpKind.UNLINK
            self._submit(Op(kind, path))
            self._forget(path)

    def _forget(self, rel: str) -> None:
        """Forget ``rel`` alone, without sending anything."""
        self._tree.discard(rel)
        self.index.forget(rel)
        self._pending.pop(rel, None)

    def _drop_pending(self, rel: str) -> None:
        for path in [p for p in self._pending if _under(p, rel)]:
            del self._pending[path]

    def _scan_initial(self) -> None:
        """Index what is already there (assumed to be on the copy already)."""
        stack = [""]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(self._abs(directory)) as it:
                    entries = list(it)
            except OSError as exc:
                logger.warning("watch capture: cannot scan %r: %s", directory or ".", exc)
                continue
            for entry in entries:
                rel = self._child(directory, entry.name)
                if rel is None:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        self._tree.add(rel, _Node(_DIR, stat.S_IMODE(st.st_mode)))
                        stack.append(rel)
                    elif stat.S_ISLNK(st.st_mode):
                        self._tree.add(rel, _Node(_LINK, target=os.readlink(entry.path)))
                    elif stat.S_ISREG(st.st_mode) and self.index.track(rel, entry.path):
                        self._tree.add(rel, _Node(_FILE, stat.S_IMODE(st.st_mode)))
                except OSError as exc:
                    logger.warning("watch capture: cannot index %r: %s", rel, exc)

    # ---------------------------------------------------------------- paths and output

    def _submit(self, op: Op) -> None:
        self.sink.submit(op)

    def _abs(self, rel: str) -> str:
        if not rel:
            return self._root_str
        return os.path.join(self._root_str, *rel.split("/"))

    def _child(self, directory: str, name: str) -> str | None:
        if os.sep == "/" and "\\" in name:
            logger.warning("watch capture: ignoring %r (a backslash in a name)", name)
            return None
        try:
            return safe_path(f"{directory}/{name}" if directory else name)
        except PathRefusedError as exc:
            logger.warning("watch capture: ignoring a path: %s", exc)
            return None

    def _rel(self, raw: bytes | str) -> str | None:
        """``raw`` (from watchdog) relative to the root; None for the root itself or outside."""
        path = os.fsdecode(raw)
        if not path or path == self._root_str:
            return None
        if not path.startswith(self._prefix):
            logger.warning("watch capture: ignoring %r, outside %s", path, self._root_str)
            return None
        rel = path[len(self._prefix) :]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        elif "\\" in rel:
            logger.warning("watch capture: ignoring %r (a backslash in a name)", path)
            return None
        try:
            return safe_path(rel)
        except PathRefusedError as exc:
            logger.warning("watch capture: ignoring a path: %s", exc)
            return None
