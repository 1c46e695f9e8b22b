"""The handshake: mutual HMAC-SHA256 challenge-response, negotiation and resume.

::

    client                                            server
    PREFACE HELLO(client_id, client_nonce, params) -->
                                                <--   PREFACE CHALLENGE(server_nonce)
    AUTH(client_mac, session_id, token, last_received) -->
                                                <--   WELCOME(server_mac, session_id, new_token,
                                                              last_received, flags, params, ttl)
                                                      or ERROR(code, message)

Each MAC covers a hash of the transcript up to it: the client's binds both nonces, the
client id, the proposed parameters and the resume request (session id, token, position);
the server's binds all of that plus everything in WELCOME (the new token, its position, the
agreed parameters). The key never crosses the wire. A fresh server nonce per connection makes a recorded AUTH
useless; a fresh client nonce makes a recorded WELCOME useless.

An unknown client id is handled exactly like a wrong key (a random key is used to
verify, and the same error is returned), so the server's answer tells an attacker nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from .._errors import AuthenticationError, ProtocolError, SessionClosed, SessionExpired
from ._frames import (
    HANDSHAKE_FRAME_LIMIT,
    PREFACE,
    ErrorCode,
    FrameReader,
    FrameType,
    decode_error,
    encode_error,
    encode_frame,
)
from ._params import WIRE_SIZE, LinkParams, negotiate

__all__ = [
    "ClientHandshake",
    "HandshakeResult",
    "ResumeRequest",
    "ServerHandshake",
    "new_session_id",
    "new_token",
    "resume_allowed",
    "rotate_tokens",
]

NONCE_SIZE = 32
MAC_SIZE = 32
SESSION_ID_SIZE = 16
TOKEN_SIZE = 32
MAX_CLIENT_ID = 255
_NO_SESSION = bytes(SESSION_ID_SIZE)
_NO_TOKEN = bytes(TOKEN_SIZE)
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_CLIENT_LABEL = b"reliablelink v1 client"
_SERVER_LABEL = b"reliablelink v1 server"
_FLAG_RESUMED = 1


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """What a client presents to resume a session (all zero for a new session)."""

    session_id: bytes
    token: bytes
    last_received: int


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """Outcome of a completed handshake, as seen by either end.

    Attributes:
        client_id: the authenticated client.
        session_id: 16 bytes naming the session.
        token: the resume token the client must present next time.
        resumed: whether an existing session was resumed.
        peer_last_received: the highest sequence number the peer holds from us.
        params: the agreed link parameters.
        session_ttl: how long the server keeps the session once detached.
    """

    client_id: str
    session_id: bytes
    token: bytes
    resumed: bool
    peer_last_received: int
    params: LinkParams
    session_ttl: float


def _mac(key: bytes, label: bytes, digest: bytes) -> bytes:
    return hmac.new(key, label + digest, hashlib.sha256).digest()


def _raise_error_frame(body: bytes) -> NoReturn:
    err = decode_error(body)
    text = err.message or "no reason given"
    if err.code == ErrorCode.AUTH_FAILED:
        raise AuthenticationError(f"server refused the credentials: {text}")
    if err.code == ErrorCode.SESSION_EXPIRED:
        raise SessionExpired(f"the server no longer has this session: {text}")
    if err.code == ErrorCode.SESSION_CLOSED:
        raise SessionClosed(f"the session was closed: {text}")
    if err.code == ErrorCode.SERVER_BUSY:
        raise ProtocolError(f"server busy: {text}")
    raise ProtocolError(f"server error {err.code}: {text}")


class ClientHandshake:
    """Client side of the handshake (sans-I/O).

    Call :meth:`data_to_send` and write it, feed received bytes to :meth:`receive_data`
    until it returns a :class:`HandshakeResult`; then :meth:`take_rest` gives bytes that
    arrived after the handshake and belong to the session.

    Raises (from ``receive_data``): :class:`AuthenticationError` when the server refused the
    key or failed to prove that it knows it; :class:`SessionExpired` / :class:`SessionClosed`
    when the resumed session is gone; :class:`ProtocolError` for anything malformed.
    """

    def __init__(
        self,
        client_id: str,
        key: bytes,
        params: LinkParams,
        resume: ResumeRequest | None = None,
        *,
        nonce: bytes | None = None,
    ) -> None:
        cid = client_id.encode("utf-8")
        if not 0 < len(cid) <= MAX_CLIENT_ID:
            raise ValueError(f"client_id must be 1 to {MAX_CLIENT_ID} bytes of UTF-8, got {len(cid)}")
        if not key:
            raise ValueError("key must not be empty")
        self._client_id = client_id
        self._key = key
        self._params = params
        self._resume = resume or ResumeRequest(_NO_SESSION, _NO_TOKEN, 0)
        self._reader = FrameReader(HANDSHAKE_FRAME_LIMIT)
        self._transcript = hashlib.sha256(PREFACE)
        hello = bytes([0, len(cid)]) + cid + (nonce or os.urandom(NONCE_SIZE)) + params.encode()
        self._transcript.update(hello)
        self._out = bytearray(PREFACE + encode_frame(FrameType.HELLO, hello))
        self._stage = "challenge"

    def data_to_send(self) -> bytes:
        """Bytes to write now (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_rest(self) -> bytes:
        """Bytes received after the WELCOME frame."""
        return self._reader.take_rest()

    def receive_data(self, data: bytes) -> HandshakeResult | None:
        """Feed bytes from the server; return the result once the handshake completes.

        Bytes after the WELCOME frame are left unparsed for :meth:`take_rest`.
        """
        self._reader.add(data)
        while self._stage != "done" and (frame := self._reader.next_frame()) is not None:
            ftype, body = frame
            if ftype == FrameType.ERROR:
                _raise_error_frame(body)
            if self._stage == "challenge" and ftype == FrameType.CHALLENGE:
                self._on_challenge(body)
            elif self._stage == "welcome" and ftype == FrameType.WELCOME:
                self._stage = "done"
                return self._on_welcome(body)
            else:
                raise ProtocolError(f"unexpected frame type {ftype} during the handshake ({self._stage})")
        return None

    def _on_challenge(self, body: bytes) -> None:
        if len(body) != NONCE_SIZE:
            raise ProtocolError(f"CHALLENGE must carry {NONCE_SIZE} bytes, got {len(body)}")
        self._transcript.update(body)
        r = self._resume
        fields = r.session_id + r.token + _U64.pack(r.last_received)
        self._transcript.update(fields)
        mac = _mac(self._key, _CLIENT_LABEL, self._transcript.digest())
        self._out += encode_frame(FrameType.AUTH, mac + fields)
        self._stage = "welcome"

    def _on_welcome(self, body: bytes) -> HandshakeResult:
        expected = MAC_SIZE + SESSION_ID_SIZE + TOKEN_SIZE + 8 + 1 + WIRE_SIZE + 4
        if len(body) != expected:
            raise ProtocolError(f"WELCOME must be {expected} bytes, got {len(body)}")
        mac, fields = body[:MAC_SIZE], body[MAC_SIZE:]
        self._transcript.update(fields)
        if not hmac.compare_digest(mac, _mac(self._key, _SERVER_LABEL, self._transcript.digest())):
            raise AuthenticationError("the server could not prove that it knows this client's key")
        pos = 0
        session_id = fields[pos : pos + SESSION_ID_SIZE]
        pos += SESSION_ID_SIZE
        token = fields[pos : pos + TOKEN_SIZE]
        pos += TOKEN_SIZE
        (last_received,) = _U64.unpack_from(fields, pos)
        pos += 8
        flags = fields[pos]
        pos += 1
        params = LinkParams.decode(fields, pos)
        pos += WIRE_SIZE
        (ttl_ms,) = _U32.unpack_from(fields, pos)
        self._check_agreed(params)
        resumed = bool(flags & _FLAG_RESUMED)
        if self._resume.session_id != _NO_SESSION and (not resumed or session_id != self._resume.session_id):
            raise ProtocolError("the server answered a resume with a different session")
        return HandshakeResult(self._client_id, session_id, token, resumed, last_received, params, ttl_ms / 1000)

    def _check_agreed(self, agreed: LinkParams) -> None:
        # The server may only lower what we proposed (a hostile server must not make us
        # accept frames larger than we asked for).
        p = self._params
        if (
            agreed.max_message_size > p.max_message_size
            or agreed.max_inflight > p.max_inflight
            or agreed.max_inflight_bytes > p.max_inflight_bytes
            or agreed.dead_after <= agreed.heartbeat_interval
            or agreed.max_message_size <= 0
            or agreed.max_inflight <= 0
        ):
            raise ProtocolError(f"the server agreed to parameters outside our proposal: {agreed}")


class ServerHandshake:
    """Server side of the handshake (sans-I/O).

    Protocol: feed bytes to :meth:`receive_data`. When it returns a ``str`` the client has
    said hello: look up that client's key and call :meth:`set_key` (``None`` for an unknown
    client). When it returns a :class:`ResumeRequest` the client has proven its key: decide,
    then call :meth:`accept` or :meth:`reject`. Any failure queues an ERROR frame for the
    client (flush :meth:`data_to_send`) and raises.
    """

    def __init__(self, params: LinkParams, *, nonce: bytes | None = None) -> None:
        self._params = params
        self._reader = FrameReader(HANDSHAKE_FRAME_LIMIT)
        self._transcript = hashlib.sha256(PREFACE)
        self._nonce = nonce or os.urandom(NONCE_SIZE)
        self._out = bytearray(PREFACE)
        self._key: bytes | None = None
        self._stage = "hello"
        self.client_id = ""
        self.agreed: LinkParams | None = None

    def data_to_send(self) -> bytes:
        """Bytes to write now (may be empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def take_rest(self) -> bytes:
        """Bytes received after AUTH that are not yet a complete frame."""
        return self._reader.take_rest()

    def receive_data(self, data: bytes) -> str | ResumeRequest | None:
        """Feed bytes from the client; see the class docstring for what comes back."""
        try:
            frames = self._reader.feed(data)
        except ProtocolError as exc:
            self._out += encode_error(ErrorCode.PROTOCOL, str(exc))
            raise
        if not frames:
            return None
        # The client must wait for our answer after each frame, so one frame per feed is
        # all a correct client can have sent; anything pipelined is a protocol violation.
        if len(frames) > 1:
            self._fail(ErrorCode.PROTOCOL, ProtocolError("client sent frames before the server answered"))
        ftype, body = frames[0]
        if self._stage == "hello" and ftype == FrameType.HELLO:
            return self._on_hello(body)
        if self._stage == "auth" and ftype == FrameType.AUTH:
            return self._on_auth(body)
        self._fail(ErrorCode.PROTOCOL, ProtocolError(f"unexpected frame type {ftype} during the handshake"))

    def _fail(self, code: ErrorCode, exc: Exception) -> NoReturn:
        self._out += encode_error(code, str(exc))
        self._stage = "failed"
        raise exc

    def _on_hello(self, body: bytes) -> str:
        if len(body) < 2:
            self._fail(ErrorCode.PROTOCOL, ProtocolError("truncated HELLO"))
        n = body[1]
        if body[0] != 0 or n == 0 or len(body) != 2 + n + NONCE_SIZE + WIRE_SIZE:
            self._fail(ErrorCode.PROTOCOL, ProtocolError("malformed HELLO"))
        try:
            client_id = body[2 : 2 + n].decode("utf-8")
        except UnicodeDecodeError:
            self._fail(ErrorCode.PROTOCOL, ProtocolError("client id is not UTF-8"))
        proposed = LinkParams.decode(body, 2 + n + NONCE_SIZE)
        self.agreed = negotiate(proposed, self._params)
        self._transcript.update(body)
        self.client_id = client_id
        self._stage = "key"
        return client_id

    def set_key(self, key: bytes | None) -> None:
        """Give the key of the client that said hello (``None`` if unknown); sends CHALLENGE."""
        if self._stage != "key":
            raise RuntimeError("set_key() is only valid right after HELLO")
        # An unknown client gets the same treatment as a wrong key: a random key that no
        # MAC can match, so timing and answers are the same.
        self._key = key if key else os.urandom(32)
        self._transcript.update(self._nonce)
        self._out += encode_frame(FrameType.CHALLENGE, self._nonce)
        self._stage = "auth"

    def _on_auth(self, body: bytes) -> ResumeRequest:
        if len(body) != MAC_SIZE + SESSION_ID_SIZE + TOKEN_SIZE + 8:
            self._fail(ErrorCode.PROTOCOL, ProtocolError("malformed AUTH"))
        mac, fields = body[:MAC_SIZE], body[MAC_SIZE:]
        self._transcript.update(fields)
        assert self._key is not None
        if not hmac.compare_digest(mac, _mac(self._key, _CLIENT_LABEL, self._transcript.digest())):
            self._fail(ErrorCode.AUTH_FAILED, AuthenticationError("authentication failed"))
        self._stage = "decide"
        session_id = fields[:SESSION_ID_SIZE]
        token = fields[SESSION_ID_SIZE : SESSION_ID_SIZE + TOKEN_SIZE]
        (last_received,) = _U64.unpack_from(fields, SESSION_ID_SIZE + TOKEN_SIZE)
        if session_id == _NO_SESSION:
            return ResumeRequest(b"", b"", last_received)
        return ResumeRequest(session_id, token, last_received)

    def accept(
        self, session_id: bytes, token: bytes, last_received: int, *, resumed: bool, session_ttl: float
    ) -> HandshakeResult:
        """Welcome the client into ``session_id``; ``token`` is the new resume token."""
        if self._stage != "decide" or self.agreed is None or self._key is None:
            raise RuntimeError("accept() is only valid after a verified AUTH")
        fields = (
            session_id
            + token
            + _U64.pack(last_received)
            + bytes([_FLAG_RESUMED if resumed else 0])
            + self.agreed.encode()
            + _U32.pack(min(2**32 - 1, round(session_ttl * 1000)))
        )
        self._transcript.update(fields)
        mac = _mac(self._key, _SERVER_LABEL, self._transcript.digest())
        self._out += encode_frame(FrameType.WELCOME, mac + fields)
        self._stage = "done"
        # The agreed parameters as the client will decode them (millisecond resolution).
        agreed = LinkParams.decode(self.agreed.encode())
        return HandshakeResult(self.client_id, session_id, token, resumed, 0, agreed, session_ttl)

    def reject(self, code: ErrorCode, message: str) -> None:
        """Refuse the client with an ERROR frame (flush :meth:`data_to_send`, then close)."""
        self._out += encode_error(code, message)
        self._stage = "failed"


def new_session_id() -> bytes:
    """A fresh random session id."""
    return os.urandom(SESSION_ID_SIZE)


def new_token() -> bytes:
    """A fresh random resume token."""
    return os.urandom(TOKEN_SIZE)


def resume_allowed(*, owner: str, client_id: str, presented: bytes, current: bytes, previous: bytes) -> bool:
    """Whether an authenticated client may resume a session with the token it presented.

    True iff the session belongs to ``client_id`` and ``presented`` is the session's current
    token, or its previous one (when there is one: the WELCOME carrying the current token
    may have been lost with its connection). Every comparison is made, in constant time,
    whatever the outcome of the others, so another client's session and a wrong token get
    the same answer in the same time.

    Args:
        owner: the client id the session belongs to.
        client_id: the client id the handshake authenticated.
        presented: the token in the client's AUTH.
        current: the latest token issued for the session.
        previous: the token before it, or ``b""`` once the client proved it holds ``current``.
    """
    owner_ok = hmac.compare_digest(owner.encode(), client_id.encode())
    current_ok = hmac.compare_digest(presented, current)
    previous_ok = hmac.compare_digest(presented, previous)
    return owner_ok & (current_ok | (previous_ok & bool(previous)))


def rotate_tokens(
    presented: bytes, current: bytes, previous: bytes, *, make_token: Callable[[], bytes] = new_token
) -> tuple[bytes, bytes]:
    """The session's tokens after an accepted resume (see :func:`resume_allowed`).

    A fresh token is issued on every attach. The previous token stays valid only until the
    client proves it holds the newer one: presenting ``current`` retires ``previous``.

    Args:
        presented: the token the client presented (already accepted).
        current: the session's current token.
        previous: the session's previous token (``b""`` if none).
        make_token: the source of fresh tokens (tests inject a deterministic one).

    Returns:
        ``(new_current, new_previous)``: the token to send in WELCOME, and the one that
        stays valid beside it.
    """
    new_previous = current if hmac.compare_digest(presented, current) else previous
    return make_token(), new_previous
