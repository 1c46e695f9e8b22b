"""A stored session that a restarted server loads but cannot claim (the store fails) is
still watched by expiry: it is dropped after session_ttl instead of being held forever."""

from __future__ import annotations

import functools

import trio
import trio.testing

import reliablelink
from reliablelink.stores import MemoryStore, StoreError
from tests.helpers import KEY, KEYS, echo

TTL = 10.0


class ClaimsFail(MemoryStore):
    """A MemoryStore whose claims fail while ``failing`` is set."""

    failing = False

    def _claim(self, key: str, epoch: int, tokens: tuple[bytes, bytes], expires_at: float | None) -> bool:
        if self.failing:
            raise StoreError("claims are failing")
        return super()._claim(key, epoch, tokens, expires_at)


async def test_a_loaded_session_whose_claim_fails_still_expires(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    store = ClaimsFail(clock=trio.current_time)
    url = "memory://claims-fail"
    serve = functools.partial(reliablelink.serve, echo, url, keys=KEYS, store=store, session_ttl=TTL)
    with trio.fail_after(600):
        first = trio.CancelScope()

        async def first_server(task_status: trio.TaskStatus[reliablelink.Server]) -> None:
            with first:
                await serve(task_status=task_status)

        await nursery.start(first_server)
        client_done = trio.Event()
        errors: list[BaseException] = []

        async def client(task_status: trio.TaskStatus[reliablelink.Session]) -> None:
            try:
                async with reliablelink.connect(
                    url, client_id="agent-1", key=KEY, reconnect_backoff=reliablelink.Backoff(0.5, 1.0)
                ) as session:
                    task_status.started(session)
                    await session.send(b"x")
                    await session.receive()
                    await session.receive()  # raises once the session has ended
            except reliablelink.ReliableLinkError as exc:
                errors.append(exc)
            finally:
                client_done.set()

        await nursery.start(client)
        await trio.sleep(1)
        store.failing = True
        first.cancel()  # the server restarts; the client resumes, the claim fails
        await trio.sleep(0.1)
        second: reliablelink.Server = await nursery.start(serve)
        await trio.sleep(2)
        assert list(second.sessions), "the restarted server loaded the session to resume it"
        await trio.sleep(TTL + 2)
        assert not second.sessions, "a session nobody could claim is dropped after session_ttl"
        with trio.fail_after(30):
            await client_done.wait()
        assert [type(e) for e in errors] == [reliablelink.SessionExpired], errors
