"""One end of the cable-pull tests, run inside a network namespace by tests/netns.

``python peer.py server HOST:PORT COUNT`` or ``python peer.py client HOST:PORT COUNT``.
Each end sends COUNT numbered messages, paced so that traffic flows for several seconds,
and receives COUNT from the other end; it prints progress, link changes and, at the end,
its ledger line. Exit status 0 only if its ledger is exact.

For the server-restart test, the options make the ends keep their own records in files,
which the test reads and checks itself (the ends' output is only a report):

* ``server ... --store DB --effects PATH --skips PATH``: the server keeps its sessions in
  ``SQLiteStore(DB)`` and applies each message from the client once: it appends
  ``SEQ NUMBER DIGEST`` to the effects file (``os.write`` on an ``O_APPEND`` descriptor, one
  line per message, so a SIGKILL never leaves half a line). A (re)started server reads the
  last applied sequence number from that file and skips every message at or below it,
  appending it to the skips file instead: the exactly-once recipe of docs/deployment.md for
  the messages redelivered after a crash. A restored session's handler goes on sending from
  ``session.stats.sent``. SIGTERM stops the server gracefully (the serve() nursery is
  cancelled); it prints ``session SID restored=0|1 sent=S received=R applied=A`` when a
  session's handler starts.
* ``client ... --received PATH``: the client appends ``NUMBER DIGEST`` for each message
  it receives. It prints ``connected session=SID`` and, if the session ends with an error,
  ``session error TYPE: MESSAGE``.

Messages of these runs carry a payload derived from their number (:func:`payload`), so a
message is known by its content, not only its number.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import signal
import sys
from typing import Any

import trio

import reliablelink
from reliablelink.stores import SQLiteStore
from reliablelink.testing import Ledger, number_of, numbered

# Not tests.helpers.KEY: this script runs as its own process (python peer.py), without the repo root on sys.path.
PEER_KEY = b"netns-test-key-0123456789abcdef!"
OPTIONS: dict[str, Any] = {"heartbeat_interval": 0.5, "dead_after": 1.5}
PACE = 0.004  # seconds between messages: COUNT=2000 flows for about 8 s each way


def say(*parts: object) -> None:
    print(*parts, flush=True)


def payload(role: str, n: int) -> bytes:
    """Message ``n`` from ``role`` (200 bytes): its number, then bytes derived from both."""
    return numbered(n, 8) + hashlib.sha256(f"{role}-{n}".encode()).digest() * 6


def digest(message: bytes) -> str:
    return hashlib.sha256(message).hexdigest()[:16]


class AppendLog:
    """Lines appended with one ``os.write`` each on an ``O_APPEND`` descriptor."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        os.write(self.fd, f"{line}\n".encode())


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
                reliablelink.serve, handler, f"tcp://{host}:{port}", keys={"peer": PEER_KEY}, session_ttl=60, **OPTIONS
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
        f"tcp://{address}", client_id="peer", key=PEER_KEY, connect_timeout=20, reconnect_backoff=(0.05, 0.5), **OPTIONS
    ) as session:
        say("connected")
        received = await exchange(session, count, "client")
    result = received.result()
    return 0 if result.exact else 1


# -- the server-restart test --------------------------------------------------------------


async def watch_and_report(session: reliablelink.Session, counts: dict[str, int]) -> None:
    async def watch() -> None:
        state = session.link_state
        while state is not reliablelink.LinkState.CLOSED:
            state = await session.wait_link_change()
            say(f"link {state.value} at {trio.current_time():.3f}")

    async def report() -> None:
        while True:
            say(f"progress sent={counts['sent']} received={counts['received']}")
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report)
        await watch()
        nursery.cancel_scope.cancel()


def last_applied(path: str) -> int:
    """The highest sequence number in the effects file (0 if there is none yet)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return 0
    return int(lines[-1].split()[0]) if lines else 0


async def durable_server(address: str, count: int, args: argparse.Namespace) -> int:
    host, port = address.rsplit(":", 1)
    effects, skips = AppendLog(args.effects), AppendLog(args.skips)
    applied = last_applied(args.effects)
    done = trio.Event()  # the session's handler ended
    completed = False  # ... after sending and applying everything
    stopped = False  # by SIGTERM

    async def handler(session: reliablelink.Session) -> None:
        try:
            await apply_and_send(session)
        except Exception as exc:
            say(f"handler ended: {exc!r}")
            raise
        finally:
            done.set()

    async def apply_and_send(session: reliablelink.Session) -> None:
        nonlocal applied, completed
        stats = session.stats
        say(
            f"session {session.session_id} restored={int(session.restored)} "
            f"sent={stats.sent} received={stats.received} applied={applied}"
        )
        counts = {"sent": stats.sent, "received": stats.received}

        async def push() -> None:
            for i in range(session.stats.sent, count):
                await session.send(payload("server", i))
                counts["sent"] = i + 1
                await trio.sleep(PACE)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_and_report, session, counts)
            async with trio.open_nursery() as traffic:
                traffic.start_soon(push)
                while session.stats.received < count:
                    message = await session.receive()
                    seq = session.stats.received  # the number of the message just received
                    counts["received"] = seq
                    line = f"{seq} {number_of(message)} {digest(message)}"
                    if number_of(message) != seq - 1:  # fail fast; the test checks the files
                        raise AssertionError(f"message {seq} is the client's number {number_of(message)}")
                    if seq <= applied:
                        skips.write(line)  # redelivered after a crash: its effect is there
                        say(f"skipped {line}")
                        continue
                    effects.write(line)
                    applied = seq
            await session.drain()
            nursery.cancel_scope.cancel()
        say(f"stats {session.stats}")
        await session.aclose()
        completed = True

    async def stop_on_sigterm(cancel_scope: trio.CancelScope) -> None:
        nonlocal stopped
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                say("SIGTERM: stopping")
                stopped = True
                cancel_scope.cancel()

    store = SQLiteStore(args.store)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_sigterm, nursery.cancel_scope)
        srv = await nursery.start(
            functools.partial(
                reliablelink.serve,
                handler,
                f"tcp://{host}:{port}",
                keys={"peer": PEER_KEY},
                store=store,
                session_ttl=60,
                **OPTIONS,
            )
        )
        say(f"listening {srv.url}")
        await done.wait()
        await trio.sleep(0.5)  # the session was closed: let the server drop its stored copy
        nursery.cancel_scope.cancel()
    say("finished" if completed else "stopped" if stopped else "failed")
    return 0 if completed or stopped else 1


async def recording_client(address: str, count: int, args: argparse.Namespace) -> int:
    received = AppendLog(args.received)
    try:
        async with reliablelink.connect(
            f"tcp://{address}",
            client_id="peer",
            key=PEER_KEY,
            connect_timeout=20,
            reconnect_backoff=(0.05, 0.5),
            **OPTIONS,
        ) as session:
            say(f"connected session={session.session_id}")
            counts = {"sent": 0, "received": 0}

            async def push() -> None:
                for i in range(count):
                    await session.send(payload("client", i))
                    counts["sent"] = i + 1
                    await trio.sleep(PACE)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_and_report, session, counts)
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(push)
                    for expected in range(count):
                        message = await session.receive()
                        received.write(f"{number_of(message)} {digest(message)}")
                        counts["received"] += 1
                        if number_of(message) != expected:  # fail fast; the test checks the file
                            raise AssertionError(f"got message {number_of(message)}, expected {expected}")
                await session.drain()
                nursery.cancel_scope.cancel()
            say(f"stats {session.stats}")
    except Exception as exc:  # SessionExpired, or an exception group from the nurseries
        say(f"session error {type(exc).__name__}: {exc!r}")
        return 1
    say("closed")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("count", type=int)
    parser.add_argument("--store", help="server: keep sessions in this SQLite file")
    parser.add_argument("--effects", help="server with --store: the applied messages")
    parser.add_argument("--skips", help="server with --store: the redelivered messages it skipped")
    parser.add_argument("--received", help="client: record each received message here")
    args = parser.parse_args()
    if args.role == "server" and args.store:
        return trio.run(durable_server, args.address, args.count, args)
    if args.role == "client" and args.received:
        return trio.run(recording_client, args.address, args.count, args)
    # The receiving side's ledger only knows what arrived; "sent" is the peer's count.
    return trio.run(server if args.role == "server" else client, args.address, args.count)


if __name__ == "__main__":
    sys.exit(main())
