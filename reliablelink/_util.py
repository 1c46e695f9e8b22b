"""Small helpers shared by the client and the server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import trio

from ._keys import load_key_file

__all__ = ["KeyLookup", "collapse_exception_groups", "key_bytes", "key_lookup"]

KeyLookup = Callable[[str], "bytes | str | None"]


@contextmanager
def collapse_exception_groups() -> Iterator[None]:
    """Re-raise a nursery's exception group as its one real exception.

    A nursery wraps everything in an ``ExceptionGroup``; callers of ``connect``/``serve``
    should see ``AuthenticationError``, not a group holding it (trio-websocket #184, #187).
    Groups with several real errors pass through unchanged.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            single = real[0]
        elif not real and leaves:
            single = leaves[0]
        else:
            raise
        raise single from single.__cause__


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def key_bytes(key: bytes | str) -> bytes:
    """Accept a key as bytes, or as text taken as UTF-8."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes) or not key:
        raise ValueError("key must be non-empty bytes or str")
    return key


def key_lookup(keys: Mapping[str, bytes | str] | KeyLookup | str | os.PathLike[str]) -> Callable[[str], bytes | None]:
    """Turn the ``keys`` argument of ``serve`` into a ``client_id -> key | None`` function.

    A mapping is copied (later changes to it are not seen; pass a callable for that); a
    path is read as a key file (see :func:`reliablelink.load_key_file`).
    """
    if isinstance(keys, str | os.PathLike):
        keys = load_key_file(keys)
    if callable(keys):
        lookup = keys

        def checked(client_id: str) -> bytes | None:
            key = lookup(client_id)
            return None if key is None else key_bytes(key)

        return checked
    table = {cid: key_bytes(k) for cid, k in keys.items()}
    return table.get
