"""The ``watch`` backend's model of the copy: what it has sent, path by path.

Every directory with its mode, every symlink with its target, every file with its mode (its
size and block digests are in the backend's ``BlockIndex``). Paths are relative to the
protected root, ``/``-separated.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

DIR, FILE, LINK = "dir", "file", "link"


@dataclass(slots=True)
class Node:
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
    #: Sent to the copy: added once the operation that creates it there was submitted. False
    #: for what the initial scan found, assumed to be on the copy already (the watch starts
    #: before the scan, so the scan may also have seen paths created since then, whose
    #: creation events are still queued: see ``EventHandling._appeared``).
    sent: bool = True


def parent_of(rel: str) -> str:
    return posixpath.dirname(rel)


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class Tree:
    """The model of the copy: known paths and, per directory, its known children."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self.children: dict[str, set[str]] = {}

    def get(self, rel: str) -> Node | None:
        return self.nodes.get(rel)

    def add(self, rel: str, node: Node) -> None:
        self.nodes[rel] = node
        self.children.setdefault(parent_of(rel), set()).add(rel)

    def discard(self, rel: str) -> None:
        """Forget ``rel`` alone (its children, if any, must be forgotten already)."""
        self.nodes.pop(rel, None)
        self.children.pop(rel, None)
        siblings = self.children.get(parent_of(rel))
        if siblings is not None:
            siblings.discard(rel)
            if not siblings:
                del self.children[parent_of(rel)]

    def subtree(self, rel: str) -> list[str]:
        """``rel`` and its known descendants, every directory before its content."""
        out: list[str] = []
        stack = [rel]
        while stack:
            path = stack.pop()
            out.append(path)
            stack.extend(self.children.get(path, ()))
        return out

    def move(self, old: str, new: str) -> list[tuple[str, str, Node]]:
        """Re-key the subtree at ``old`` to ``new``; returns (old, new, node) per path."""
        moved = [(path, new + path[len(old) :], self.nodes[path]) for path in self.subtree(old)]
        for path, _, _ in reversed(moved):
            self.discard(path)
        for _, path, node in moved:
            self.add(path, node)
        return moved
