"""Redis replies come back as bytes: the one way the daemon turns them into text."""

from __future__ import annotations

from typing import Any


def text(value: Any) -> str:
    """`value` as text: bytes decoded as UTF-8 (undecodable bytes replaced), others `str()`."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode(errors="replace")
    return str(value)


def entry_field(fields: Any, name: str) -> str | None:
    """A stream entry's field as text, whether the mapping's keys are bytes or str."""
    value = fields.get(name.encode(), fields.get(name))
    return None if value is None else text(value)
