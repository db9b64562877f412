"""The one grammar of identifiers: camera, line, class, part, view and recipe names.

An id is 1 to 128 bytes of UTF-8 text with no whitespace, no control characters, no format
characters (bidi overrides, zero-width joiners), no private-use, surrogate or unassigned code
points. Everything else is allowed (`SN-40122`, `Kamera-Süd`, `top:left`, `部品7`): a sink
whose syntax gives some printable character a meaning (a ':' in a Redis key, a '/' in an MQTT
topic, a '.' in an OPC UA browse path) encodes ids for itself, it never relies on them being
tame. `check` raises `BadId` naming the kind, the value and what is wrong with it.
"""

from __future__ import annotations

import unicodedata

MAX_BYTES = 128
KINDS = ("camera", "line", "class", "part", "view", "recipe", "product", "model")
# Unicode general categories an id may not hold: controls, format characters, surrogates,
# private use, unassigned; separators (spaces, line and paragraph separators)
_REFUSED = {"Cc": "a control character", "Cf": "a format character (bidi or zero-width)",
            "Cs": "a surrogate", "Co": "a private-use character",
            "Cn": "an unassigned code point", "Zs": "whitespace", "Zl": "a line separator",
            "Zp": "a paragraph separator"}


class BadId(ValueError):
    """An id outside the grammar; the message says which and why."""

    def __init__(self, kind: str, value: object, why: str) -> None:
        super().__init__(f"{kind} id {value!r} {why}")
        self.kind, self.why = kind, why


def problem(value: str) -> str | None:
    """What makes `value` not an id, or None when it is one."""
    if not value:
        return "is empty"
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        return f"is {size} bytes of UTF-8; the limit is {MAX_BYTES}"
    for ch in value:
        if ch in "\t\n\r\v\f":
            return f"holds whitespace (U+{ord(ch):04X})"
        what = _REFUSED.get(unicodedata.category(ch))
        if what is not None:
            return f"holds {what} (U+{ord(ch):04X})"
    return None


def check(kind: str, value: object) -> str:
    """`value` when it is an id; `BadId` otherwise (bytes must be UTF-8)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            raise BadId(kind, value, "is not UTF-8 text") from None
    if not isinstance(value, str):
        raise BadId(kind, value, "is not text")
    why = problem(value)
    if why is not None:
        raise BadId(kind, value, why)
    return value


def is_id(value: object) -> bool:
    return isinstance(value, str) and problem(value) is None


def key_part(value: str) -> str:
    """`value` as one segment of a Redis key: length-prefixed, so an id holding ':' can never
    read as two segments (`cam:x` + `1` and `cam` + `x:1` stay apart)."""
    return f"{len(value)}:{value}"
