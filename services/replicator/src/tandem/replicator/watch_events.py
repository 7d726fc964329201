"""The ``watch`` backend's event handling: from a watchdog event to the operations it implies.

``EventHandling`` is the part of ``WatchCapture`` (``tandem.replicator.watch``, which describes
the rules) that runs in its worker thread: it handles one event against the current state of
the disk, keeps the model of the copy (``watch_model``) and the block index up to date, and
submits the resulting operations to the sink. It holds no state of its own: the attributes
declared below are the capture's.
"""

from __future__ import annotations

import logging
import os
import stat
import time

from watchdog.events import FileSystemEvent

from tandem.replicator.blockindex import BlockIndex
from tandem.replicator.capture import OpSink
from tandem.replicator.ops import Op, OpKind, PathRefusedError, safe_path
from tandem.replicator.watch_model import DIR, FILE, LINK, Node, Tree, parent_of, under

# The capture backend's logger (this module is part of it).
logger = logging.getLogger("tandem.replicator.watch")


class EventHandling:
    """Mixin of ``WatchCapture``: event handlers, reconciliation with the disk, path helpers."""

    sink: OpSink
    settle_s: float
    index: BlockIndex
    _root_str: str
    _prefix: str
    _tree: Tree
    _pending: dict[str, float]  # rel -> monotonic deadline of its diff

    # ---------------------------------------------------------------- dispatch

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
            self._appeared(rel)
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
        elif node.kind == FILE:
            if content:
                self._schedule(rel)
            else:
                self._check_mode(rel, node)
        elif node.kind == DIR:
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
            # Moved in from outside, or a source the copy does not have (never sent: created
            # and renamed before its creation was handled): no RENAME, dest is new content.
            if src is not None:
                self._drop_pending(src)
            if dest is not None:
                self._appeared(dest)
                self._sync_tree(dest, full=True)
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
        if replaced is not None and (replaced.kind == DIR or node.kind == DIR):
            self._remove_known(dest)
        self._submit(Op(OpKind.RENAME, src, target=dest))
        if self._tree.get(dest) is not None:
            self._forget(dest)  # a file: the copy's rename replaced it (os.replace)
        self._drop_pending(src)
        for old, new, moved in self._tree.move(src, dest):
            if moved.kind == FILE:
                self.index.rename(old, new)
                if moved.dirty:
                    self._schedule(new)
            if moved.stale_mode:
                self._check_mode(new, moved)
        if node.kind == DIR:
            self._sync_tree(dest, full=True)

    def _appeared(self, rel: str) -> None:
        """``rel`` was just created, or something was moved onto it from an unknown source.

        A node the initial scan left (never sent) may describe what this very event created:
        the scan ran after the watch started and before the event was handled. The copy then
        lacks it, or holds what was there before the event: it is removed there (UNLINK and
        RMDIR are no-ops on a missing path) and, if still on disk, sent again as new. Keeping
        it would later send a RENAME (or CHMOD, ...) of a path the copy does not have.
        A sent file's content may have been replaced (moved in over it): it is diffed.
        """
        node = self._tree.get(rel)
        if node is None:
            return
        if not node.sent:
            self._remove_known(rel)
        elif node.kind == FILE:
            self._schedule(rel)

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
        if node is None or node.kind != DIR or (node is known and not full):
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
                    and child_node.kind == DIR
                    and (full or child_node is not child_known)
                ):
                    stack.append(child)

    def _sync_one(self, rel: str) -> Node | None:
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
            if node is not None and node.kind == DIR:
                self._check_mode(rel, node, mode)
                return node
            if node is not None:
                self._remove_known(rel)
            self._submit(Op(OpKind.MKDIR, rel, mode=mode))
            node = Node(DIR, mode)
            self._tree.add(rel, node)
            return node
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError:
                return None
            if node is not None and node.kind == LINK and node.target == target:
                return node
            if node is not None and node.kind == DIR:
                self._remove_known(rel)
            self._submit(Op(OpKind.SYMLINK, rel, target=target))
            if self._tree.get(rel) is not None:
                self._forget(rel)  # the copy's SYMLINK replaced a file or an older link
            node = Node(LINK, target=target)
            self._tree.add(rel, node)
            return node
        if stat.S_ISREG(st.st_mode):
            if node is not None and node.kind == FILE:
                # Known already (a duplicate creation event): content changes come as
                # modifications of their own.
                self._check_mode(rel, node, mode)
                if node.dirty:
                    self._schedule(rel)
                return node
            if node is not None:
                self._remove_known(rel)
            self._submit(Op(OpKind.CREATE, rel, mode=mode))
            node = Node(FILE, mode)
            self._tree.add(rel, node)
            self.index.set_empty(rel)
            self._schedule(rel)
            return node
        logger.debug("watch capture: ignoring %r (not a file, directory or symlink)", rel)
        return None

    def _ensure_parent(self, rel: str) -> bool:
        """Make sure the model knows every ancestor of ``rel`` as a directory."""
        missing: list[str] = []
        parent = parent_of(rel)
        while parent:
            node = self._tree.get(parent)
            if node is not None and node.kind == DIR:
                break
            missing.append(parent)
            parent = parent_of(parent)
        for ancestor in reversed(missing):
            node = self._sync_one(ancestor)
            if node is None or node.kind != DIR:
                return False
        return True

    def _schedule(self, rel: str) -> None:
        """Diff ``rel`` ``settle_s`` after its first pending change (not postponed further)."""
        node = self._tree.get(rel)
        if node is not None and node.kind == FILE:
            node.dirty = True
            self._pending.setdefault(rel, time.monotonic() + self.settle_s)

    def _diff(self, rel: str) -> None:
        node = self._tree.get(rel)
        if node is None or node.kind != FILE:
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

    def _check_mode(self, rel: str, node: Node, mode: int | None = None) -> None:
        if node.kind == LINK:
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
            kind = OpKind.RMDIR if node.kind == DIR else OpKind.UNLINK
            self._submit(Op(kind, path))
            self._forget(path)

    def _forget(self, rel: str) -> None:
        """Forget ``rel`` alone, without sending anything."""
        self._tree.discard(rel)
        self.index.forget(rel)
        self._pending.pop(rel, None)

    def _drop_pending(self, rel: str) -> None:
        for path in [p for p in self._pending if under(p, rel)]:
            del self._pending[path]

    def _scan_initial(self) -> None:
        """Index what is already there (assumed to be on the copy already, never sent)."""
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
                    mode = stat.S_IMODE(st.st_mode)
                    if stat.S_ISDIR(st.st_mode):
                        self._tree.add(rel, Node(DIR, mode, sent=False))
                        stack.append(rel)
                    elif stat.S_ISLNK(st.st_mode):
                        target = os.readlink(entry.path)
                        self._tree.add(rel, Node(LINK, target=target, sent=False))
                    elif stat.S_ISREG(st.st_mode) and self.index.track(rel, entry.path):
                        self._tree.add(rel, Node(FILE, mode, sent=False))
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
