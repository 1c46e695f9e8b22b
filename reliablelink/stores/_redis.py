"""A session store shared by several server processes, in Redis.

Every write is a Lua script that first checks the session's fencing epoch, so a write from
a node that no longer owns the session is refused atomically. Detached sessions expire with
Redis TTLs (``PEXPIREAT``), so a crashed node leaves nothing behind for longer than the TTL.

The synchronous ``redis`` client runs in the store's worker thread (like the SQLite store):
one thread hop per batch, and a batch of changes from many sessions is one pipelined round
trip.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ._base import SessionChange, SessionRecord, SessionStore

__all__ = ["RedisStore"]

# KEYS: state, messages. ARGV: epoch, next_seq, acked, delivered, expire_ms ('' = keep),
# token ('' = keep), then seq, payload pairs.
_COMMIT = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
local old = tonumber(redis.call('HGET', KEYS[1], 'acked'))
for i = 7, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
for s = old + 1, tonumber(ARGV[3]) do redis.call('HDEL', KEYS[2], s) end
redis.call('HSET', KEYS[1], 'next_seq', ARGV[2], 'acked', ARGV[3], 'delivered', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'token', ARGV[6]) end
local exp = ARGV[5]
if exp == '' then exp = redis.call('HGET', KEYS[1], 'exp') end
if exp and exp ~= '' then
  redis.call('HSET', KEYS[1], 'exp', exp)
  redis.call('PEXPIREAT', KEYS[1], exp)
  redis.call('PEXPIREAT', KEYS[2], exp)
end
return 1
"""

# KEYS: state, messages. ARGV: epoch.
_TAKE_OVER = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'epoch', tonumber(e) + 1)
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# KEYS: state, messages. ARGV: epoch, token, prev_token, expire_ms ('' = never).
_CLAIM = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'token', ARGV[2], 'prev', ARGV[3], 'exp', ARGV[4])
if ARGV[4] ~= '' then
  redis.call('PEXPIREAT', KEYS[1], ARGV[4])
  redis.call('PEXPIREAT', KEYS[2], ARGV[4])
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return 1
"""

# KEYS: state, messages. ARGV: epoch, expire_ms ('' = delete).
_IF_EPOCH = """
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e or tonumber(e) ~= tonumber(ARGV[1]) then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('HSET', KEYS[1], 'exp', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  redis.call('PEXPIREAT', KEYS[2], ARGV[2])
end
return 1
"""

_LOAD = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""


def _ms(t: float | None) -> str:
    return "" if t is None else str(round(t * 1000))


class RedisStore(SessionStore):
    """Sessions in Redis, shared by every server node that uses the same Redis and prefix.

    A client may then resume its session on any node, without sticky sessions: the node it
    attaches to takes the session over (incrementing its fencing epoch), and the node that
    had it is refused on its next write, which ends its copy with :class:`~reliablelink.SessionMoved`.

    Needs the ``redis`` package (``pip install 'reliablelink[redis]'``).

    Args:
        url: the Redis URL, for example ``redis://localhost:6379/0``.
        prefix: key prefix, to share one Redis database between deployments.
        timeout: socket timeout for each Redis call, seconds.
        clock: wall-clock source for expiry (``time.time``).
    """

    shared = True

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        prefix: str = "reliablelink:",
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        try:
            import redis  # noqa: PLC0415 (an optional dependency)
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("RedisStore needs the redis package: pip install 'reliablelink[redis]'") from exc
        self.url = url
        self.prefix = prefix
        self._redis: Any = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._commit_script = self._redis.register_script(_COMMIT)
        self._claim_script = self._redis.register_script(_CLAIM)
        self._take_over_script = self._redis.register_script(_TAKE_OVER)
        self._if_epoch_script = self._redis.register_script(_IF_EPOCH)
        self._load_script = self._redis.register_script(_LOAD)

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r}, prefix={self.prefix!r})"

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}s:{key}", f"{self.prefix}m:{key}"]

    def _load(self, key: str, now: float) -> SessionRecord | None:
        return self._record(key, self._load_script(keys=self._keys(key)), now)

    def _take_over(self, key: str, epoch: int) -> SessionRecord | None:
        reply = self._take_over_script(keys=self._keys(key), args=[epoch])
        return None if reply == 0 else self._record(key, reply, -math.inf)

    def _record(self, key: str, reply: Any, now: float) -> SessionRecord | None:
        state_list, msg_list = reply
        if not state_list:
            return None
        state = dict(zip(state_list[::2], state_list[1::2], strict=True))
        exp = state.get(b"exp", b"")
        expires_at = int(exp) / 1000 if exp else None
        if expires_at is not None and expires_at < now:
            return None  # Redis drops it on its own
        acked = int(state[b"acked"])
        next_seq = int(state[b"next_seq"])
        unacked = sorted(
            (int(s), bytes(p)) for s, p in zip(msg_list[::2], msg_list[1::2], strict=True) if acked < int(s) < next_seq
        )
        return SessionRecord(
            key=key,
            session_id=bytes(state[b"sid"]),
            client_id=state[b"cid"].decode(),
            token=bytes(state[b"token"]),
            prev_token=bytes(state.get(b"prev", b"")),
            epoch=int(state[b"epoch"]),
            next_seq=next_seq,
            acked=acked,
            delivered=int(state[b"delivered"]),
            unacked=unacked,
            expires_at=expires_at,
        )

    def _create(self, r: SessionRecord) -> None:
        state_key, msg_key = self._keys(r.key)
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(state_key, msg_key)
        pipe.hset(
            state_key,
            mapping={
                "sid": r.session_id,
                "cid": r.client_id,
                "token": r.token,
                "prev": r.prev_token,
                "epoch": r.epoch,
                "next_seq": r.next_seq,
                "acked": r.acked,
                "delivered": r.delivered,
                "exp": _ms(r.expires_at),
            },
        )
        if r.unacked:
            pipe.hset(msg_key, mapping=dict(r.unacked))
        if r.expires_at is not None:
            pipe.pexpireat(state_key, round(r.expires_at * 1000))
            pipe.pexpireat(msg_key, round(r.expires_at * 1000))
        pipe.execute()

    def _claim(self, key: str, epoch: int, tokens: tuple[bytes, bytes], expires_at: float | None) -> bool:
        args: list[Any] = [epoch, *tokens, _ms(expires_at)]
        return bool(self._claim_script(keys=self._keys(key), args=args))

    def _commit(self, changes: Sequence[tuple[str, int, SessionChange]]) -> list[bool]:
        pipe = self._redis.pipeline(transaction=False)
        for key, epoch, c in changes:
            args: list[Any] = [epoch, c.next_seq, c.acked, c.delivered, _ms(c.expires_at), c.token or b""]
            for seq, payload in c.appended:
                args += (seq, payload)
            self._commit_script(keys=self._keys(key), args=args, client=pipe)
        return [bool(r) for r in pipe.execute()]

    def _delete(self, key: str, epoch: int) -> None:
        self._if_epoch_script(keys=self._keys(key), args=[epoch, ""])

    def _renew(self, leases: Sequence[tuple[str, int]], expires_at: float, now: float) -> None:
        if not leases:
            return
        pipe = self._redis.pipeline(transaction=False)
        for key, epoch in leases:
            self._if_epoch_script(keys=self._keys(key), args=[epoch, _ms(expires_at)], client=pipe)
        pipe.execute()

    def _close(self) -> None:
        self._redis.close()
