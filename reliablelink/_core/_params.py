"""Link parameters: what each end proposes and how the two proposals become one.

Where both ends state a heartbeat, ``dead_after``, a size limit or a window, the smaller
wins; the server then applies a floor to the heartbeat so that a hostile client cannot
propose a 1 ms heartbeat and make the server ping it a thousand times a second.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .._errors import ProtocolError

__all__ = ["LinkParams", "negotiate"]

_WIRE = struct.Struct(">IIIIQ")
WIRE_SIZE = _WIRE.size

#: Floor the server applies to the heartbeat a client proposes.
MIN_HEARTBEAT_INTERVAL = 0.05
#: Largest values the wire format can carry (and far beyond any sane setting).
MAX_U32 = 2**32 - 1


@dataclass(frozen=True, slots=True)
class LinkParams:
    """Parameters of one attached link, in seconds and bytes.

    Attributes:
        heartbeat_interval: send a PING when nothing was sent for this long.
        dead_after: declare the link dead when nothing was received for this long.
        max_message_size: largest message payload.
        max_inflight: most messages sent and not yet acknowledged.
        max_inflight_bytes: most payload bytes sent and not yet acknowledged.
    """

    heartbeat_interval: float = 3.0
    dead_after: float = 9.0
    max_message_size: int = 1024 * 1024
    max_inflight: int = 4096
    max_inflight_bytes: int = 8 * 1024 * 1024

    def validate(self) -> LinkParams:
        """Raise ``ValueError`` if a value is out of range; return ``self``."""
        if not 0 < self.heartbeat_interval < MAX_U32 / 1000:
            raise ValueError(f"heartbeat_interval must be > 0 seconds, got {self.heartbeat_interval}")
        if not self.heartbeat_interval < self.dead_after < MAX_U32 / 1000:
            raise ValueError(
                f"dead_after ({self.dead_after}) must be longer than heartbeat_interval ({self.heartbeat_interval})"
            )
        if not 0 < self.max_message_size <= MAX_U32 - 64:
            raise ValueError(f"max_message_size must be between 1 and {MAX_U32 - 64}, got {self.max_message_size}")
        if not 0 < self.max_inflight <= MAX_U32:
            raise ValueError(f"max_inflight must be between 1 and {MAX_U32}, got {self.max_inflight}")
        if self.max_inflight_bytes <= 0:
            raise ValueError(f"max_inflight_bytes must be > 0, got {self.max_inflight_bytes}")
        return self

    def encode(self) -> bytes:
        """Wire form (milliseconds for times)."""
        return _WIRE.pack(
            _ms(self.heartbeat_interval),
            _ms(self.dead_after),
            self.max_message_size,
            self.max_inflight,
            min(self.max_inflight_bytes, 2**64 - 1),
        )

    @classmethod
    def decode(cls, data: bytes, offset: int = 0) -> LinkParams:
        """Parse the wire form; values are not yet capped (see :func:`negotiate`)."""
        try:
            hb, dead, size, inflight, inflight_bytes = _WIRE.unpack_from(data, offset)
        except struct.error as exc:
            raise ProtocolError("truncated link parameters") from exc
        return cls(hb / 1000, dead / 1000, size, inflight, inflight_bytes)


def _ms(seconds: float) -> int:
    return max(1, min(MAX_U32, round(seconds * 1000)))


def negotiate(proposed: LinkParams, local: LinkParams) -> LinkParams:
    """Combine a peer's proposal with our own settings: the smaller wins.

    Only timing has a floor: a tiny heartbeat would make *us* work hard. Tiny sizes or
    windows only slow down the client that asked for them, so they are granted as asked
    (a client must never be handed more than it proposed).
    """
    heartbeat = max(MIN_HEARTBEAT_INTERVAL, min(proposed.heartbeat_interval, local.heartbeat_interval))
    dead_after = max(2 * heartbeat, min(proposed.dead_after, local.dead_after))
    size = max(1, min(proposed.max_message_size, local.max_message_size))
    inflight = max(1, min(proposed.max_inflight, local.max_inflight))
    inflight_bytes = max(1, min(proposed.max_inflight_bytes, local.max_inflight_bytes))
    return LinkParams(heartbeat, dead_after, size, inflight, inflight_bytes)
