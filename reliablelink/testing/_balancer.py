"""A tiny TCP load balancer for tests: each connection goes to a randomly chosen backend.

For testing several server nodes that share a store: point clients at the balancer, call
:meth:`LoadBalancer.kill_all` to cut every connection, and each reconnect lands on a node
chosen at random (seeded), so sessions move between nodes.
"""

from __future__ import annotations

import random
from urllib.parse import urlsplit

import trio

from ._forward import splice

__all__ = ["LoadBalancer"]


class LoadBalancer:
    """Forward each accepted TCP connection to a random backend.

    Args:
        backends: ``tcp://host:port`` URLs of the nodes.
        listen: where to listen (port 0 picks a free one).
        seed: seed of the backend choice.

    Attributes:
        url: the bound ``tcp://`` URL once :meth:`run` has started.
        choices: the index of the backend chosen for each connection, in order.
    """

    def __init__(self, backends: list[str], listen: str = "tcp://127.0.0.1:0", *, seed: int | None = None) -> None:
        if not backends:
            raise ValueError("at least one backend is needed")
        self._backends = [urlsplit(b) for b in backends]
        self._listen = urlsplit(listen)
        self._rng = random.Random(seed)
        self._scopes: set[trio.CancelScope] = set()
        self.url = ""
        self.choices: list[int] = []
        self.pinned: int | None = None
        """Set to a backend index to send new connections there instead of at random."""

    def kill_all(self) -> int:
        """Cut every open connection (both sides); return how many were cut."""
        for scope in self._scopes:
            scope.cancel()
        return len(self._scopes)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward until cancelled; reports the bound URL."""
        listeners = await trio.open_tcp_listeners(self._listen.port or 0, host=self._listen.hostname)
        sockname = listeners[0].socket.getsockname()
        self.url = f"tcp://{sockname[0]}:{sockname[1]}"
        task_status.started(self.url)
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        index = self._rng.randrange(len(self._backends)) if self.pinned is None else self.pinned
        self.choices.append(index)
        target = self._backends[index]
        scope = trio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                try:
                    upstream = await trio.open_tcp_stream(target.hostname or "127.0.0.1", target.port or 0)
                except OSError:
                    return
                await splice(client, upstream)
        finally:
            self._scopes.discard(scope)
            await trio.aclose_forcefully(client)
