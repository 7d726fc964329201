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
- moved              -> RENAME, the model (and the index) re-keyed for the whole subtree
  (only when the model has the source: a source never sent, e.g. created and renamed before
  its creation was handled, makes the destination new content: CREATE or MKDIR and scan);
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

On Linux, watchdog's inotify observer is extended to watch directories that a quick rename of
their parent left unwatched: see ``tandem.replicator.watch_inotify``. The model of the copy is
in ``watch_model``, the handling of each event in ``watch_events``.

The model only holds paths the copy has: what was sent, and what the initial scan found. An
operation on an existing path (RENAME, CHMOD, WRITE, ...) is only sent for a path of the model.
The scan runs after the watch started, so it may see a path created since then: when that
path's creation (or a move onto it) is handled, the scan's entry is dropped and the path is
sent as new (see ``EventHandling._appeared``).

Limits (why the ``intercept`` backend exists): writes are observed after the fact, so the copy
only receives a file's state at diff time (no crash-consistent ordering between files); files
already present at ``start()`` are assumed to be on the copy already (initial sync is verify &
synchronize's job, which must also run after a notification overflow or a crash).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, EventDispatcher

from tandem.replicator.blockindex import DEFAULT_MAX_WRITE, BlockIndex
from tandem.replicator.capture import OpSink
from tandem.replicator.watch_events import EventHandling
from tandem.replicator.watch_inotify import make_observer
from tandem.replicator.watch_model import DIR, Tree

logger = logging.getLogger(__name__)

#: How long watchdog may hold an event before handing it over: on Linux it keeps an
#: IN_MOVED_FROM up to 0.5 s to pair it with its IN_MOVED_TO, and everything behind it waits.
DELIVERY_LAG_S = 0.6

#: Delay before reading again a file that could not be read.
RETRY_S = 1.0

#: Event types that say nothing the backend needs.
_IGNORED_EVENTS = {"opened", "closed_no_write"}


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


class WatchCapture(EventHandling):
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
        self._tree = Tree()
        self._pending: dict[str, float] = {}  # rel -> monotonic deadline of its diff
        self._unreadable: set[str] = set()
        self._events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def read_root(self) -> Path:
        return self.root

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
        self._tree = Tree()
        self._pending.clear()
        self._unreadable.clear()
        observer = make_observer()
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
            sum(1 for n in self._tree.nodes.values() if n.kind == DIR),
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
