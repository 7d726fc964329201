"""Operations, path safety and the batch format of the replicator."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tandem.replicator.batch import Batch, BatchError, decode_body, encode_body, pack, unpack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind, PathRefusedError, checked, safe_path


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("C:/Windows", "absolute"),
        ("..", "'..'"),
        ("a/../../b", "'..'"),
        ("a\\..\\b", "'..'"),
        ("a\x00b", "NUL"),
        ("", "empty"),
        (".", "root itself"),
    ],
)
def test_unsafe_paths_are_refused_with_the_reason(path: str, why: str) -> None:
    with pytest.raises(PathRefusedError, match=why):
        safe_path(path)


def test_paths_are_normalised() -> None:
    assert safe_path("db//data/./x.mdf") == "db/data/x.mdf"
    assert safe_path("db\\log.ldf") == "db/log.ldf"


def test_a_rename_target_is_checked_too() -> None:
    with pytest.raises(PathRefusedError):
        checked(Op(OpKind.RENAME, "a", target="../../etc/cron.d/x"))


names = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, exclude_characters="/\\"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and ":" not in s[1:2])
paths = st.lists(names, min_size=1, max_size=4).map("/".join)
ops = st.one_of(
    st.builds(
        lambda p, o, d: Op(OpKind.WRITE, p, offset=o, data=d),
        paths,
        st.integers(0, 2**40),
        st.binary(max_size=300),
    ),
    st.builds(lambda p, s: Op(OpKind.TRUNCATE, p, size=s), paths, st.integers(0, 2**40)),
    st.builds(lambda p, m: Op(OpKind.CREATE, p, mode=m), paths, st.integers(0, 0o7777)),
    st.builds(lambda p, m: Op(OpKind.MKDIR, p, mode=m), paths, st.integers(0, 0o7777)),
    st.builds(lambda p, t: Op(OpKind.RENAME, p, target=t), paths, paths),
    st.builds(
        lambda p, t: Op(OpKind.SYMLINK, p, target=t),
        paths,
        st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    ),
    st.builds(
        lambda p, u, g: Op(OpKind.CHOWN, p, uid=u, gid=g),
        paths,
        st.integers(-1, 2**31 - 1),
        st.integers(-1, 2**31 - 1),
    ),
    st.builds(
        lambda p, a, m: Op(OpKind.SET_TIMES, p, atime_ns=a, mtime_ns=m),
        paths,
        st.integers(0, 2**62),
        st.integers(0, 2**62),
    ),
    st.builds(
        lambda p, k: Op(k, p), paths, st.sampled_from([OpKind.UNLINK, OpKind.RMDIR, OpKind.FSYNC])
    ),
)


@given(
    st.lists(ops, max_size=20),
    st.integers(0, 2**32),
    st.integers(1, 2**32),
    st.sampled_from(["none", "zstd"]),
)
def test_every_batch_survives_the_wire(
    batch_ops: list[Op], epoch: int, seq: int, codec: str
) -> None:
    batch = Batch(epoch=epoch, seq=seq, first_op=seq * 10, ops=tuple(checked(o) for o in batch_ops))
    data, headers = pack(batch, codec_named(codec))
    assert unpack(data, headers) == batch


def _packed() -> tuple[bytes, dict[str, str]]:
    return pack(
        Batch(3, 9, 0, (Op(OpKind.WRITE, "f", offset=0, data=b"hello"),)), codec_named("zstd")
    )


def test_a_corrupted_batch_is_refused_by_its_checksum() -> None:
    data, headers = _packed()
    with pytest.raises(BatchError, match="checksum"):
        unpack(data[:-1] + bytes([data[-1] ^ 1]), headers)


def test_an_unknown_codec_is_refused() -> None:
    data, headers = _packed()
    with pytest.raises(BatchError, match="unknown codec 'lz9'"):
        unpack(data, {**headers, "Tandem-Codec": "lz9"})


def test_headers_must_match_the_body() -> None:
    data, headers = _packed()
    with pytest.raises(BatchError, match="disagree"):
        unpack(data, {**headers, "Tandem-Epoch": "4"})


def test_a_traversal_inside_a_batch_body_is_refused_at_decode() -> None:
    body = encode_body(Batch(1, 1, 0, (Op(OpKind.WRITE, "../../outside", data=b"x"),)))
    with pytest.raises(BatchError, match=re.escape("refused: path '../../outside' climbs out")):
        decode_body(body)


@pytest.mark.parametrize("cut", [3, 20, 40])
def test_a_truncated_body_is_refused(cut: int) -> None:
    body = encode_body(Batch(1, 1, 0, (Op(OpKind.WRITE, "file", data=b"x" * 30),)))
    with pytest.raises(BatchError):
        decode_body(body[:cut])


def test_an_unknown_format_is_refused() -> None:
    body = bytearray(encode_body(Batch(1, 1, 0, ())))
    body[3] = 7
    with pytest.raises(BatchError, match="format 7 is not supported"):
        decode_body(bytes(body))


def test_the_zstd_codec_can_be_used_by_many_threads_at_once() -> None:
    """The publisher's thread and capture threads (spilling) encode with one codec."""
    import os
    import threading

    codec = codec_named("zstd")
    bodies = [os.urandom(1 << 16) + bytes(1 << 16) for _ in range(4)]
    failures: list[str] = []

    def churn(body: bytes) -> None:
        for _ in range(200):
            if codec.decode(codec.encode(body)) != body:
                failures.append("round trip differs")

    threads = [threading.Thread(target=churn, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and not any(t.is_alive() for t in threads)


def test_decoded_write_data_is_a_view_of_the_body_and_encodes_again() -> None:
    """The target does not copy write data out of a received batch; such ops (and views given
    to the send queue) encode like bytes."""
    batch = Batch(3, 9, 0, (Op(OpKind.WRITE, "f", offset=5, data=b"abc" * 1000),))
    body = encode_body(batch)
    decoded = decode_body(body)
    data = decoded.ops[0].data
    assert isinstance(data, memoryview) and data.obj is body
    assert decoded == batch and encode_body(decoded) == body
