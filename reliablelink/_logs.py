"""One way to write a log line about a session: stable ``key=value`` fields, also in ``extra``.

Every line about a session (or a connection that may become one) reads
``<event> session=<id> client=<client id> peer=<address> [key=value ...]`` and carries the
same three values as ``record.session_id``, ``record.client_id`` and ``record.peer`` (for a
structured formatter). ``-`` stands for what is not known yet (no session before the
handshake). A value with spaces, quotes, ``=`` or control characters is written quoted and
escaped (JSON style), so a client id chosen by an unauthenticated peer cannot forge fields
or lines. Never pass a key or a resume token here: nothing in the library does.
"""

from __future__ import annotations

import json
import logging
import re

__all__ = ["session_log"]

_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+\-\[\]]+")


def _value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def session_log(
    logger: logging.Logger,
    level: int,
    event: str,
    *,
    session: str = "",
    client: str = "",
    peer: str = "",
    exc_info: bool = False,
    stacklevel: int = 1,
    **fields: object,
) -> None:
    """Log ``event`` with the session's id, client id and peer address, then ``fields``.

    Args:
        logger: where to log.
        level: the level (nothing is formatted when it is disabled).
        event: what happened, a few fixed words (``session opened``, ``link lost``...).
        session: the session id (hex), or ``""`` for none yet.
        client: the client id, or ``""`` for none yet.
        peer: the peer's address, or ``""`` if unknown.
        exc_info: attach the exception being handled.
        stacklevel: as for :meth:`logging.Logger.log`, counted from the caller (2 from a
            wrapper, so the record names the wrapper's caller).
        **fields: more ``key=value`` pairs, in order (``reason=...``, ``offline=1.234``).
    """
    if not logger.isEnabledFor(level):
        return
    session, client, peer = session or "-", client or "-", peer or "-"
    parts = [event, f"session={session}", f"client={_value(client)}", f"peer={_value(peer)}"]
    parts += [f"{key}={_value(value)}" for key, value in fields.items()]
    logger.log(
        level,
        " ".join(parts),
        exc_info=exc_info,
        extra={"session_id": session, "client_id": client, "peer": peer},
        stacklevel=stacklevel + 1,
    )
