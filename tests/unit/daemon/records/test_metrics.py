from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemon.errors import SettingsError
from daemon.records.metrics import RecorderMetrics
from daemon.records.recorder import RecorderStats


def samples(metrics: RecorderMetrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{v}" for _, v in sorted(s.labels.items()))
            out[f"{s.name}[{labels}]" if labels else s.name] = s.value
    return out


def fake(**stats) -> SimpleNamespace:
    return SimpleNamespace(stats=RecorderStats(**stats), db_away="")


def test_the_counters_are_the_recorders_own_stats():
    rec = fake(state="ok", frames=10, parts=3, recipes=1, unreadable=2, pictures=4,
               pictures_skipped=5, pictures_missing=6, db_outages=1, db_retries=7,
               trimmed_unrecorded=8, backlog=9, last_write=time.time() - 3)
    got = samples(RecorderMetrics(rec))
    assert got["rlr_recorder_rows_written_total[frames]"] == 10
    assert got["rlr_recorder_rows_written_total[parts]"] == 3
    assert got["rlr_recorder_rows_written_total[recipes]"] == 1
    assert got["rlr_recorder_unreadable_entries_total"] == 2
    assert (got["rlr_recorder_pictures_total[kept]"], got["rlr_recorder_pictures_total[skipped]"],
            got["rlr_recorder_pictures_total[missing]"]) == (4, 5, 6)
    assert got["rlr_recorder_db_outage_waits_total"] == 7
    assert got["rlr_recorder_entries_lost_total"] == 8
    assert got["rlr_recorder_lag_entries"] == 9
    assert 3 <= got["rlr_recorder_last_write_age_seconds"] < 10
    rec.stats.frames = 11  # read at each scrape
    assert samples(RecorderMetrics(rec))["rlr_recorder_rows_written_total[frames]"] == 11


@pytest.mark.parametrize("state, db_away, shown", [
    ("ok", "", "ok"), ("degraded", "", "degraded"),
    ("degraded", "records database away", "waiting")])
def test_the_state_is_one_labelled_gauge_at_1(state, db_away, shown):
    rec = fake(state=state)
    rec.db_away = db_away
    got = samples(RecorderMetrics(rec))
    on = [k for k, v in got.items() if k.startswith("rlr_recorder_state[") and v == 1]
    assert on == [f"rlr_recorder_state[{shown}]"]


def test_a_taken_port_is_one_clear_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(SettingsError, match="RLR_RECORDER_METRICS_PORT"):
            RecorderMetrics(fake()).serve(s.getsockname()[1], "127.0.0.1")
