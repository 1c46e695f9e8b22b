"""Sans-I/O core of reliablelink: frames, handshake, session state. No Trio, no sockets, no clock."""

from ._cursor import PendingCommit, StoreCursor
from ._frames import PREFACE, ErrorCode, FrameType
from ._handshake import (
    ClientHandshake,
    HandshakeResult,
    ResumeRequest,
    ServerHandshake,
    new_session_id,
    new_token,
    resume_allowed,
    rotate_tokens,
)
from ._params import LinkParams, negotiate
from ._session import CoreStats, LinkDead, PeerClosed, PeerError, SessionCore
from ._state import OurSide, SessionState, TheirSide, Transition

__all__ = [
    "PREFACE",
    "ClientHandshake",
    "CoreStats",
    "ErrorCode",
    "FrameType",
    "HandshakeResult",
    "LinkDead",
    "LinkParams",
    "OurSide",
    "PeerClosed",
    "PeerError",
    "PendingCommit",
    "ResumeRequest",
    "ServerHandshake",
    "SessionCore",
    "SessionState",
    "StoreCursor",
    "TheirSide",
    "Transition",
    "negotiate",
    "new_session_id",
    "new_token",
    "resume_allowed",
    "rotate_tokens",
]
