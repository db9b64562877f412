"""What `rlrctl check` decides from heartbeats: healthy workers, the reason for unhealthy
ones, and which workers a check considers."""

from __future__ import annotations

import pytest

from daemon.wire.heartbeat import check, judge

NOW = 1_700_000_000.0


def _beat(worker="w1", host="h1", status="ready", loop_age=1.0, lines=("line1",), **kw):
    return {"worker": worker, "host": host, "status": status, "loop_at": NOW - loop_age,
            "stall_s": 60, "lines": list(lines), "last_error": None, **kw}


def test_a_ready_worker_with_a_fresh_loop_is_healthy():
    h = judge(_beat(), NOW)
    assert h.healthy and h.why == "ok"
    assert (h.worker, h.host, h.status) == ("w1", "h1", "ready")


@pytest.mark.parametrize("beat, why", [
    (_beat(status="draining"), "status draining"),
    (_beat(status="redis_unavailable", last_error="redis: Connection refused"),
     "status redis_unavailable (redis: Connection refused)"),
    (_beat(loop_age=120), "stalled for 120s"),
    ({"worker": "w1"}, "status unknown"),
])
def test_unhealthy_workers_say_why(beat, why):
    h = judge(beat, NOW)
    assert not h.healthy
    assert why in h.why


def test_check_filters_by_worker_host_and_line():
    beats = [_beat("w1", "h1", lines=["line1"]), _beat("w2", "h2", status="draining",
                                                      lines=["line2"])]
    ok, chosen, verdict = check(beats, worker="w1", now=NOW)
    assert ok and [w.worker for w in chosen] == ["w1"]
    ok, chosen, _ = check(beats, host="h2", now=NOW)
    assert not ok and [w.worker for w in chosen] == ["w2"]
    ok, chosen, verdict = check(beats, line="line2", now=NOW)
    assert not ok and [w.worker for w in chosen] == ["w2"]
    assert "line line2" in verdict
    ok, chosen, verdict = check(beats, now=NOW)
    assert ok and len(chosen) == 2
    assert "1 of 2" in verdict


def test_check_needs_min_workers_healthy():
    beats = [_beat("w1"), _beat("w2"), _beat("w3", loop_age=600)]
    assert check(beats, min_workers=2, now=NOW)[0]
    ok, _, verdict = check(beats, min_workers=3, now=NOW)
    assert not ok
    assert "2 of 3" in verdict and "need 3" in verdict


@pytest.mark.parametrize("kw", [{}, {"worker": "w9"}, {"host": "elsewhere"},
                                {"line": "line9"}])
def test_check_fails_when_no_heartbeat_matches(kw):
    beats = [] if not kw else [_beat()]
    ok, chosen, verdict = check(beats, now=NOW, **kw)
    assert not ok and chosen == []
    assert "no live worker heartbeat" in verdict


def test_liveness_passes_a_worker_that_waits_but_not_a_stalled_one():
    from daemon.wire.heartbeat import judge

    now = 1000.0
    waiting = {"worker": "w", "status": "waiting_for_model", "loop_at": now - 1, "stall_s": 60}
    assert not judge(waiting, now).healthy  # not ready: no model to serve yet
    assert judge(waiting, now, live=True).healthy  # but alive: no restart
    stalled = {**waiting, "status": "ready", "loop_at": now - 600}
    assert not judge(stalled, now, live=True).healthy
