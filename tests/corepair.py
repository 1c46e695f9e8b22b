"""Two sans-I/O cores wired together by hand, for unit and property tests."""

from __future__ import annotations

from reliablelink._core import ClientHandshake, LinkParams, ServerHandshake, SessionCore, new_session_id, new_token
from tests.helpers import KEY


def handshake(params: LinkParams | None = None) -> tuple[ClientHandshake, ServerHandshake]:
    """Run a full handshake between fresh ends; return both (completed)."""
    p = params or LinkParams()
    client = ClientHandshake("agent-1", KEY, p)
    server = ServerHandshake(p)
    assert server.receive_data(client.data_to_send()) == "agent-1"
    server.set_key(KEY)
    assert client.receive_data(server.data_to_send()) is None
    req = server.receive_data(client.data_to_send())
    assert req is not None and not isinstance(req, str)
    server.accept(new_session_id(), new_token(), 0, resumed=False, session_ttl=60)
    assert client.receive_data(server.data_to_send()) is not None
    return client, server


def attached_pair(params: LinkParams | None = None, now: float = 0.0) -> tuple[SessionCore, SessionCore]:
    """Two cores attached to each other with nothing in flight."""
    p = params or LinkParams()
    a, b = SessionCore(p), SessionCore(p)
    reattach(a, b, now)
    return a, b


def reattach(a: SessionCore, b: SessionCore, now: float = 0.0) -> None:
    """Detach both (dropping whatever was on the wire) and attach them again, as a reconnect does."""
    a.detach()
    b.detach()
    a_received, b_received = a.received, b.received
    a.attach(a.params, b_received, now)
    b.attach(b.params, a_received, now)


def pump(a: SessionCore, b: SessionCore, now: float = 0.0) -> None:
    """Move bytes both ways until neither side has anything to send."""
    while a.has_data_to_send() or b.has_data_to_send():
        data = bytes(a.data_to_send(now))
        if data:
            b.receive_data(data, now)
        data = bytes(b.data_to_send(now))
        if data:
            a.receive_data(data, now)


def drain_inbox(core: SessionCore) -> list[bytes]:
    """Deliver everything received to the 'application'."""
    out = []
    while core.inbox:
        out.append(core.take())
    return out
