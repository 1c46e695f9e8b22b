"""``reliablelink echo-demo``: a client streams numbered messages to an echo server through
a proxy that keeps resetting the connection; both directions are checked against a ledger."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .. import LinkState, Session, connect, serve
from ..testing import ChaosProxy, Ledger, LedgerResult, number_of, numbered

__all__ = ["EchoReport", "echo_with_cuts"]


@dataclass(frozen=True)
class EchoReport:
    """What the echo run saw.

    Attributes:
        upstream: client -> server.
        downstream: server -> client (the echoes).
        cuts: connections the proxy reset.
        reconnects: the client's reconnects.
        resent: messages the client resent after reconnects.
    """

    upstream: LedgerResult
    downstream: LedgerResult
    cuts: int
    reconnects: int
    resent: int

    @property
    def exact(self) -> bool:
        """Both directions exact."""
        return self.upstream.exact and self.downstream.exact


class _EchoRun:
    """One run: the client side's sender, receiver and cutter share this state."""

    def __init__(self, messages: int, cuts: int, size: int, say: Callable[[str], None]) -> None:
        self.messages, self.size, self.say = messages, size, say
        self.cut_at = {(k + 1) * messages // (cuts + 1) for k in range(cuts)}
        self.upstream, self.downstream = Ledger(), Ledger()
        self.echoed = trio.lowlevel.ParkingLot()

    async def handler(self, session: Session) -> None:
        """Server side: echo every message."""
        async for data in session:
            n = number_of(data)
            self.upstream.on_receive(n)
            await session.send(data)
            self.downstream.on_send(n)

    async def sender(self, session: Session, proxy: ChaosProxy) -> None:
        for i in range(self.messages):
            if i in self.cut_at:
                await self.cut(session, proxy)
            await session.send(numbered(i, self.size))
            self.upstream.on_send(i)

    async def receiver(self, session: Session) -> None:
        while self.downstream.received < self.messages:
            self.downstream.on_receive(number_of(await session.receive()))
            self.echoed.unpark_all()

    async def cut(self, session: Session, proxy: ChaosProxy) -> None:
        # The sender pauses here, so every cut lands with messages in flight both ways
        # (sent and not yet echoed), however fast the machine is; and only once the new
        # connection has carried echoes, so each connection works before it dies.
        while session.link_state is not LinkState.CONNECTED:
            await session.wait_link_change()
        before = self.downstream.received
        while self.downstream.received == before and session.stats.in_flight:
            await self.echoed.park()
        proxy.kill_all()
        self.say(
            f"  cut {proxy.kills:>3}: sent {self.upstream.result().sent:>6}, "
            f"echoed {self.downstream.received:>6}, in flight {session.stats.in_flight}"
        )
        await session.wait_link_change()  # the client noticed: the next cut is a new connection


async def echo_with_cuts(
    *,
    messages: int = 5000,
    cuts: int = 30,
    size: int = 64,
    say: Callable[[str], None] = print,
) -> EchoReport:
    """Stream ``messages`` each way while the proxy resets the connection ``cuts`` times.

    Cuts are spread evenly over the messages sent (one after each ``messages / (cuts + 1)``),
    each once the current connection has carried some echoes.
    """
    key = os.urandom(32)
    run = _EchoRun(messages, cuts, size, say)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve, run.handler, "tcp://127.0.0.1:0", keys={"demo": key}))
        proxy = ChaosProxy(server.url)
        url = await nursery.start(proxy.run)
        say(f"server {server.url}, proxy {url}: {messages} messages of {size} B each way, {cuts} cuts")
        async with connect(url, client_id="demo", key=key, reconnect_backoff=(0.005, 0.1)) as session:
            async with trio.open_nursery() as inner:
                inner.start_soon(run.sender, session, proxy)
                await run.receiver(session)
            await session.drain()
            stats = session.stats
        nursery.cancel_scope.cancel()
    return EchoReport(run.upstream.result(), run.downstream.result(), proxy.kills, stats.reconnects, stats.resent)
