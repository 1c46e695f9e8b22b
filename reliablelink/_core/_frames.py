"""Wire format: the connection preface and the length-prefixed frames.

Every connection starts with :data:`PREFACE` in both directions. After it, each frame is::

    length: u32 big-endian   (bytes that follow: the type byte and the body)
    type:   u8
    body:   length - 1 bytes

The length is checked against the decoder's limit as soon as the five header bytes are
there, before the body is read or any buffer is sized for it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .._errors import ProtocolError

__all__ = [
    "DATA_HEADER_SIZE",
    "HANDSHAKE_FRAME_LIMIT",
    "MAGIC",
    "PREFACE",
    "VERSION",
    "ErrorCode",
    "FrameType",
    "check_preface",
    "encode_frame",
]

MAGIC = b"RLNK"
VERSION = 1
#: Sent first by both ends: magic, protocol version, and CRLF so that a text protocol
#: (an HTTP server, a telnet user) pointed at the port fails fast and visibly.
PREFACE = MAGIC + struct.pack(">H", VERSION) + b"\r\n"
PREFACE_SIZE = len(PREFACE)

#: Handshake frames are small; a peer that has not authenticated gets no bigger buffer.
HANDSHAKE_FRAME_LIMIT = 1024

HEADER = struct.Struct(">IB")
HEADER_SIZE = HEADER.size
# DATA: header, seq u64, ack u64, then the payload.
DATA_HEADER = struct.Struct(">IBQQ")
DATA_HEADER_SIZE = DATA_HEADER.size
DATA_BODY_OVERHEAD = DATA_HEADER_SIZE - 4  # bytes the length field counts besides the payload
U64 = struct.Struct(">Q")
U64_FRAME = struct.Struct(">IBQ")
U16 = struct.Struct(">H")


class FrameType(enum.IntEnum):
    """Frame type byte."""

    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    WELCOME = 4
    DATA = 5
    ACK = 6
    PING = 7
    PONG = 8
    CLOSE = 9
    ERROR = 10


class ErrorCode(enum.IntEnum):
    """Code carried by an ERROR frame; the peer maps it to an exception."""

    PROTOCOL = 1
    AUTH_FAILED = 2
    SESSION_EXPIRED = 3
    SESSION_REPLACED = 4
    SERVER_BUSY = 5
    SESSION_CLOSED = 6
    HANDSHAKE_TIMEOUT = 7
    SHUTTING_DOWN = 8


def check_preface(data: bytes | bytearray) -> None:
    """Raise :class:`ProtocolError` unless ``data`` (at least the preface's length) is our preface."""
    head = bytes(data[:PREFACE_SIZE])
    if head == PREFACE:
        return
    if head[:4] != MAGIC:
        raise ProtocolError(f"bad connection preface {head!r}: the peer does not speak reliablelink")
    (version,) = U16.unpack_from(head, 4)
    raise ProtocolError(f"peer speaks reliablelink protocol version {version}, this end speaks {VERSION}")


def encode_frame(ftype: FrameType, body: bytes = b"") -> bytes:
    """Encode one frame (used for control frames; DATA has a faster path in the session)."""
    return HEADER.pack(len(body) + 1, ftype) + body


def encode_error(code: ErrorCode, message: str) -> bytes:
    """Encode an ERROR frame; the message is cut to keep the frame small."""
    text = message.encode("utf-8", "replace")[:400]
    return encode_frame(FrameType.ERROR, U16.pack(code) + text)


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """A decoded ERROR frame."""

    code: int
    message: str


def decode_error(body: bytes | bytearray | memoryview) -> ErrorFrame:
    """Decode the body of an ERROR frame."""
    if len(body) < 2:
        raise ProtocolError("truncated ERROR frame")
    (code,) = U16.unpack_from(body, 0)
    return ErrorFrame(code, bytes(body[2:]).decode("utf-8", "replace"))


class FrameReader:
    """Splits a byte stream into ``(type, body)`` frames, independent of how it is chunked.

    Used for the handshake; the attached session parses DATA frames inline for speed but
    with the same rules. ``feed(b"")`` is not special: end of stream is the driver's business.
    """

    def __init__(self, limit: int, *, expect_preface: bool = True) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._need_preface = expect_preface

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        """Add bytes; return every complete frame now available, in order."""
        self.add(data)
        frames = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames

    def add(self, data: bytes | bytearray) -> None:
        """Add bytes without parsing them yet."""
        self._buf += data

    def next_frame(self) -> tuple[int, bytes] | None:
        """Parse and return the next complete frame, or ``None`` if more bytes are needed.

        Frames are parsed one at a time so that a handshake can stop right after its last
        frame and hand the bytes behind it, unparsed, to the session (they may be DATA frames
        far larger than a handshake frame may be).
        """
        buf = self._buf
        if self._need_preface:
            if len(buf) < PREFACE_SIZE:
                # Reject a wrong magic as early as possible, without waiting for more bytes.
                if buf and not MAGIC.startswith(bytes(buf[: len(MAGIC)])):
                    raise ProtocolError(f"bad connection preface {bytes(buf)!r}: the peer does not speak reliablelink")
                return None
            check_preface(buf)
            del buf[:PREFACE_SIZE]
            self._need_preface = False
        if len(buf) < HEADER_SIZE:
            return None
        length, ftype = HEADER.unpack_from(buf)
        check_length(length, self._limit)
        if len(buf) - 4 < length:
            return None
        body = bytes(buf[HEADER_SIZE : 4 + length])
        del buf[: 4 + length]
        return ftype, body

    def take_rest(self) -> bytes:
        """Return and forget the bytes after the last complete frame (handed to the session)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


def check_length(length: int, limit: int) -> None:
    """Validate a frame's length field before anything is read or allocated for it."""
    if length == 0:
        raise ProtocolError("frame with length 0 (no type byte)")
    if length > limit:
        raise ProtocolError(f"frame length {length} exceeds the limit {limit}")
