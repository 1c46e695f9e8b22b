"""A ledger of messages sent and received, classified the way Jepsen's queue checker does."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

__all__ = ["Ledger", "LedgerResult", "number_of", "numbered"]

_COUNTER = struct.Struct(">Q")


def numbered(n: int, size: int = 16) -> bytes:
    """A test message of ``size`` bytes (at least 8) that starts with its number ``n``."""
    return _COUNTER.pack(n) + bytes(max(0, size - 8))


def number_of(message: bytes) -> int:
    """The number a :func:`numbered` message starts with."""
    value: int = _COUNTER.unpack_from(message)[0]
    return value


@dataclass(frozen=True, slots=True)
class LedgerResult:
    """Classification of one direction of traffic.

    Attributes:
        sent: messages the sender's ``send`` accepted.
        delivered: distinct messages received.
        lost: accepted but never received.
        duplicated: received more than once (extra copies).
        reordered: received after a higher-numbered message.
        unexpected: received but never sent.
    """

    sent: int
    delivered: int
    lost: int
    duplicated: int
    reordered: int
    unexpected: int

    @property
    def exact(self) -> bool:
        """Every message sent arrived exactly once and in order."""
        return (self.lost, self.duplicated, self.reordered, self.unexpected) == (0, 0, 0, 0) and (
            self.delivered == self.sent
        )

    def line(self, name: str = "ledger") -> str:
        """``ledger: sent N, delivered N, lost 0, duplicated 0, reordered 0``."""
        extra = f", unexpected {self.unexpected}" if self.unexpected else ""
        return (
            f"{name}: sent {self.sent}, delivered {self.delivered}, lost {self.lost}, "
            f"duplicated {self.duplicated}, reordered {self.reordered}{extra}"
        )


@dataclass
class Ledger:
    """Record message numbers as they are sent and received; :meth:`result` classifies them.

    Numbers are whatever the test uses to name messages (:func:`numbered` writes them into
    the payload). Memory is one set entry per message.
    """

    sent: set[int] = field(default_factory=set)
    _seen: set[int] = field(default_factory=set)
    _duplicated: int = 0
    _reordered: int = 0
    _unexpected: int = 0
    _highest: int = -1

    def on_send(self, n: int) -> None:
        """``send`` accepted message ``n``."""
        self.sent.add(n)

    def on_receive(self, n: int) -> None:
        """Message ``n`` was received."""
        if n not in self.sent:
            self._unexpected += 1
        if n in self._seen:
            self._duplicated += 1
            return
        self._seen.add(n)
        if n < self._highest:
            self._reordered += 1
        self._highest = max(self._highest, n)

    @property
    def received(self) -> int:
        """Distinct messages received so far."""
        return len(self._seen)

    def result(self) -> LedgerResult:
        """Classify everything recorded so far."""
        return LedgerResult(
            sent=len(self.sent),
            delivered=len(self._seen & self.sent),
            lost=len(self.sent - self._seen),
            duplicated=self._duplicated,
            reordered=self._reordered,
            unexpected=self._unexpected,
        )
