"""One end of the cable-pull test, run inside a network namespace by tests/netns.

``python peer.py server HOST:PORT COUNT`` or ``python peer.py client HOST:PORT COUNT``.
Each end sends COUNT numbered messages, paced so that traffic flows for several seconds,
and receives COUNT from the other end; it prints progress, link changes and, at the end,
its ledger line. Exit status 0 only if its ledger is exact.
"""

from __future__ import annotations

import functools
import sys

import trio

import reliablelink
from reliablelink.testing import Ledger, number_of, numbered

KEY = b"netns-test-key-0123456789abcdef!"
OPTIONS = {"heartbeat_interval": 0.5, "dead_after": 1.5}
PACE = 0.004  # seconds between messages: COUNT=2000 flows for about 8 s each way


def say(*parts: object) -> None:
    print(*parts, flush=True)


async def exchange(session: reliablelink.Session, count: int, label: str) -> Ledger:
    ledger = Ledger()
    received = Ledger(sent=set(range(count)))  # what the peer sends

    async def push() -> None:
        for i in range(count):
            await session.send(numbered(i, 200))
            ledger.on_send(i)
            await trio.sleep(PACE)

    async def watch() -> None:
        while True:
            state = await session.wait_link_change()
            say(f"link {state.value} at {trio.current_time():.3f}")

    async def report() -> None:
        while True:
            say(f"progress sent={len(ledger.sent)} received={received.received}")
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        nursery.start_soon(report)
        async with trio.open_nursery() as traffic:
            traffic.start_soon(push)
            while received.received < count:
                received.on_receive(number_of(await session.receive()))
        await session.drain()
        nursery.cancel_scope.cancel()
    result = received.result()
    say(result.line(f"{label} received"), f"(peer sent {count})")
    say(f"stats {session.stats}")
    return received


async def server(address: str, count: int) -> int:
    host, port = address.rsplit(":", 1)
    done = trio.Event()
    results: list[Ledger] = []

    async def handler(session: reliablelink.Session) -> None:
        results.append(await exchange(session, count, "server"))
        done.set()

    async with trio.open_nursery() as nursery:
        srv = await nursery.start(
            functools.partial(
                reliablelink.serve, handler, f"tcp://{host}:{port}", keys={"peer": KEY}, session_ttl=60, **OPTIONS
            )
        )
        say(f"listening {srv.url}")
        await done.wait()
        await trio.sleep(1)  # let the client finish draining before the process goes
        nursery.cancel_scope.cancel()
    ok = results and results[0].result().exact and results[0].result().sent == count
    return 0 if ok else 1


async def client(address: str, count: int) -> int:
    async with reliablelink.connect(
        f"tcp://{address}", client_id="peer", key=KEY, connect_timeout=20, reconnect_backoff=(0.05, 0.5), **OPTIONS
    ) as session:
        say("connected")
        received = await exchange(session, count, "client")
    result = received.result()
    return 0 if result.exact else 1


def main() -> int:
    role, address, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # The receiving side's ledger only knows what arrived; "sent" is the peer's count.
    return trio.run(server if role == "server" else client, address, count)


if __name__ == "__main__":
    sys.exit(main())
