"""`rlrctl collect`: frames from a line's stream become a training set `rlrctl train` reads."""

from __future__ import annotations

import threading
import time

import numpy as np
from click.testing import CliRunner
from PIL import Image

from daemon.cli import main
from daemon.line.capture import Collector
from daemon.line.producer import push_images
from daemon.wire import keys
from daemon.wire.schema import Result
from rlr.datasets import load_dataset


def _collect(redis_url: str, *args: str):
    return CliRunner().invoke(main, ["collect", "--quiet", *args],
                              env={"RLR_REDIS_URL": redis_url})


def test_collect_writes_the_training_layout_from_the_stream(redis_url, rclient, line,
                                                            frame_jpegs, tmp_path):
    rclient.xadd(keys.frames(line), {"v": "1", "camera": "cam1", "frame_id": "broken",
                                     "ts": "1", "encoding": "jpeg", "data": b"not a jpeg"})
    cam1 = push_images(rclient, line, "cam1", frame_jpegs[:4])  # no product class
    push_images(rclient, line, "cam3", frame_jpegs[8:10])  # not asked for
    cam2 = push_images(rclient, line, "cam2", frame_jpegs[4:8], product_class="tile")
    out = tmp_path / "captured"
    res = _collect(redis_url, "--line", line, "--cameras", "cam1,cam2", "--n", "8",
                   "--out", str(out), "--since", "0", "--size", "64")
    assert res.exit_code == 0, res.output
    assert "wrote 8 frame(s)" in res.output and "cam1 4, tile 4" in res.output
    assert "1 unreadable" in res.output

    samples = list(load_dataset('folder', out).train)  # what `rlrctl train --data OUT` reads
    assert len(samples) == 8
    names = {(s.class_name, s.path.name) for s in samples}
    assert names == {("cam1", f"cam1-{i}.png") for i in cam1} | \
        {("tile", f"cam2-{i}.png") for i in cam2}
    image = np.asarray(Image.open(samples[0].path))
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert rclient.xinfo_groups(keys.frames(line)) == []  # no consumer group: workers keep all

    # Running again over the same frames adds nothing twice.
    res = _collect(redis_url, "--line", line, "--cameras", "cam1", "--n", "2",
                   "--out", str(out), "--since", "0", "--max-seconds", "2")
    assert res.exit_code == 1 and "no frames collected" in res.output
    assert len(list(load_dataset('folder', out).train)) == 8


def test_class_option_filters_and_names_the_folder(redis_url, rclient, line, frame_jpegs,
                                                   tmp_path):
    push_images(rclient, line, "cam1", frame_jpegs[:3], product_class="fabric")
    push_images(rclient, line, "cam1", frame_jpegs[3:5])  # unlabelled: filed under --class
    res = _collect(redis_url, "--line", line, "--class", "tile", "--n", "2",
                   "--out", str(tmp_path), "--since", "0")
    assert res.exit_code == 0, res.output
    assert "3 other class" in res.output
    assert sorted(p.parent.parent.parent.name for p in tmp_path.rglob("*.png")) == ["tile"] * 2


def test_collect_from_now_on_ignores_frames_already_in_the_stream(rclient, line, frame_jpegs,
                                                                  tmp_path):
    push_images(rclient, line, "cam1", frame_jpegs[:3])
    collector = Collector(rclient, line, tmp_path, size=64, block_ms=100)
    done = {}
    thread = threading.Thread(target=lambda: done.update(s=collector.run(3, max_seconds=60)))
    thread.start()
    time.sleep(1.0)  # let it pin "$"
    new = push_images(rclient, line, "cam1", frame_jpegs[3:6])
    thread.join(70)
    assert done["s"].written == 3
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == sorted(f"cam1-{i}.png" for i in new)


def test_only_normal_keeps_frames_the_worker_scored_normal(rclient, line, frame_jpegs,
                                                           tmp_path):
    ids = push_images(rclient, line, "cam1", frame_jpegs[:6])
    for i, frame_id in enumerate(ids[:5]):  # the last frame never gets a verdict
        result = Result(frame_id, "cam1", 0.5, i % 2 == 1, 0.4, "m-x", 0.0, 1.0, 1.0, 2.0, "w")
        rclient.xadd(keys.results(line), result.to_fields())
    collector = Collector(rclient, line, tmp_path, size=64, only_normal=True, block_ms=100,
                          verdict_wait_s=0.5)
    stats = collector.run(6, since="0", max_seconds=3)
    assert stats.written == 3 and stats.anomalous == 2 and stats.no_verdict == 1
    written = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert written == sorted(f"cam1-{ids[i]}.png" for i in (0, 2, 4))
