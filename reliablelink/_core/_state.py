"""The session's state machines: every state and every transition, in tables.

Like h11's ``_state.py``, this module is the single place that says which states and which
transitions exist; :class:`~reliablelink._core._session.SessionCore` moves only through
:func:`next_state`, :func:`next_our_side` and :func:`next_their_side`, and any move not listed
here raises ``RuntimeError``. ``docs/protocol.md`` draws the same tables.

There are three machines:

* :class:`SessionState`, the life cycle: a session outlives its connections. It is
  *attached* while a connection carries it and *detached* between connections; a close, an
  expiry or a failure ends it.
* :class:`OurSide`, this end's half of the close handshake (h11's ``our_state``): open,
  stopped (no new messages, ``CLOSE`` not sent yet, for example while draining), ``CLOSE``
  sent.
* :class:`TheirSide`, the peer's half (h11's ``their_state``): open, or ``CLOSE`` received.

Each direction closes on its own, so "we sent CLOSE" and "they sent CLOSE" are two states,
not one ``CLOSING`` and a set of flags.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "FINAL_STATES",
    "OUR_TRANSITIONS",
    "THEIR_TRANSITIONS",
    "TRANSITIONS",
    "OurSide",
    "SessionState",
    "SideEvent",
    "TheirSide",
    "Transition",
    "next_our_side",
    "next_state",
    "next_their_side",
]


class SessionState(enum.Enum):
    """Life cycle of a session."""

    NEW = "new"  # created, never attached
    ATTACHED = "attached"  # a connection carries it
    DETACHED = "detached"  # between connections; messages wait, nothing is lost
    CLOSING = "closing"  # a CLOSE went one way, the other is awaited (see OurSide, TheirSide)
    CLOSED = "closed"  # both CLOSEs exchanged, or closed locally: final
    EXPIRED = "expired"  # the server forgot it (detached longer than session_ttl): final
    FAILED = "failed"  # an unrecoverable error (for example the peer lost its state): final


class Transition(enum.Enum):
    """What moves a session from one life-cycle state to another."""

    ATTACH = "attach"
    DETACH = "detach"
    SEND_CLOSE = "send_close"
    RECEIVE_CLOSE = "receive_close"
    CLOSE_DONE = "close_done"
    EXPIRE = "expire"
    FAIL = "fail"


S, T = SessionState, Transition
TRANSITIONS: dict[tuple[SessionState, Transition], SessionState] = {
    (S.NEW, T.ATTACH): S.ATTACHED,
    (S.ATTACHED, T.DETACH): S.DETACHED,
    (S.DETACHED, T.ATTACH): S.ATTACHED,
    (S.ATTACHED, T.SEND_CLOSE): S.CLOSING,
    (S.ATTACHED, T.RECEIVE_CLOSE): S.CLOSING,
    (S.CLOSING, T.SEND_CLOSE): S.CLOSING,
    (S.CLOSING, T.RECEIVE_CLOSE): S.CLOSING,
    (S.NEW, T.SEND_CLOSE): S.CLOSING,
    (S.DETACHED, T.SEND_CLOSE): S.CLOSING,
    (S.CLOSING, T.CLOSE_DONE): S.CLOSED,
    # A close in progress survives a lost link: the next attach replays and sends CLOSE
    # again; the driver bounds how long it waits (``close_timeout``).
    (S.CLOSING, T.DETACH): S.CLOSING,
    (S.CLOSING, T.ATTACH): S.CLOSING,
    (S.NEW, T.CLOSE_DONE): S.CLOSED,
    (S.ATTACHED, T.CLOSE_DONE): S.CLOSED,
    (S.DETACHED, T.CLOSE_DONE): S.CLOSED,
    (S.NEW, T.EXPIRE): S.EXPIRED,
    (S.DETACHED, T.EXPIRE): S.EXPIRED,
    (S.CLOSING, T.EXPIRE): S.EXPIRED,
}
for _state in (S.NEW, S.ATTACHED, S.DETACHED, S.CLOSING):
    TRANSITIONS[(_state, T.FAIL)] = S.FAILED
del S, T, _state

FINAL_STATES = frozenset({SessionState.CLOSED, SessionState.EXPIRED, SessionState.FAILED})


class OurSide(enum.Enum):
    """This end's sending direction (h11's ``our_state``)."""

    OPEN = "open"  # messages are accepted
    STOPPED = "stopped"  # closing begun or the session ended: no new messages, CLOSE not sent
    # CLOSE is queued on the attached connection, or will be on the next attach (after the
    # replay); every later attach sends it again, as the one before may have been lost.
    CLOSE_SENT = "close_sent"


class TheirSide(enum.Enum):
    """The peer's sending direction (h11's ``their_state``)."""

    OPEN = "open"  # the peer may send messages
    CLOSE_RECEIVED = "close_received"  # the peer sent CLOSE: it sends nothing more


class SideEvent(enum.Enum):
    """What moves one direction of the close handshake."""

    STOP_SENDING = "stop_sending"  # this side accepts no new messages
    SEND_CLOSE = "send_close"  # this side queues CLOSE
    RECEIVE_CLOSE = "receive_close"  # a CLOSE frame arrived


Ours, E = OurSide, SideEvent
OUR_TRANSITIONS: dict[tuple[OurSide, SideEvent], OurSide] = {
    (Ours.OPEN, E.STOP_SENDING): Ours.STOPPED,
    (Ours.STOPPED, E.STOP_SENDING): Ours.STOPPED,
    (Ours.CLOSE_SENT, E.STOP_SENDING): Ours.CLOSE_SENT,
    (Ours.OPEN, E.SEND_CLOSE): Ours.CLOSE_SENT,
    (Ours.STOPPED, E.SEND_CLOSE): Ours.CLOSE_SENT,
}
THEIR_TRANSITIONS: dict[tuple[TheirSide, SideEvent], TheirSide] = {
    (TheirSide.OPEN, E.RECEIVE_CLOSE): TheirSide.CLOSE_RECEIVED,
}
del Ours, E


_S = TypeVar("_S", SessionState, OurSide, TheirSide)


def _follow(table: Mapping[tuple[_S, Any], _S], state: _S, event: Transition | SideEvent, machine: str) -> _S:
    """The state after ``event`` in ``table``; ``RuntimeError`` naming ``machine`` if there is no such edge."""
    try:
        return table[(state, event)]
    except KeyError:
        raise RuntimeError(f"invalid {machine} transition {event.value!r} in state {state.value!r}") from None


def next_state(state: SessionState, transition: Transition) -> SessionState:
    """Return the life-cycle state after ``transition``.

    Raises:
        RuntimeError: the table has no such edge.
    """
    return _follow(TRANSITIONS, state, transition, "session")


def next_our_side(side: OurSide, event: SideEvent) -> OurSide:
    """Return this end's sending state after ``event``.

    Raises:
        RuntimeError: the table has no such edge.
    """
    return _follow(OUR_TRANSITIONS, side, event, "our side")


def next_their_side(side: TheirSide, event: SideEvent) -> TheirSide:
    """Return the peer's sending state after ``event``.

    Raises:
        RuntimeError: the table has no such edge (a second CLOSE is checked, and refused as a
            protocol error, before it gets here).
    """
    return _follow(THEIR_TRANSITIONS, side, event, "their side")
