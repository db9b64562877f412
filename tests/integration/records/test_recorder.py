"""The recorder against the real Redis and both databases: kill -9 mid-batch and restart,
a crash between commit and ack, a database outage, the parts stream, trimmed entries."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import redis
import sqlalchemy as sa

from daemon.errors import RecordsUnavailable
from daemon.records import queries
from daemon.records.recorder import Recorder
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store
from daemon.records.tables import frame_results, part_verdicts, recipe_changes
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Result
from tests.integration.procs import ROOT, Proc, daemon_env


def add_results(client: redis.Redis, line: str, n: int, start: int = 0) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + n):
        r = Result(f"f{i}", f"cam{i % 4}", 0.1 + (i % 9) / 10, i % 9 == 8, 0.85, "v1",
                   1_796_601_600 + i / 30, 1.0, 2.0, 20.0, "w1", "bottle")
        pipe.xadd(keys.results(line), r.to_fields())
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def frame_ids(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.select(frame_results.c.frame_id))]


def count(store: Store, table=frame_results) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def settled(client: redis.Redis, line: str) -> bool:
    """The recorder group has read and acknowledged every entry."""
    groups = client.xinfo_groups(keys.results(line))
    g = next(g for g in groups if g["name"] == b"rlr-recorder")
    return g["pending"] == 0 and g["lag"] == 0


@pytest.mark.slow
def test_kill_9_mid_batch_then_restart_records_every_result_exactly_once(
        records_url, redis_url, line, rclient, tmp_path):
    n = 30_000
    add_results(rclient, line, n)
    env = daemon_env(redis_url, line, records_url=records_url, records_consumer="rec-kill",
                     records_batch=250, records_block_ms=100)
    store = Store.open(url=records_url)
    first = Proc(["recorder"], env, tmp_path / "first.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sa.inspect(store.engine).has_table("frame_results") and \
                count(store) >= 2000:
            break
        time.sleep(0.02)
    first.p.send_signal(signal.SIGKILL)
    first.p.wait(10)
    first._log.close()
    at_kill = count(store)
    assert 0 < at_kill < n, "killed before it began or after it finished: no mid-run kill"

    second = Proc(["recorder"], env, tmp_path / "second.log")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (count(store) == n and settled(rclient, line)):
        time.sleep(0.1)
    assert second.stop(signal.SIGTERM) == 0
    ids = frame_ids(store)
    assert len(ids) == n and set(ids) == {f"f{i}" for i in range(n)}
    assert settled(rclient, line)
    store.close()


def recorder(client, store, line, **kw) -> Recorder:
    settings = RecordsSettings(records_consumer="rec-a", records_batch=100, **kw)
    rec = Recorder(client, store, [line], settings)
    rec._backoff = Backoff(0.01, 0.02)
    return rec


def test_a_crash_between_commit_and_ack_writes_the_batch_again_as_nothing(
        store, rclient, line, monkeypatch):
    add_results(rclient, line, 250)
    rec = recorder(rclient, store, line)
    rec.start()

    def crash(items):
        raise SystemExit("killed after the commit, before the ack")

    monkeypatch.setattr(rec.group, "ack", crash)
    with pytest.raises(SystemExit):
        rec.step(None)
    assert count(store) == 100  # committed, never acknowledged

    again = recorder(rclient, store, line)  # the same consumer name, restarted
    assert again.run_until_idle() == 150
    assert again.stats.duplicates == 100 and again.stats.frames == 150
    assert count(store) == 250 and settled(rclient, line)


class FlakyStore(Store):
    """Away for the first `fails` writes."""

    fails = 3

    def write_batch(self, frames, parts, recipes=()):
        if self.fails:
            self.fails -= 1
            raise RecordsUnavailable("records database away (test)")
        return super().write_batch(frames, parts, recipes)


def test_a_database_outage_is_waited_for_and_counted_and_loses_nothing(
        store, rclient, line):
    add_results(rclient, line, 120)
    flaky = FlakyStore(store.engine)
    rec = recorder(rclient, flaky, line)
    rec.run_until_idle()
    assert (rec.stats.db_outages, rec.stats.db_retries, rec.stats.state) == (1, 3, "ok")
    assert count(store) == 120 and settled(rclient, line)


def test_the_parts_stream_is_read_where_it_exists_and_never_created(store, rclient, line):
    add_results(rclient, line, 10)
    rec = recorder(rclient, store, line)
    rec.run_until_idle()
    assert not rclient.exists(keys.parts(line))
    rclient.xadd(keys.parts(line), {"v": "1", "part_id": "SN-1", "verdict": "reject",
                                   "ts": "1796601600.5", "views": '{"top": {"score": 2}}'})
    rclient.xadd(keys.parts(line), {"v": "1", "part_id": "SN-2", "verdict": "bogus", "ts": "1"})
    rec._checked = 0.0  # the next step looks for new streams
    rec.step(None)
    rec.step(None)
    assert count(store, part_verdicts) == 1 and rec.stats.unreadable == 1
    assert rclient.xpending(keys.parts(line), "rlr-recorder")["pending"] == 0


def test_entries_trimmed_before_they_were_recorded_are_counted(store, rclient, line):
    add_results(rclient, line, 50)
    rec = recorder(rclient, store, line)
    rec.run_until_idle()
    add_results(rclient, line, 500, start=50)
    rclient.xtrim(keys.results(line), maxlen=100, approximate=False)  # 400 go unread
    rec._check_trim()
    assert rec.stats.trimmed_unrecorded == 400
    rec._check_trim()  # the same loss is counted once
    assert rec.stats.trimmed_unrecorded == 400
    rec.run_until_idle()
    assert count(store) == 150


def rlrctl(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_recorder_refuses_a_bad_url_or_schema_with_one_line(redis_url, line, tmp_path):
    env = daemon_env(redis_url, line, records_url="nonsense://")
    out = rlrctl("recorder", env=env)
    assert out.returncode == 2 and "RLR_RECORDS_URL" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store.open(url=url)
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    out = rlrctl("recorder", env=daemon_env(redis_url, line, records_url=url))
    assert out.returncode == 2 and "newer than this rlr" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_records_commands_read_what_the_recorder_wrote(redis_url, rclient, line, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store.open(url=url)
    store.require_schema()
    add_results(rclient, line, 90)
    recorder(rclient, store, line).run_until_idle()
    env = daemon_env(redis_url, line, records_url=url)
    out = rlrctl("records", "yield", "--frames", "--since", "2026-12-01", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert '"parts": 90' in out.stdout and '"rejects": 10' in out.stdout
    out = rlrctl("records", "export", "-o", str(tmp_path / "x.csv"), env=env)
    assert out.returncode == 0 and out.stdout.startswith("90 frames rows")

    add_recipe_switches(rclient, line)
    pv = PartVerdict(line, "SN-1", "incomplete", "reject", 1796601600.5, 1796601600.0, 500.0,
                     {}, ("side",), "bottle-a@2", "b", "bottle")
    rclient.xadd(keys.parts(line), pv.to_fields())
    recorder(rclient, store, line).run_until_idle()
    out = rlrctl("records", "recipes", "--line", line, "--since", "2026-12-01", env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "refused" in lines[1] and "unknown recipe bottle-x" in lines[1]
    assert "bottle-a@2" in lines[2] and "anna" in lines[2] and "modbus" in lines[2]
    out = rlrctl("records", "parts", "--line", line, env=env)
    assert out.returncode == 0, out.stderr
    assert "incomplete reject" in out.stdout and "side" in out.stdout
    assert out.stdout.splitlines()[-1].startswith("1 parts, 1 rejected") and \
        out.stdout.splitlines()[-1].endswith("1 incomplete")
    out = rlrctl("records", "part", "SN-1", env=env)
    assert out.returncode == 0 and "incomplete, reject" in out.stdout, out.stdout


def add_recipe_switches(client: redis.Redis, line: str) -> None:
    """What `RecipeStore.activate` writes to the recipe log: a switch and a refusal."""
    client.xadd(keys.recipe_log(line), {"ts": "1796601600.5", "action": "activated",
                                        "name": "bottle-a", "revision": "2", "by": "anna",
                                        "via": "modbus", "why": ""})
    client.xadd(keys.recipe_log(line), {"ts": "1796601601.5", "action": "refused",
                                        "name": "bottle-x", "revision": "", "by": "plc",
                                        "via": "opcua", "why": "unknown recipe bottle-x"})


def test_wrapped_part_ids_and_recipe_switches_are_recorded_once_each(store, rclient, line):
    add_results(rclient, line, 10)
    rec = recorder(rclient, store, line)
    rec.run_until_idle()
    for first, verdict, outcome in ((1796601600.0, "pass", "pass"),
                                    (1796605200.0, "incomplete", "reject")):
        pv = PartVerdict(line, "SN-9", verdict, outcome, first + 0.2, first, 200.0, {},
                         ("side",) if verdict == "incomplete" else (), "r@1", "b", "bottle")
        rclient.xadd(keys.parts(line), pv.to_fields())
    add_recipe_switches(rclient, line)
    rec._checked = 0.0  # the next step looks for new streams
    while rec.step(None):
        pass
    got = queries.part(store, "SN-9", line)["verdicts"]
    assert [(v["verdict"], v["outcome"], v["missing"]) for v in got] == \
        [("incomplete", "reject", "side"), ("pass", "pass", None)]
    switches = queries.recipes(store, line)
    assert [(r["action"], r["name"], r["revision"], r["via"]) for r in switches] == \
        [("refused", "bottle-x", None, "opcua"), ("activated", "bottle-a", 2, "modbus")]
    assert (rec.stats.parts, rec.stats.recipes) == (2, 2)
    again = recorder(rclient, store, line, records_group="rlr-recorder-2")  # all read again
    again.run_until_idle()
    assert (count(store, part_verdicts), count(store, recipe_changes)) == (2, 2)
    assert again.stats.duplicates == 14


def scrape(port: int) -> dict[str, float]:
    """The samples of the recorder's /metrics over HTTP, `name{labels}` -> value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_recorders_metrics_are_served_over_http(redis_url, rclient, line, tmp_path):
    add_results(rclient, line, 300)
    rclient.xadd(keys.results(line), {"v": "1", "frame_id": "broken"})  # unreadable
    add_recipe_switches(rclient, line)
    port = free_port()
    env = daemon_env(redis_url, line, records_url=f"sqlite:///{tmp_path / 'r.db'}",
                     records_dir=tmp_path, records_block_ms=100, records_keep_pass=0)
    proc = Proc(["recorder", "--metrics-port", str(port)], env, tmp_path / "rec.log")
    try:
        deadline, got = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            try:
                got = scrape(port)
            except OSError:
                got = {}
            if got.get("rlr_recorder_rows_written_total{kind=frames}") == 300 and \
                    got.get("rlr_recorder_rows_written_total{kind=recipes}") == 2:
                break
            time.sleep(0.2)
        assert got.get("rlr_recorder_rows_written_total{kind=frames}") == 300, got
        assert got["rlr_recorder_unreadable_entries_total"] == 1
        assert got["rlr_recorder_state{state=ok}"] == 1
        assert got["rlr_recorder_state{state=waiting}"] == 0
        # the anomalous ninth of the frames keep their pictures (masks: their frames were
        # never put on the frames stream, so they are counted missing)
        assert got["rlr_recorder_pictures_total{result=missing}"] == 300 // 9
        assert got["rlr_recorder_pictures_total{result=kept}"] == 0
        assert got["rlr_recorder_db_outage_waits_total"] == 0
        assert got["rlr_recorder_entries_lost_total"] == 0
        assert 0 <= got["rlr_recorder_last_write_age_seconds"] < 60
        assert got["rlr_recorder_lag_entries"] >= 0
    finally:
        assert proc.stop(signal.SIGTERM) == 0
