"""One end of the crash-restart tests, run as a process that the test kills with SIGKILL.

``python peer.py server|client URL --db PATH | --redis URL --prefix P  --log PATH --count N``

Each end sends N messages (payload ``<role>-<seq>``), continuing after a restart from
``session.stats.sent + 1``, and appends what happens to its log with ``os.write`` on an
``O_APPEND`` descriptor (one line per event, so a SIGKILL never leaves half a line):

* ``start sent=S received=R restored=0|1 h=H``: handler H (``pid.n``) began with the
  session at its stored position;
* ``accepted SEQ h=H``: ``send()`` returned for message SEQ;
* ``got SEQ PAYLOAD h=H``: ``receive()`` returned PAYLOAD, which was message number SEQ;
* ``drained``: the client's ``drain()`` returned; it is about to close the session;
* ``done``: the client closed the session.

The test reads the logs and checks the ledger. The client exits 0 once it has sent N,
received N and closed the session; the server runs until killed.
"""

from __future__ import annotations

import argparse
import itertools
import os
from typing import Any

import trio

import reliablelink
from reliablelink.stores import RedisStore, SessionStore, SQLiteStore

# Not tests.helpers.KEY: this script runs as its own process (python peer.py), without the repo root on sys.path.
PEER_KEY = b"store-crash-test-key-0123456789!"
# Shared by serve() and connect(): the client-only options are removed for serve().
OPTIONS: dict[str, Any] = {
    "heartbeat_interval": 0.2,
    "dead_after": 0.6,
    "reconnect_backoff": (0.02, 0.2),
    "connect_timeout": 30,
}
PACE = 0.001


class Log:
    def __init__(self, path: str, tag: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.tag = tag

    def write(self, line: str) -> None:
        os.write(self.fd, f"{self.tag} {line}\n".encode())


_handlers = itertools.count(1)


async def exchange(session: reliablelink.Session, role: str, count: int, log: Log) -> None:
    stats = session.stats
    # Which handler wrote a line: on a node that lost the session to another, the old
    # handler's lines can land in the log after the new one's start line.
    h = f"h={os.getpid()}.{next(_handlers)}"
    log.write(f"start sent={stats.sent} received={stats.received} restored={int(session.restored)} {h}")

    async def push() -> None:
        for seq in range(session.stats.sent + 1, count + 1):
            await session.send(f"{role}-{seq}".encode())
            log.write(f"accepted {seq} {h}")
            await trio.sleep(PACE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(push)
        while session.stats.received < count:
            message = await session.receive()
            log.write(f"got {session.stats.received} {message.decode()} {h}")


def make_store(args: argparse.Namespace) -> SessionStore:
    if args.redis:
        return RedisStore(args.redis, prefix=args.prefix)
    return SQLiteStore(args.db)


async def run_server(args: argparse.Namespace, log: Log) -> None:
    async def handler(session: reliablelink.Session) -> None:
        await exchange(session, "server", args.count, log)
        # Keep receiving until the client closes: calling receive() again is what marks the
        # last message handled, so that it is acknowledged.
        async for _ in session:
            raise AssertionError("the client sent more than --count messages")

    options = dict(OPTIONS)
    options.pop("reconnect_backoff")
    options.pop("connect_timeout")
    store = make_store(args)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: reliablelink.serve(
                handler,
                args.url,
                keys={"agent": PEER_KEY},
                store=store,
                session_ttl=120,
                task_status=task_status,
                **options,
            )
        )
        print(f"listening {server.url}", flush=True)


async def run_client(args: argparse.Namespace, log: Log) -> None:
    store = make_store(args)
    async with reliablelink.connect(args.url, client_id="agent", key=PEER_KEY, store=store, **OPTIONS) as session:
        await exchange(session, "client", args.count, log)
        await session.drain()
        # Logged before close() deletes the session from the store: a client killed after
        # this line has finished, and a restart would rightly begin a new session.
        log.write("drained")
    log.write("done")
    print("done", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("url")
    parser.add_argument("--db")
    parser.add_argument("--redis")
    parser.add_argument("--prefix", default="test:")
    parser.add_argument("--log", required=True)
    parser.add_argument("--tag", default="")
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    log = Log(args.log, args.tag or args.role)
    trio.run(run_server if args.role == "server" else run_client, args, log)


if __name__ == "__main__":
    main()
