"""Watches that the recorder's streams are not trimmed past entries it has not recorded.

The worker caps `rlr:results:{line}` (MAXLEN ~); while the recorder waits out a database outage
the stream goes on growing and its oldest entries go. `trim_check` compares the stream's oldest
entry with what the recorder's group has read: entries gone before they were read are lost to
the records, an error and a count, never silent; a backlog close to the stream's length is a
warning before that happens.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from daemon.wire.groups import Cmd, Op
from daemon.wire.text import text


class TrimState(NamedTuple):
    lost: int  # entries trimmed before the group read them (an estimate when Redis < 7)
    backlog: int | None  # entries not yet read by the group (None: Redis cannot say)
    length: int  # entries in the stream


def _id(value: Any) -> tuple[int, int]:
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)


def trim_check(key: str, group: str) -> Op[TrimState]:
    """The state of stream `key` for consumer group `group`."""
    info = yield Cmd("xinfo_stream", (key,))
    groups = yield Cmd("xinfo_groups", (key,))
    mine = next((g for g in groups if text(g["name"]) == group), None)
    length = int(info.get("length") or 0)
    first = info.get("first-entry")
    if mine is None or not first:
        return TrimState(0, None, length)
    lag = mine.get("lag")
    delivered = _id(mine.get("last-delivered-id"))
    deleted = info.get("max-deleted-entry-id")  # Redis 7: the newest entry trimmed or deleted
    if deleted is not None:
        gone = _id(deleted) > delivered
    else:  # Redis 6: only a gap between what the group read and the oldest entry shows it
        gone = delivered != (0, 0) and delivered < _id(first[0]) and \
            (delivered[0], delivered[1] + 1) != _id(first[0])
    lost = 0
    if gone:
        added, read = info.get("entries-added"), mine.get("entries-read")
        lost = 1  # at least one; Redis 7 counts how many when it can
        if added is not None and read is not None:
            lost = max(int(added) - int(read) - length, 1)
    return TrimState(lost, None if lag is None else int(lag), length)

