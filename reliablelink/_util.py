"""Small helpers shared by the client and the server."""

from __future__ import annotations

import contextlib
import dis
import functools
import inspect
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import trio

from ._keys import load_key_file

__all__ = ["KeyLookup", "check_handler", "collapse_exception_groups", "key_bytes", "key_lookup", "why_unreachable"]

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
    if not isinstance(keys, Mapping):
        hint = " (one key? pass keys={'client-id': key})" if isinstance(keys, bytes | bytearray) else ""
        raise TypeError(
            "keys must be a mapping {client_id: key}, a callable client_id -> key | None, or the path of a "
            f"key file; got {type(keys).__name__}{hint}"
        )
    table = {cid: key_bytes(k) for cid, k in keys.items()}
    return table.get


def check_handler(handler: object) -> None:
    """Refuse, at once, a ``serve()`` handler that cannot return an awaitable.

    Accepted: an ``async def`` function, a :func:`functools.partial` of one, an object whose
    ``__call__`` is ``async def``, and any callable that may return an awaitable (a lambda
    or a plain function that returns what an async function gave it). Refused with
    ``TypeError``: a non-callable, a generator or async generator function, and a plain
    function that can only return ``None`` (an ``async`` forgotten), which would otherwise
    fail only when the first session arrives.
    """
    if not callable(handler):
        raise TypeError(f"handler must be an async function handler(session), got {type(handler).__name__}")
    target: object = handler
    while isinstance(target, functools.partial):
        target = target.func
    if callable(target):
        with contextlib.suppress(ValueError):  # a loop of __wrapped__
            target = inspect.unwrap(target)
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        call = inspect.getattr_static(type(target), "__call__", None)
        if not inspect.isfunction(call):
            return  # a builtin, a C callable, a mock: cannot tell, trust it
        target = call
    if inspect.iscoroutinefunction(target):
        return
    function = target.__func__ if inspect.ismethod(target) else target
    name = getattr(handler, "__qualname__", None) or getattr(function, "__qualname__", repr(handler))
    if inspect.isasyncgenfunction(function) or inspect.isgeneratorfunction(function):
        kind = "an async generator" if inspect.isasyncgenfunction(function) else "a generator"
        raise TypeError(f"handler {name} is {kind} function; it must be 'async def {name}(session)' without yield")
    if _returns_only_none(function):
        raise TypeError(
            f"handler {name} is a plain function; it must be a coroutine function: "
            f"'async def {name}(session)' (serve() awaits handler(session) once per session)"
        )


def _returns_only_none(function: object) -> bool:
    """``function`` is a Python function whose every ``return`` returns ``None``."""
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    previous: dis.Instruction | None = None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "RETURN_CONST" and instruction.argval is not None:
            return False
        # A return reached by a jump may return whatever the other path left: assume a value.
        if instruction.opname == "RETURN_VALUE" and (
            instruction.is_jump_target
            or previous is None
            or previous.opname != "LOAD_CONST"
            or previous.argval is not None
        ):
            return False
        previous = instruction
    return True


def why_unreachable(exc: BaseException) -> str:
    """The root cause of a failed connection, in a few words: ``connection refused``,
    ``unknown host``, ``no answer``, or the underlying error's own message."""
    leaf: BaseException = exc
    for _ in range(64):  # a chain of causes is short; a cycle is not followed forever
        if isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
            leaf = leaf.exceptions[0]
        elif leaf.__cause__ is not None:
            leaf = leaf.__cause__
        else:
            break
    if isinstance(leaf, ConnectionRefusedError):
        return "connection refused"
    if isinstance(leaf, socket.gaierror):
        return f"unknown host: {leaf.strerror}"
    if isinstance(leaf, FileNotFoundError):
        return "no socket file there"
    if isinstance(leaf, TimeoutError | trio.TooSlowError):
        return "no answer"
    if isinstance(leaf, OSError) and leaf.strerror:
        return leaf.strerror
    return str(leaf) or type(leaf).__name__
