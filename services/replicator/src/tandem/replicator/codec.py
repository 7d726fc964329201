"""Codec stage of journal batches: ``none`` and ``zstd``. Pluggable: the WAN codec (zstd with
content-defined deduplication) registers here later under its own name."""

from __future__ import annotations

import threading
from typing import Protocol

import zstandard


class Codec(Protocol):
    name: str

    def encode(self, body: bytes) -> bytes: ...

    def decode(self, data: bytes) -> bytes: ...


class NoCodec:
    name = "none"

    def encode(self, body: bytes) -> bytes:
        return body

    def decode(self, data: bytes) -> bytes:
        return data


class ZstdCodec:
    """zstd, one compression context per thread: a ``ZstdCompressor`` (or decompressor)
    used by two threads at once corrupts memory, and batches are encoded by the publisher's
    thread and, when spilled, by a capture thread."""

    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        self.level = level
        self._local = threading.local()

    def encode(self, body: bytes) -> bytes:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c.compress(body)

    def decode(self, data: bytes) -> bytes:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        try:
            return d.decompress(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None


_CODECS: dict[str, type] = {"none": NoCodec, "zstd": ZstdCodec}


def codec_named(name: str) -> Codec:
    if name not in _CODECS:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}")
    codec: Codec = _CODECS[name]()
    return codec
