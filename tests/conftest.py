"""Shared fixtures. Helpers live in ``tests/helpers.py``: import them from there."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import reliablelink
from tests.helpers import Handler, RunServer, echo, start_server


@pytest.fixture
def run_server(nursery: trio.Nursery) -> RunServer:
    """``await run_server(handler=echo, url="memory://", **options)`` starts ``serve`` with
    the test keys in pytest-trio's ``nursery``, where it runs until the test ends."""

    async def run(handler: Handler = echo, url: str = "memory://", **options: Any) -> reliablelink.Server:
        return await start_server(nursery, handler, url, **options)

    return run
