"""Where sessions live: in memory (the default), in SQLite (durable) or in Redis (shared);
:class:`MemoryStore` keeps them across ``serve()`` restarts within one process (tests).

Pass a store as ``store=`` to :func:`reliablelink.connect` or :func:`reliablelink.serve`::

    store = SQLiteStore("agent.db")
    async with reliablelink.connect(url, client_id="agent-1", key=key, store=store) as session:
        ...

With a store, a message counts as accepted when ``send()`` returns, and by then the store
holds it: kill the process, start it again with the same store, and the session resumes
and delivers it exactly once. See ``docs/deployment.md`` for what survives which failure.
"""

from ._base import SessionChange, SessionRecord, SessionStore, StoreError, StoreFenced
from ._memory import MemoryStore
from ._redis import RedisStore
from ._sqlite import SQLiteStore

__all__ = [
    "MemoryStore",
    "RedisStore",
    "SQLiteStore",
    "SessionChange",
    "SessionRecord",
    "SessionStore",
    "StoreError",
    "StoreFenced",
]
