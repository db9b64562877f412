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
    delivered, first_id = _id(mine.get("last-delivered-id")), _id(first[0])
    added, read = info.get("entries-added"), mine.get("entries-read")
    lost = 0
    if delivered < first_id:
        if added is not None and read is not None:
            # Redis 7 counts: what was added, less what the group read, less what is left
            lost = max(int(added) - int(read) - length, 0)
        elif delivered != (0, 0) and (delivered[0], delivered[1] + 1) != first_id:
            lost = 1  # Redis 6: a gap shows that something went, not how much
    deleted = info.get("max-deleted-entry-id")  # XDEL (not trimming) of unread entries
    if not lost and deleted is not None and _id(deleted) > delivered:
        lost = 1
    return TrimState(lost, None if lag is None else int(lag), length)

