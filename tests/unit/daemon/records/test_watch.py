from __future__ import annotations

from daemon.records.watch import TrimState, trim_check
from daemon.wire.groups import run_sync


class FakeRedis:
    def __init__(self, stream: dict, groups: list[dict]) -> None:
        self.stream, self.groups = stream, groups

    def xinfo_stream(self, key):
        return self.stream

    def xinfo_groups(self, key):
        return self.groups


def group(delivered: str, read: int | None, lag: int | None) -> dict:
    return {"name": b"rlr-recorder", "last-delivered-id": delivered.encode(),
            "entries-read": read, "lag": lag, "pending": 0}


def stream(first: str, length: int, added: int, deleted: str | None) -> dict:
    info = {"length": length, "first-entry": (first.encode(), {}), "entries-added": added}
    if deleted is not None:
        info["max-deleted-entry-id"] = deleted.encode()
    return info


def test_nothing_lost_while_the_group_is_ahead_of_the_trimming():
    fake = FakeRedis(stream("100-0", 50, 150, "99-0"), [group("120-0", 120, 30)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")) == TrimState(0, 30, 50)


def test_a_fresh_group_on_an_untrimmed_stream_lost_nothing():
    fake = FakeRedis(stream("1-0", 10, 10, "0-0"), [group("0-0", 0, 10)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")).lost == 0


def test_entries_trimmed_before_the_group_read_them_are_counted():
    # 1000 added, the group read 100, 500 remain: 400 went unread
    fake = FakeRedis(stream("501-0", 500, 1000, "500-0"), [group("100-0", 100, None)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")) == TrimState(400, None, 500)


def test_redis_6_shows_a_gap_as_at_least_one_lost_entry():
    fake = FakeRedis(stream("501-0", 500, None, None), [group("100-0", None, None)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")).lost == 1
    fake = FakeRedis(stream("101-0", 500, None, None), [group("100-0", None, None)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")).lost == 1
    fake = FakeRedis(stream("100-1", 500, None, None), [group("100-0", None, None)])
    assert run_sync(fake, trim_check("k", "rlr-recorder")).lost == 0
