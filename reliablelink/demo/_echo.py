"""Echo demo: a client streams numbered messages to an echo server through a proxy that
keeps resetting the connection; both directions are checked against a ledger."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .._client import connect
from .._server import serve
from .._session import LinkState, Session
from ..testing import ChaosProxy, Ledger, LedgerResult, number_of, numbered


@dataclass(frozen=True)
class EchoReport:
    """What the echo run saw."""

    upstream: LedgerResult
    downstream: LedgerResult
    cuts: int
    reconnects: int
    resent: int

    @property
    def exact(self) -> bool:
        """Both directions exact."""
        return self.upstream.exact and self.downstream.exact


async def echo_with_cuts(
    *,
    messages: int = 5000,
    cuts: int = 20,
    size: int = 64,
    say: Callable[[str], None] = print,
) -> EchoReport:
    """Stream ``messages`` each way while the proxy resets the connection ``cuts`` times.

    Cuts are spread evenly over the messages sent (one after each ``messages / (cuts + 1)``).
    """
    key = os.urandom(32)
    upstream, downstream = Ledger(), Ledger()

    async def handler(session: Session) -> None:
        async for data in session:
            n = number_of(data)
            upstream.on_receive(n)
            await session.send(data)
            downstream.on_send(n)

    thresholds = [(k + 1) * messages // (cuts + 1) for k in range(cuts)]

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve, handler, "tcp://127.0.0.1:0", keys={"demo": key}))
        proxy = ChaosProxy(server.url)
        url = await nursery.start(proxy.run)
        say(f"server {server.url}, proxy {url}: {messages} messages of {size} B each way, {cuts} cuts")
        async with connect(url, client_id="demo", key=key, reconnect_backoff=(0.005, 0.1)) as session:

            async def sender() -> None:
                cut_at = set(thresholds)
                for i in range(messages):
                    if i in cut_at:
                        await cut()
                    await session.send(numbered(i, size))
                    upstream.on_send(i)

            async def receiver() -> None:
                while downstream.received < messages:
                    downstream.on_receive(number_of(await session.receive()))

            async def cut() -> None:
                # The sender pauses here, so every cut lands with messages in flight both
                # ways (sent and not yet echoed), however fast the machine is.
                while session.link_state is not LinkState.CONNECTED:
                    await session.wait_link_change()
                proxy.kill_all()
                say(
                    f"  cut {proxy.kills:>3}: sent {upstream.result().sent:>6}, echoed {downstream.received:>6}, "
                    f"in flight {session.stats.in_flight}"
                )
                await session.wait_link_change()  # the client noticed: the next cut is a new connection

            async with trio.open_nursery() as inner:
                inner.start_soon(sender)
                await receiver()
            await session.drain()
            stats = session.stats
        nursery.cancel_scope.cancel()
    return EchoReport(upstream.result(), downstream.result(), proxy.kills, stats.reconnects, stats.resent)
