"""Producer without Redis: pacing, frame fields, stopping, outages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import redis

from daemon.errors import DaemonError
from daemon.line.part_ids import NoPart, open_part_ids
from daemon.line.producer import Pacer, Producer
from daemon.line.sources import Captured
from daemon.wire.backoff import Backoff
from daemon.wire.codec import decode_frame
from daemon.wire.schema import parse_frame


def _images(n: int, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


class FakeRedis:
    """Records XADDs; raises ConnectionError for the calls listed in `fail_on` (1-based)."""

    def __init__(self, fail_on=()):
        self.entries, self.calls, self.fail_on = [], 0, set(fail_on)

    def xadd(self, key, fields, maxlen=None, approximate=False):
        self.calls += 1
        if self.calls in self.fail_on:
            raise redis.ConnectionError("Connection refused")
        self.entries.append((key, fields, maxlen, approximate))


class FakeClock:
    def __init__(self):
        self.t, self.slept = 100.0, []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept.append(round(s, 6))
        self.t += s


def test_pacer_keeps_a_steady_schedule():
    clock = FakeClock()
    pacer = Pacer(10, clock, clock.sleep)
    assert pacer.wait() == 0  # first tick at once
    clock.t += 0.03  # 30 ms of work
    assert pacer.wait() == 0
    assert clock.slept == [0.07]  # sleeps the rest of the 100 ms period, no drift
    clock.t += 0.15  # one slow frame: 50 ms late, less than a period, so no drop
    assert pacer.wait() == 0
    assert clock.slept == [0.07]  # sent at once, and the next tick stays on the grid
    assert pacer.next_t == pytest.approx(100.3)


def test_pacer_resyncs_instead_of_bursting():
    clock = FakeClock()
    pacer = Pacer(10, clock, clock.sleep)
    pacer.wait()
    clock.t += 0.55  # stalled for 5.5 periods
    assert pacer.wait() == 4  # ticks at 0.1 .. 0.4 are missed (0.5 is this one)
    clock.t += 0.01
    pacer.wait()
    assert clock.slept == [0.09]  # next frame one period after the resync, not immediately


def test_pacer_zero_fps_never_sleeps():
    clock = FakeClock()
    pacer = Pacer(0, clock, clock.sleep)
    assert [pacer.wait() for _ in range(5)] == [0] * 5 and clock.slept == []


def _captured(n):
    return [Captured(img, f"{i}") for i, img in enumerate(_images(n))]


def test_producer_sends_parseable_frames_with_unique_ids():
    client = FakeRedis()
    prod = Producer(client, "l1", "cam-1", fps=0, encoding="png", size=8, product_class="tile",
                    frames_maxlen=50)
    stats = prod.run(_captured(5))
    assert stats.sent == 5 and stats.bytes > 0
    ids = []
    for key, fields, maxlen, approximate in client.entries:
        assert key == "rlr:frames:{l1}" and maxlen == 50 and approximate
        frame = parse_frame(fields, 10**6)
        assert frame.camera == "cam-1" and frame.product_class == "tile"
        assert decode_frame(frame, 8, 100).shape == (8, 8, 3)
        ids.append(frame.frame_id)
    assert len(set(ids)) == 5 and ids[0] == f"cam-1-{prod.session}-1"
    other = Producer(FakeRedis(), "l1", "cam-1", fps=0)
    assert other.session != prod.session  # a restart never reuses frame ids


def test_producer_stops_at_limit_and_on_stop():
    prod = Producer(FakeRedis(), "l1", "cam", fps=0)
    assert prod.run(_captured(10), limit=3).sent == 3

    prod = Producer(FakeRedis(), "l1", "cam", fps=0)

    def frames():
        for i, c in enumerate(itertools.cycle(_captured(2))):
            if i == 4:
                prod.stop()  # as the SIGTERM handler would
            yield c

    assert prod.run(frames()).sent == 5  # the frame in flight is still sent


def test_producer_drops_and_counts_frames_while_redis_is_away():
    client = FakeRedis(fail_on={2})
    clock = FakeClock()
    prod = Producer(client, "l1", "cam", fps=10, clock=clock, backoff=Backoff(0.25, 1.0))
    prod.pacer.sleep = clock.sleep  # virtual time: no real sleeping
    stats = prod.run(_captured(8))
    # frame 2 fails; frames 3 and 4 arrive before the retry time (0.25 s later) and are
    # dropped without trying; frame 5 reaches Redis again and the rest go through.
    assert stats.dropped_offline == 3 and stats.sent == 5
    assert client.calls == 6


def test_producer_refuses_bad_names_and_options():
    with pytest.raises(DaemonError, match="camera 'cam 1'"):
        Producer(FakeRedis(), "l1", "cam 1")
    with pytest.raises(DaemonError, match="JPEG quality"):
        Producer(FakeRedis(), "l1", "cam", jpeg_quality=0)


# ----------------------------------------------------------------------------- part ids


def _parts_and_views(client):
    frames = [parse_frame(fields, 10**6) for _, fields, _, _ in client.entries]
    return [(f.part, f.view) for f in frames], [f.frame_id for f in frames]


def test_frame_driven_part_ids_tag_every_frame_and_skip_the_unnamed():
    client = FakeRedis()
    part_ids = open_part_ids(r"name:^(\d+)-", views=("top", "side"))
    named = [Captured(img, name) for img, name in
             zip(_images(5), ["1-a", "1-b", "junk", "2-a", "2-b"], strict=True)]
    stats = Producer(client, "l1", "cam", fps=0, part_ids=part_ids).run(named)
    tags, frame_ids = _parts_and_views(client)
    assert tags == [("1", "top"), ("1", "side"), ("2", "top"), ("2", "side")]
    assert stats.sent == 4 and stats.parts == 2 and stats.skipped == 1
    assert len(set(frame_ids)) == 4


class Announced:
    """Part ids as a PLC would announce them (the Redis kinds have integration tests)."""

    frame_driven = False

    def __init__(self, parts, views=()):
        self.parts, self.views = list(parts), views

    def next_id(self, stopped):
        if not self.parts:
            return None
        part = self.parts.pop(0)
        if part is None:
            raise NoPart("part id '' is empty")
        return part


def test_part_driven_ids_take_one_frame_per_view_for_each_part():
    client = FakeRedis()
    prod = Producer(client, "l1", "cam", fps=0, part_ids=Announced(["A", None, "B"], ("x", "y")))
    stats = prod.run(_captured(10))
    tags, _ = _parts_and_views(client)
    assert tags == [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y")]
    assert stats.parts == 2 and stats.skipped == 1 and stats.sent == 4


def test_part_driven_ids_stop_when_the_source_runs_out():
    client = FakeRedis()
    prod = Producer(client, "l1", "cam", fps=0, part_ids=Announced(["A", "B"], ("x", "y")))
    assert prod.run(_captured(3)).sent == 3  # B's second view never came
    assert _parts_and_views(client)[0][-1] == ("B", "x")


def test_part_driven_ids_take_the_newest_frame_of_a_live_source():
    class Live(list):
        live = True

        def stop(self):
            pass

    client = FakeRedis()
    prod = Producer(client, "l1", "cam", fps=0, part_ids=Announced(["A"]))
    assert prod.run(Live(_captured(3))).sent == 1
    assert _parts_and_views(client)[0] == [("A", None)]


def test_a_cameras_part_clock_and_lost_frames_travel_with_its_frames():
    fake = FakeRedis()
    frames = [Captured(img, None, part=f"SN-{i}", cam_ts=1000 * i, cam_frame=i,
                       lost=2 if i == 3 else 0) for i, img in enumerate(_images(3), 1)]
    stats = Producer(fake, "L1", "cam1", fps=None).run(frames)
    assert stats.lost_camera == 2
    fields = [entry[1] for entry in fake.entries]
    assert [parse_frame(f, 10**6).part for f in fields] == ["SN-1", "SN-2", "SN-3"]
    assert [(f["cam_ts"], f["cam_frame"]) for f in fields][2] == (b"3000", b"3")
    plain = FakeRedis()
    Producer(plain, "L1", "cam1", fps=None).run([Captured(_images(1)[0])])
    assert "cam_ts" not in plain.entries[0][1] and "part" not in plain.entries[0][1]
