"""Deprecated fault names: one place that maps them to the shared vocabulary and warns.

The testing tools used three vocabularies for the same faults; they now share one (see
``docs/chaos.md``, "One vocabulary for faults"). The old names keep working for one release.
"""

from __future__ import annotations

import warnings

__all__ = ["KIND_RENAMES", "TOXIC_DIRECTION_RENAMES", "TOXIC_RENAMES", "warn_renamed"]

#: ``Toxics`` fields (and ``--toxic`` names), old -> new.
TOXIC_RENAMES = {
    "slice_size": "segment",
    "blackhole_up": "blackhole_to_server",
    "blackhole_down": "blackhole_to_client",
}
#: Directions of ``--toxic blackhole=...``, old -> new.
TOXIC_DIRECTION_RENAMES = {"up": "to_server", "down": "to_client"}
#: Fault schedule kinds, old -> new.
KIND_RENAMES = {
    "pull": "blackhole",
    "pull_to_server": "blackhole_to_server",
    "pull_to_client": "blackhole_to_client",
    "drop_after": "reset_after",
}


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Emit the ``DeprecationWarning`` for a renamed fault name.

    Args:
        old: the deprecated name, as the caller wrote it.
        new: the name to use instead.
        stacklevel: passed to :func:`warnings.warn` (3: the caller of the function that warns).
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
