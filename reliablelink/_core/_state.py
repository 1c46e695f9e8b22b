"""The session state machine: every state and every transition, in one table.

A session outlives its connections. It is *attached* while a connection carries it and
*detached* between connections; ``close`` and ``expire`` end it. Like h11's ``_state.py``,
this module is the single place that says which transitions exist, so the protocol
specification can be checked against it (``docs/protocol.md`` draws the same table).
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "SessionState", "Transition", "next_state"]


class SessionState(enum.Enum):
    """Life cycle of a session."""

    NEW = "new"  # created, never attached
    ATTACHED = "attached"  # a connection carries it
    DETACHED = "detached"  # between connections; messages wait, nothing is lost
    CLOSING = "closing"  # one side sent CLOSE, waiting for the other's
    CLOSED = "closed"  # both CLOSEs exchanged, or closed locally: final
    EXPIRED = "expired"  # the server forgot it (detached longer than session_ttl): final
    FAILED = "failed"  # an unrecoverable error (for example the peer lost its state): final


class Transition(enum.Enum):
    """What moves a session from one state to another."""

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


def next_state(state: SessionState, transition: Transition) -> SessionState:
    """Return the state after ``transition``; ``RuntimeError`` if the table has no such edge."""
    try:
        return TRANSITIONS[(state, transition)]
    except KeyError:
        raise RuntimeError(f"invalid session transition {transition.value!r} in state {state.value!r}") from None
