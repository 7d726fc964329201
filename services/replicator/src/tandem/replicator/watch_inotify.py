"""The ``watch`` backend's observer: watchdog's, on Linux with two holes of inotify closed.

On Linux, watchdog's inotify observer is extended (``_RewatchingWatchGroup``) to watch
directories that a quick rename of their parent left unwatched; see there. The extension
relies on watchdog internals (7.1): ``make_observer`` checks them and falls back to the stock
observer when their layout differs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import sys

from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.utils import UnsupportedLibcError

_HAVE_INOTIFY = False
if sys.platform.startswith("linux"):
    try:  # the names below are watchdog 7.x internals, hence the fallback
        from watchdog.observers.inotify import InotifyEmitter, InotifyObserver, InotifyWatchGroup
        from watchdog.observers.inotify_c import InotifyEvent, WatchDescriptor

        _HAVE_INOTIFY = True
    except (ImportError, UnsupportedLibcError):  # pragma: no cover
        pass

# The capture backend's logger (this module is part of it).
logger = logging.getLogger("tandem.replicator.watch")

_WATCH_GROUP_FIELDS = {
    "_inotify_fd", "path", "event_mask", "is_recursive", "follow_symlink", "_lock", "_id",
    "_active_callbacks_by_watch", "_active_callbacks_by_path",
}  # fmt: skip
_WATCH_GROUP_METHODS = (
    "__post_init__", "on_event", "_build_event_source_path", "_add_callback", "_move_watches",
    "_remove_watch_internally",
)  # fmt: skip


def make_observer() -> BaseObserver:
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
