"""Client keys: key files and key generation.

A key file has one ``client_id key`` pair per line; blank lines and lines starting with
``#`` are ignored. A key is hex (``hex:`` prefix optional) or base64 (``base64:`` prefix
optional; without a prefix, text that is valid hex is read as hex). Keys should be at
least 16 bytes; :func:`generate_key` makes 32.
"""

from __future__ import annotations

import binascii
import os
import secrets
from pathlib import Path

__all__ = ["generate_key", "load_key_file", "parse_key"]

MIN_KEY_BYTES = 16


def generate_key() -> bytes:
    """A new random 32-byte key."""
    return secrets.token_bytes(32)


def parse_key(text: str) -> bytes:
    """Parse one key written as hex or base64, as in a key file or ``reliablelink keygen``'s output.

    An optional ``hex:`` or ``base64:`` prefix says which; without one, text that is valid
    hex is read as hex, anything else as base64. Surrounding whitespace is ignored.

    Example: ``key = reliablelink.parse_key(os.environ["AGENT_KEY"])``.

    Raises:
        ValueError: not hex or base64, or shorter than 16 bytes.
    """
    text = text.strip()
    kind, _, body = text.partition(":")
    if not body:
        kind, body = "", text
    key: bytes | None = None
    if kind in ("", "hex"):
        try:
            key = bytes.fromhex(body)
        except ValueError:
            if kind == "hex":
                raise ValueError("not valid hex") from None
    if key is None and kind in ("", "base64"):
        try:
            key = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error:
            raise ValueError("a key must be hex or base64") from None
    if key is None:
        raise ValueError(f"unknown key encoding {kind!r} (use hex: or base64:)")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key too short: {len(key)} bytes, at least {MIN_KEY_BYTES} are needed")
    return key


def load_key_file(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Read a key file into ``{client_id: key}``.

    Raises:
        ValueError: a malformed line (its number is given; the key itself never is) or a
            client id listed twice.
    """
    keys: dict[str, bytes] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected 'client_id key'")
        client_id, text = parts
        if client_id in keys:
            raise ValueError(f"{path}:{number}: client id {client_id!r} listed twice")
        try:
            keys[client_id] = parse_key(text)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: bad key for {client_id!r}: {exc}") from None
    return keys
