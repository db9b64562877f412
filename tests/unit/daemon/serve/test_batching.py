"""The batching policy as pure logic, with a fake clock: admission, stale skip, fill-or-timeout."""

from __future__ import annotations

from daemon.cli.settings import load_settings
from daemon.serve.batching import BatchFill, BatchPolicy
from daemon.serve.settings import BatchSettings
from daemon.wire.groups import Delivery
from daemon.wire.schema import encode_frame

NOW = 1_700_000_000.0


def _delivery(i: int, ts: float = NOW, line: str = "line1", deliveries: int = 1,
              **fields) -> Delivery:
    f = encode_frame("cam", f"f{i}", ts, b"\x89PNG...", "png")
    f.update({k.encode(): v for k, v in fields.items()})
    return Delivery(line, f"{i}-0", f, deliveries)


POLICY = BatchPolicy(BatchSettings(batch_size=4, batch_wait_ms=20, backlog_limit=100,
                                   max_frame_age_s=2.0, max_deliveries=3, max_payload_bytes=1024))


def test_the_policy_comes_from_the_settings():
    s = load_settings(batch_size=16, batch_wait_ms=50, backlog_limit=10, max_frame_age_s=1.5,
                      max_deliveries=5, max_payload_bytes=4096)
    policy = BatchPolicy(s)
    assert (policy.batch_size, policy.wait_s) == (16, 0.05)
    assert policy.settings.model_dump(include=set(BatchSettings.model_fields)) == \
        BatchSettings(batch_size=16, batch_wait_ms=50, backlog_limit=10, max_frame_age_s=1.5,
                      max_deliveries=5, max_payload_bytes=4096).model_dump()


def test_triage_sorts_deliveries_into_dead_skipped_and_fresh():
    read = [
        _delivery(1),                                  # fresh
        _delivery(2, deliveries=4),                    # delivered too often
        _delivery(3, v=b"9"),                          # a schema this worker cannot read
        _delivery(4, ts=NOW - 10),                     # old, but the line is under its bound
        _delivery(5, ts=NOW - 10, line="busy"),        # old on a line over its bound: skip
        _delivery(6, ts=NOW - 1, line="busy"),         # recent on that line: fresh
        _delivery(7),                                  # already held by the worker: ignored
    ]
    t = POLICY.triage(read, held={("line1", "7-0")}, backlogs={"line1": 5, "busy": 101},
                      now=NOW)
    assert [d.entry_id for d in t.admitted] == [f"{i}-0" for i in range(1, 7)]
    assert [(d.entry_id, e.reason) for d, e in t.dead] == [
        ("2-0", "too_many_deliveries"), ("3-0", "unsupported_version")]
    assert "RLR_MAX_DELIVERIES=3" in t.dead[0][1].detail
    assert [d.entry_id for d in t.skipped] == ["5-0"]
    assert [(d.entry_id, f.frame_id) for d, f in t.fresh] == [
        ("1-0", "f1"), ("4-0", "f4"), ("6-0", "f6")]


def test_stale_needs_both_a_backlog_over_the_bound_and_an_old_frame():
    assert not POLICY.is_stale(backlog=100, ts=NOW - 60, now=NOW)  # at the bound: keep all
    assert not POLICY.is_stale(backlog=101, ts=NOW - 2.0, now=NOW)  # not older than 2 s
    assert POLICY.is_stale(backlog=101, ts=NOW - 2.01, now=NOW)


def test_reads_grow_while_a_line_is_over_its_bound_so_skipping_catches_up():
    assert POLICY.read_count({"a": 100, "b": 3}) == 4
    assert POLICY.read_count({"a": 101, "b": 3}) == 256


def test_a_batch_closes_when_full_before_its_wait_is_over():
    fill = BatchFill(size=3, wait_s=0.02, started=10.0, items=["a"])
    assert not fill.closed(10.0) and abs(fill.remaining(10.0) - 0.02) < 1e-9
    fill.add("b")
    fill.add("c")
    assert fill.full and fill.closed(10.001)
    assert fill.items == ["a", "b", "c"]


def test_a_batch_closes_at_its_deadline_however_few_frames_it_holds():
    fill = BatchFill(size=8, wait_s=0.02, started=10.0, items=["a"])
    assert abs(fill.remaining(10.015) - 0.005) < 1e-9
    assert not fill.closed(10.019)
    assert fill.closed(10.02) and fill.remaining(10.5) == 0.0
    assert fill.items == ["a"]


def test_a_frame_captured_in_the_future_by_a_wrong_clock_is_dead_lettered():
    policy = BatchPolicy(BatchSettings(max_clock_skew_s=300))
    t = policy.triage([_delivery(1, ts=NOW + 299), _delivery(2, ts=NOW + 301)], held=set(),
                      backlogs={}, now=NOW)
    assert [d.entry_id for d, _ in t.fresh] == ["1-0"]
    [(d, err)] = t.dead
    assert (d.entry_id, err.reason) == ("2-0", "clock_skew")
    assert "RLR_MAX_CLOCK_SKEW_S=300" in err.detail and "'cam'" in err.detail
