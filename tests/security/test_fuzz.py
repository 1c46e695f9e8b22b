"""Arbitrary bytes against the decoder, the handshake and an attached session.

The invariant (after h11's fuzz target): every input is parsed, or rejected with the
documented error (``ProtocolError``; ``AuthenticationError`` where a MAC is checked);
never another exception, a hang, or a buffer larger than the limit.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliablelink import AuthenticationError, ProtocolError
from reliablelink._core import ClientHandshake, LinkParams, ServerHandshake
from reliablelink._core._frames import HANDSHAKE_FRAME_LIMIT, PREFACE, FrameReader
from tests.corepair import attached_pair
from tests.helpers import KEY

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
chunks = st.lists(st.binary(max_size=300), max_size=12)
# Inputs that get past the preface, so the fuzzer reaches the frame parser.
framed = st.builds(lambda rest: PREFACE + rest, st.binary(max_size=600))


@FUZZ
@given(data=st.one_of(st.binary(max_size=600), framed), split=st.integers(1, 50))
def test_frame_reader_parses_or_raises_protocol_error(data: bytes, split: int) -> None:
    whole: list[tuple[int, bytes]] | str
    try:
        whole = FrameReader(HANDSHAKE_FRAME_LIMIT).feed(data)
    except ProtocolError:
        whole = "error"
    reader = FrameReader(HANDSHAKE_FRAME_LIMIT)
    pieces: list[tuple[int, bytes]] | str = []
    try:
        for i in range(0, len(data), split):
            assert isinstance(pieces, list)
            pieces += reader.feed(data[i : i + split])
    except ProtocolError:
        pieces = "error"
    if whole != "error":
        assert pieces == whole, "the result must not depend on how the bytes are chunked"
    assert len(reader._buf) <= HANDSHAKE_FRAME_LIMIT + 5 + len(PREFACE), "buffer bounded by the limit"


@FUZZ
@given(data=chunks)
def test_server_handshake_on_garbage(data: list[bytes]) -> None:
    server = ServerHandshake(LinkParams())
    try:
        for chunk in data:
            step = server.receive_data(PREFACE + chunk if chunk is data[0] else chunk)
            if isinstance(step, str):
                server.set_key(KEY)
    except (ProtocolError, AuthenticationError):
        pass


@FUZZ
@given(data=chunks)
def test_client_handshake_on_garbage(data: list[bytes]) -> None:
    client = ClientHandshake("agent-1", KEY, LinkParams())
    try:
        for chunk in data:
            client.receive_data(PREFACE + chunk if chunk is data[0] else chunk)
    except (ProtocolError, AuthenticationError):
        pass


@FUZZ
@given(data=chunks)
def test_attached_session_on_garbage(data: list[bytes]) -> None:
    _, b = attached_pair(LinkParams(max_message_size=256, max_inflight=8, max_inflight_bytes=1024))
    try:
        for chunk in data:
            b.receive_data(chunk, 0.0)
    except ProtocolError:
        pass
    assert len(b.inbox) <= 8, "no more messages queued than the window allows"
    assert b._conn is not None and b._conn.have <= 256 + 17 + 4, "no partial frame larger than the largest allowed"
