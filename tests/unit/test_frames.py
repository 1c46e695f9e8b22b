"""Frame codec: preface, length limits before allocation, chunking independence."""

from __future__ import annotations

import pytest

from reliablelink import ProtocolError
from reliablelink._core._frames import (
    HANDSHAKE_FRAME_LIMIT,
    HEADER,
    PREFACE,
    ErrorCode,
    FrameReader,
    FrameType,
    check_preface,
    decode_error,
    encode_error,
    encode_frame,
)


def test_preface_accepted() -> None:
    check_preface(PREFACE)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GET / HTTP/1.1\r\n", "does not speak reliablelink"),
        (b"RLNK\x00\x09\r\n", "version 9"),
    ],
)
def test_bad_preface_is_a_clear_protocol_error(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        FrameReader(1024).feed(data)


def test_wrong_magic_fails_before_the_whole_preface_arrives() -> None:
    with pytest.raises(ProtocolError):
        FrameReader(1024).feed(b"GE")


def test_frames_are_independent_of_chunking() -> None:
    stream = PREFACE + b"".join(encode_frame(FrameType.PING, bytes([i]) * 8) for i in range(20))
    whole = FrameReader(1024).feed(stream)
    reader = FrameReader(1024)
    bytewise = [f for i in range(len(stream)) for f in reader.feed(stream[i : i + 1])]
    assert whole == bytewise, "byte-by-byte feeding must give the same frames as one feed"
    assert len(whole) == 20


def test_oversized_length_rejected_from_the_header_alone() -> None:
    reader = FrameReader(HANDSHAKE_FRAME_LIMIT)
    # Only the 5 header bytes: the 4 GiB body is never waited for nor allocated.
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        reader.feed(PREFACE + HEADER.pack(2**32 - 1, FrameType.HELLO))


def test_zero_length_frame_rejected() -> None:
    with pytest.raises(ProtocolError, match="length 0"):
        FrameReader(1024).feed(PREFACE + b"\x00\x00\x00\x00\x01")


def test_truncated_frame_waits_for_more() -> None:
    reader = FrameReader(1024)
    frame = encode_frame(FrameType.PING, b"12345678")
    assert reader.feed(PREFACE + frame[:-1]) == []
    assert reader.feed(frame[-1:]) == [(FrameType.PING, b"12345678")]


def test_error_frame_roundtrip_and_truncation() -> None:
    frame = encode_error(ErrorCode.PROTOCOL, "x" * 1000)
    ((ftype, body),) = FrameReader(2048, expect_preface=False).feed(frame)
    assert ftype == FrameType.ERROR
    err = decode_error(body)
    assert err.code == 1
    assert len(err.message) == 400, "ERROR messages are cut to keep frames small"
    with pytest.raises(ProtocolError):
        decode_error(b"\x00")
