"""The recorder keeps the pictures of rejected frames and of a sample of passes, finding each
frame in the frames stream through the worker's dedup key; a trimmed frame is counted missing
and a read-only folder makes it degraded, never stopped."""

from __future__ import annotations

import hashlib

import numpy as np
import redis
import sqlalchemy as sa

from daemon.records.recorder import Recorder, presence_key
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store
from daemon.records.tables import frame_results
from daemon.wire import keys
from daemon.wire.schema import Result, encode_frame
from tests.unit.daemon.records.readonly import read_only


def publish(client: redis.Redis, line: str, i: int, anomalous: bool, raw: bool = False) -> None:
    """What the worker leaves for a frame: the frame entry, its seen key, its result."""
    camera, frame_id = f"cam{i % 2}", f"f{i}"
    if raw:
        pixels = np.full((4, 6), i % 256, np.uint8)
        frame = encode_frame(camera, frame_id, 1_796_601_600 + i, pixels.tobytes(), "raw",
                             (4, 6), "uint8")
    else:
        frame = encode_frame(camera, frame_id, 1_796_601_600 + i, b"JPEG%d" % i, "jpeg")
    entry = client.xadd(keys.frames(line), frame).decode()
    mask = b"PNG-mask-%d" % i if anomalous else None
    res = Result(frame_id, camera, 2.0 if anomalous else 0.1, anomalous, 1.0, "v1",
                 1_796_601_600 + i, 1.0, 2.0, 20.0, "w1", "bottle", mask)
    rid = client.xadd(keys.results(line), res.to_fields()).decode()
    client.set(keys.seen(line, camera, frame_id), f"{rid} {entry}", ex=600)


def rows(store: Store) -> dict[str, tuple]:
    f = frame_results
    with store.engine.connect() as conn:
        return {r.frame_id: (r.picture_ref, r.mask_ref) for r in
                conn.execute(sa.select(f.c.frame_id, f.c.picture_ref, f.c.mask_ref))}


def recorder(client, store, line, folder, **kw) -> Recorder:
    settings = RecordsSettings(records_consumer="rec-p", records_dir=folder, **kw)
    return Recorder(client, store, [line], settings)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_rejects_and_sampled_passes_keep_frame_and_mask_by_content(store, rclient, line,
                                                                   tmp_path):
    for i in range(40):
        publish(rclient, line, i, anomalous=i % 10 == 0, raw=i == 20)
    rec = recorder(rclient, store, line, tmp_path, records_keep_pass=0.25)
    rec.run_until_idle()
    got = rows(store)
    assert len(got) == 40
    for i in (0, 10, 30):
        picture, mask = got[f"f{i}"]
        assert picture.endswith(f"{sha(b'JPEG%d' % i)}.jpg")
        assert mask.endswith(f"{sha(b'PNG-mask-%d' % i)}.png")
        assert (rec.pictures.path(picture)).read_bytes() == b"JPEG%d" % i
    raw = np.load(rec.pictures.path(got["f20"][0]))
    assert raw.shape == (4, 6) and (raw == 20).all()
    passes = [i for i in range(40) if i % 10 and got[f"f{i}"][0]]
    assert passes and len(passes) < 36 and all(got[f"f{i}"][1] is None for i in passes)
    assert rec.stats.pictures == 4 + len(passes) and rec.stats.pictures_missing == 0


def test_a_trimmed_frame_is_counted_missing_and_its_row_kept(store, rclient, line, tmp_path):
    publish(rclient, line, 0, anomalous=True)
    rclient.xtrim(keys.frames(line), maxlen=0)
    rec = recorder(rclient, store, line, tmp_path, records_keep_pass=0)
    rec.run_until_idle()
    picture, mask = rows(store)["f0"]
    assert picture is None and mask is not None
    assert rec.stats.pictures_missing == 1 and rec.stats.state == "ok"


def test_a_read_only_folder_makes_it_degraded_and_rows_are_still_written(
        store, rclient, line, tmp_path):
    folder = tmp_path / "records"
    (folder / "pictures").mkdir(parents=True)
    for i in range(30):
        publish(rclient, line, i, anomalous=i % 3 == 0)
    rec = recorder(rclient, store, line, folder, records_keep_pass=0)
    with read_only(folder / "pictures"):
        rec.run_until_idle()
        assert len(rows(store)) == 30
        assert all(r == (None, None) for r in rows(store).values())
        assert rec.stats.pictures_skipped == 10 and rec.stats.state == "degraded"
        rec._publish_presence()
        status = rclient.hgetall(presence_key("rec-p"))
        assert status[b"state"] == b"degraded" and b"pictures folder" in status[b"problem"]
    publish(rclient, line, 30, anomalous=True)
    rec.keeper._retry_at = 0.0  # the folder is writable again: the next try works
    rec.step(None)
    assert rec.stats.state == "ok" and rows(store)["f30"][0] is not None


def test_rlrctl_records_part_prints_the_pictures_paths_and_prune_deletes_them(
        redis_url, rclient, line, tmp_path):
    from tests.integration.procs import daemon_env
    from tests.integration.records.test_recorder import rlrctl

    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store.open(url=url)
    store.require_schema()
    publish(rclient, line, 0, anomalous=True)
    folder = tmp_path / "records"
    recorder(rclient, store, line, folder, records_keep_pass=0).run_until_idle()
    picture, mask = rows(store)["f0"]
    with store.engine.begin() as conn:  # the frame was seen a year ago
        conn.execute(sa.update(frame_results).values(part_id="SN-1", ts_ms=1_765_000_000_000))
    env = daemon_env(redis_url, line, records_url=url, records_dir=folder)
    out = rlrctl("records", "part", "SN-1", env=env)
    pictures = (folder / "pictures").resolve()
    assert out.returncode == 0, out.stderr
    assert f"picture {pictures / picture} mask {pictures / mask}" in out.stdout
    out = rlrctl("records", "prune", "--dry-run", env=env)
    assert out.returncode == 0 and "would delete 1 frame rows" in out.stdout, out.stderr
    assert "2 pictures" in out.stdout and (pictures / picture).exists()
    out = rlrctl("records", "prune", env=env)
    assert out.returncode == 0 and "deleted 1 frame rows" in out.stdout, out.stderr
    assert not (pictures / picture).exists() and not (pictures / mask).exists()
    assert rows(store) == {}
    store.close()


def test_the_recorder_applies_the_retention_to_rows_and_pictures(store, rclient, line, tmp_path):
    for i in range(6):
        publish(rclient, line, i, anomalous=True)  # captured on 2026-12-07
    rec = recorder(rclient, store, line, tmp_path, records_keep_pass=0, records_days=0.01)
    rec.run_until_idle()  # the retention ran before the first batch: nothing to delete yet
    assert len(rows(store)) == 6 and rec.stats.pictures == 6
    rec._pruned_at = rec._checked = 0.0 - rec.settings.records_prune_every_s  # an hour later
    rec.step(None)
    assert rows(store) == {} and rec.stats.pruned_rows == 6
    assert rec.stats.pruned_pictures == 12 and rec.pictures.total_bytes() == 0
