"""Codec stage of journal batches: ``none`` and ``zstd``. Pluggable: the WAN codec (zstd with
content-defined deduplication) registers here later under its own name."""

from __future__ import annotations

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
    name = "zstd"

    def __init__(self, level: int = 3) -> None:
        self._c = zstandard.ZstdCompressor(level=level)
        self._d = zstandard.ZstdDecompressor()

    def encode(self, body: bytes) -> bytes:
        return self._c.compress(body)

    def decode(self, data: bytes) -> bytes:
        try:
            return self._d.decompress(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"zstd: {exc}") from None


_CODECS: dict[str, type] = {"none": NoCodec, "zstd": ZstdCodec}


def codec_named(name: str) -> Codec:
    if name not in _CODECS:
        raise KeyError(f"unknown codec {name!r}; known: {', '.join(_CODECS)}")
    codec: Codec = _CODECS[name]()
    return codec
