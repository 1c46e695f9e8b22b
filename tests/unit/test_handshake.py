"""Handshake: mutual authentication, negotiation, resume tokens, hostile input."""

from __future__ import annotations

import pytest

from reliablelink import AuthenticationError, ProtocolError, SessionExpired
from reliablelink._core import (
    ClientHandshake,
    ErrorCode,
    LinkParams,
    ResumeRequest,
    ServerHandshake,
    new_session_id,
    new_token,
    resume_allowed,
    rotate_tokens,
)
from reliablelink._core._frames import PREFACE, FrameType, encode_frame
from tests.helpers import KEY


def _until_auth(client: ClientHandshake, server: ServerHandshake, key: bytes | None = KEY) -> object:
    assert server.receive_data(client.data_to_send()) == "agent-1"
    server.set_key(key)
    client.receive_data(server.data_to_send())
    return server.receive_data(client.data_to_send())


def test_full_handshake_agrees_on_the_smaller_parameters() -> None:
    client = ClientHandshake("agent-1", KEY, LinkParams(heartbeat_interval=1, dead_after=3, max_inflight=100))
    server = ServerHandshake(LinkParams(heartbeat_interval=5, dead_after=15, max_message_size=2048))
    req = _until_auth(client, server)
    assert req == ResumeRequest(b"", b"", 0)
    sid, token = new_session_id(), new_token()
    server_view = server.accept(sid, token, 0, resumed=False, session_ttl=30)
    result = client.receive_data(server.data_to_send())
    assert result is not None
    assert result.session_id == sid and result.token == token and not result.resumed
    assert result.params == server_view.params
    assert (result.params.heartbeat_interval, result.params.dead_after) == (1, 3)
    assert (result.params.max_message_size, result.params.max_inflight) == (2048, 100)
    assert result.session_ttl == 30


def test_wrong_key_is_refused_with_auth_error_frame() -> None:
    client = ClientHandshake("agent-1", b"wrong" * 8, LinkParams())
    server = ServerHandshake(LinkParams())
    with pytest.raises(AuthenticationError):
        _until_auth(client, server)
    with pytest.raises(AuthenticationError, match="refused"):
        client.receive_data(server.data_to_send())


def test_unknown_client_gets_the_same_answer_as_a_wrong_key() -> None:
    answers = []
    for key in (None, b"other" * 8):
        client = ClientHandshake("agent-1", KEY, LinkParams(), nonce=b"n" * 32)
        server = ServerHandshake(LinkParams(), nonce=b"s" * 32)
        with pytest.raises(AuthenticationError):
            _until_auth(client, server, key)
        answers.append(server.data_to_send())
    assert answers[0] == answers[1], "unknown id and wrong key must be indistinguishable on the wire"


def test_server_that_does_not_know_the_key_is_refused_by_the_client() -> None:
    client = ClientHandshake("agent-1", KEY, LinkParams())
    impostor = ServerHandshake(LinkParams())
    assert impostor.receive_data(client.data_to_send()) == "agent-1"
    impostor.set_key(b"guess" * 8)
    client.receive_data(impostor.data_to_send())
    # The impostor cannot check the client's MAC either, but suppose it skips the check:
    impostor._stage = "decide"
    impostor.accept(new_session_id(), new_token(), 0, resumed=False, session_ttl=1)
    with pytest.raises(AuthenticationError, match="could not prove"):
        client.receive_data(impostor.data_to_send())


def test_replayed_auth_fails_against_a_fresh_server_nonce() -> None:
    client = ClientHandshake("agent-1", KEY, LinkParams())
    server = ServerHandshake(LinkParams())
    hello = client.data_to_send()
    server.receive_data(hello)
    server.set_key(KEY)
    client.receive_data(server.data_to_send())
    auth = client.data_to_send()
    assert isinstance(server.receive_data(auth), ResumeRequest)
    # An attacker replays the recorded HELLO and AUTH against a new connection.
    replay = ServerHandshake(LinkParams())
    replay.receive_data(hello)
    replay.set_key(KEY)
    replay.data_to_send()
    with pytest.raises(AuthenticationError):
        replay.receive_data(auth)


def test_resume_request_carries_session_token_and_position() -> None:
    sid, token = new_session_id(), new_token()
    client = ClientHandshake("agent-1", KEY, LinkParams(), ResumeRequest(sid, token, 42))
    server = ServerHandshake(LinkParams())
    assert _until_auth(client, server) == ResumeRequest(sid, token, 42)
    server.reject(ErrorCode.SESSION_EXPIRED, "gone")
    with pytest.raises(SessionExpired):
        client.receive_data(server.data_to_send())


def test_server_caps_absurd_client_proposals() -> None:
    absurd = LinkParams(heartbeat_interval=0.001, dead_after=0.002, max_message_size=2**32 - 65, max_inflight=2**32 - 1)
    client = ClientHandshake("agent-1", KEY, absurd)
    server = ServerHandshake(LinkParams())
    _until_auth(client, server)
    agreed = server.accept(new_session_id(), new_token(), 0, resumed=False, session_ttl=1).params
    assert agreed.heartbeat_interval >= 0.05, "heartbeat floor"
    assert agreed.dead_after >= 2 * agreed.heartbeat_interval
    assert agreed.max_message_size == LinkParams().max_message_size
    assert agreed.max_inflight == LinkParams().max_inflight


@pytest.mark.parametrize(
    "frame",
    [
        encode_frame(FrameType.DATA, b"x" * 20),  # DATA before authentication
        encode_frame(FrameType.HELLO, b"\x00"),  # truncated HELLO
        encode_frame(FrameType.HELLO, b"\x01\x01a" + b"n" * 32 + b"p" * 24),  # bad flags
        encode_frame(FrameType(99) if 99 in FrameType._value2member_map_ else FrameType.PING, b"12345678"),
    ],
)
def test_server_rejects_malformed_hello(frame: bytes) -> None:
    server = ServerHandshake(LinkParams())
    with pytest.raises(ProtocolError):
        server.receive_data(PREFACE + frame)
    assert b"RLNK" in server.data_to_send(), "the preface and an ERROR frame are queued for the client"


def test_client_id_limits() -> None:
    with pytest.raises(ValueError, match="client_id"):
        ClientHandshake("", KEY, LinkParams())
    with pytest.raises(ValueError, match="client_id"):
        ClientHandshake("x" * 256, KEY, LinkParams())
    with pytest.raises(ValueError, match="key"):
        ClientHandshake("a", b"", LinkParams())


def test_frames_right_behind_welcome_are_left_for_the_session() -> None:
    """The server writes ACK and replayed DATA straight after WELCOME; one read may hold all."""
    client = ClientHandshake("agent-1", KEY, LinkParams())
    server = ServerHandshake(LinkParams())
    server.receive_data(client.data_to_send())
    server.set_key(KEY)
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    server.accept(new_session_id(), new_token(), 0, resumed=False, session_ttl=1)
    big_data_frame = encode_frame(FrameType.DATA, b"\x00" * 16 + b"x" * 5000)  # beyond the handshake limit
    result = client.receive_data(server.data_to_send() + big_data_frame)
    assert result is not None
    assert client.take_rest() == big_data_frame


def test_small_client_proposals_are_granted_not_raised() -> None:
    tiny = LinkParams(max_message_size=512, max_inflight=8, max_inflight_bytes=1000)
    client = ClientHandshake("agent-1", KEY, tiny)
    server = ServerHandshake(LinkParams())
    _until_auth(client, server)
    server.accept(new_session_id(), new_token(), 0, resumed=False, session_ttl=1)
    result = client.receive_data(server.data_to_send())
    assert result is not None
    assert (result.params.max_message_size, result.params.max_inflight, result.params.max_inflight_bytes) == (
        512,
        8,
        1000,
    )


# -- resume tokens: the one check, in the core ---------------------------------------------

T_CUR, T_PREV, T_OTHER = b"c" * 32, b"p" * 32, b"x" * 32


@pytest.mark.parametrize(
    ("owner", "presented", "current", "previous", "allowed"),
    [
        ("agent-1", T_CUR, T_CUR, T_PREV, True),
        ("agent-1", T_PREV, T_CUR, T_PREV, True),
        ("agent-1", T_OTHER, T_CUR, T_PREV, False),
        ("agent-1", T_PREV, T_CUR, b"", False),
        ("agent-1", b"", T_CUR, b"", False),
        ("agent-2", T_CUR, T_CUR, T_PREV, False),
        ("agent-2", T_PREV, T_CUR, T_PREV, False),
        ("agent-2", T_OTHER, T_CUR, T_PREV, False),
    ],
)
def test_resume_allowed_needs_the_owner_and_the_current_or_previous_token(
    owner: str, presented: bytes, current: bytes, previous: bytes, allowed: bool
) -> None:
    got = resume_allowed(owner=owner, client_id="agent-1", presented=presented, current=current, previous=previous)
    assert got is allowed, f"owner {owner}, token {presented[:1]!r}: expected {allowed}"


def test_resume_allowed_gives_one_answer_for_another_clients_session_and_a_wrong_token() -> None:
    other_client = resume_allowed(owner="agent-2", client_id="agent-1", presented=T_CUR, current=T_CUR, previous=b"")
    wrong_token = resume_allowed(owner="agent-1", client_id="agent-1", presented=T_OTHER, current=T_CUR, previous=b"")
    assert other_client is wrong_token is False, "an attacker learns nothing from which check failed"


def test_resume_allowed_compares_non_ascii_client_ids() -> None:
    assert resume_allowed(owner="agent-é", client_id="agent-é", presented=T_CUR, current=T_CUR, previous=b"")
    assert not resume_allowed(owner="agent-é", client_id="agent-e", presented=T_CUR, current=T_CUR, previous=b"")


def test_rotate_tokens_retires_the_previous_token_once_the_current_one_is_proven() -> None:
    fresh = iter([b"1" * 32, b"2" * 32, b"3" * 32])
    make = fresh.__next__
    # The client presents the current token: the previous one is retired.
    assert rotate_tokens(T_CUR, T_CUR, T_PREV, make_token=make) == (b"1" * 32, T_CUR)
    # The client presents the previous token (it never saw the WELCOME with the current
    # one): the previous token stays valid beside the new one; the unproven current is dropped.
    assert rotate_tokens(T_PREV, T_CUR, T_PREV, make_token=make) == (b"2" * 32, T_PREV)
    # A first resume after a fresh session: no previous token yet.
    assert rotate_tokens(T_CUR, T_CUR, b"", make_token=make) == (b"3" * 32, T_CUR)


def test_rotate_tokens_issues_a_fresh_random_token_by_default() -> None:
    new_current, new_previous = rotate_tokens(T_CUR, T_CUR, T_PREV)
    assert len(new_current) == 32 and new_current not in (T_CUR, T_PREV)
    assert new_previous == T_CUR
    assert rotate_tokens(T_CUR, T_CUR, T_PREV)[0] != new_current, "a new token every time"


def test_the_protocol_doc_table_of_token_rotation_holds() -> None:
    """docs/protocol.md, "Resume tokens": T1 issued; resume with T1 -> T2; the WELCOME with
    T2 is lost; resume with T1 (previous) -> T3; resume with T3 -> T4; T1 is then refused."""
    tokens = iter([b"2" * 32, b"3" * 32, b"4" * 32])
    current, previous = b"1" * 32, b""
    for presented, expect in ((b"1" * 32, (b"2" * 32, b"1" * 32)), (b"1" * 32, (b"3" * 32, b"1" * 32))):
        assert resume_allowed(owner="a", client_id="a", presented=presented, current=current, previous=previous)
        current, previous = rotate_tokens(presented, current, previous, make_token=tokens.__next__)
        assert (current, previous) == expect
    assert resume_allowed(owner="a", client_id="a", presented=b"3" * 32, current=current, previous=previous)
    current, previous = rotate_tokens(b"3" * 32, current, previous, make_token=tokens.__next__)
    assert (current, previous) == (b"4" * 32, b"3" * 32)
    assert not resume_allowed(owner="a", client_id="a", presented=b"1" * 32, current=current, previous=previous)
