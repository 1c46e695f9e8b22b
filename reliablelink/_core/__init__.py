"""Sans-I/O core of reliablelink: frames, handshake, session state. No Trio, no sockets, no clock."""

from ._frames import PREFACE, ErrorCode, FrameType
from ._handshake import ClientHandshake, HandshakeResult, ResumeRequest, ServerHandshake, new_session_id, new_token
from ._params import LinkParams, negotiate
from ._session import CoreStats, LinkDead, PeerClosed, PeerError, SessionCore
from ._state import SessionState, Transition

__all__ = [
    "PREFACE",
    "ClientHandshake",
    "CoreStats",
    "ErrorCode",
    "FrameType",
    "HandshakeResult",
    "LinkDead",
    "LinkParams",
    "PeerClosed",
    "PeerError",
    "ResumeRequest",
    "ServerHandshake",
    "SessionCore",
    "SessionState",
    "Transition",
    "negotiate",
    "new_session_id",
    "new_token",
]
