"""`rlrctl produce` as a real process against a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from daemon.line.producer import push_images
from daemon.wire import keys
from daemon.wire.codec import decode_frame
from daemon.wire.schema import parse_frame
from tests.integration.procs import Proc, daemon_env, wait_for


@pytest.fixture
def image_dir(tmp_path):
    root = tmp_path / "cam"
    root.mkdir()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(4)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / f"{i:02d}.png")
    return root, images


def _env(redis_url, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
    return {**env, "RLR_REDIS_URL": redis_url, "RLR_LOG_FORMAT": "json", **extra}


def _produce(redis_url, line, source, *args, **env):
    cmd = [sys.executable, "-m", "daemon.cli", "produce", "--source", str(source),
           "--camera", "cam1", "--line", line, *args]
    return cmd, _env(redis_url, **env)


def test_produce_pushes_every_image_losslessly(redis_url, line, rclient, image_dir):
    root, images = image_dir
    cmd, env = _produce(redis_url, line, root, "--fps", "0", "--limit", "6", "--loop",
                        "--encoding", "png", "--class", "tile")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "sent 6 frames" in res.stdout
    entries = rclient.xrange(keys.frames(line))
    assert len(entries) == 6
    ids = set()
    for i, (_, fields) in enumerate(entries):
        frame = parse_frame(fields, 10**6)
        assert frame.camera == "cam1" and frame.product_class == "tile"
        np.testing.assert_array_equal(decode_frame(frame, 24, 100), images[i % 4])
        ids.add(frame.frame_id)
    assert len(ids) == 6


def test_maxlen_keeps_the_stream_bounded(redis_url, line, rclient, image_dir):
    root, _ = image_dir
    cmd, env = _produce(redis_url, line, root, "--fps", "0", "--limit", "500", "--loop",
                        "--size", "8", RLR_FRAMES_MAXLEN="20", RLR_BACKLOG_LIMIT="10")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "sent 500 frames" in res.stdout
    # MAXLEN ~ trims whole stream nodes (100 entries by default), so the length is only
    # roughly 20, but far below what was sent.
    assert 20 <= rclient.xlen(keys.frames(line)) < 200


def test_sigterm_stops_a_looping_producer_cleanly(redis_url, line, rclient, image_dir):
    root, _ = image_dir
    cmd, env = _produce(redis_url, line, root, "--fps", "20", "--loop")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while rclient.xlen(keys.frames(line)) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "producer sent nothing"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "producer_stopped" in err and "sent " in out
    assert int(out.split()[1]) == rclient.xlen(keys.frames(line))


def test_a_missing_source_is_a_one_line_error(redis_url, line, tmp_path):
    cmd, env = _produce(redis_url, line, tmp_path / "nope", "--limit", "1")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "error:" in res.stderr and "nope" in res.stderr
    assert "Traceback" not in res.stderr


def test_push_images_pipelines_frames(rclient, line):
    images = [np.full((8, 8, 3), i * 30, np.uint8) for i in range(5)]
    ids = push_images(rclient, line, "bench", images, encoding="raw", chunk=2)
    entries = rclient.xrange(keys.frames(line))
    assert [parse_frame(f, 10**6).frame_id for _, f in entries] == ids
    assert decode_frame(parse_frame(entries[3][1], 10**6), 8, 64)[0, 0, 0] == 90


# ----------------------------------------------------------------------------- part ids


def _tags(rclient, line):
    frames = [parse_frame(f, 10**6) for _, f in rclient.xrange(keys.frames(line))]
    return [(f.part, f.view) for f in frames], {f.frame_id for f in frames}


def _start(redis_url, line, source, tmp_path, *args) -> Proc:
    env = daemon_env(redis_url, line)
    proc = Proc(["produce", "--source", str(source), "--camera", "cam1", "--fps", "0", "--loop",
                 *args], env, tmp_path / "producer.log")
    wait_for(lambda: any(e.get("event") == "producer_started" for e in proc.events()), 30,
             "producer started", (proc,))
    return proc


def _trigger(redis_url, line, *args):
    return subprocess.run([sys.executable, "-m", "daemon.cli", "trigger", "--line", line, *args],
                          env=_env(redis_url), capture_output=True, text=True, timeout=60)


def test_counter_and_views_give_every_frame_its_part_and_view(redis_url, line, rclient,
                                                              image_dir):
    root, _ = image_dir
    cmd, env = _produce(redis_url, line, root, "--fps", "0", "--limit", "5", "--loop",
                        "--part-from", "counter:SN-{n:03d}:start=7", "--views", "top,side")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "sent 5 frames (3 parts)" in res.stdout
    tags, frame_ids = _tags(rclient, line)
    assert tags == [("SN-007", "top"), ("SN-007", "side"), ("SN-008", "top"),
                    ("SN-008", "side"), ("SN-009", "top")]
    assert len(frame_ids) == 5


def test_name_pattern_skips_files_that_do_not_match(redis_url, line, rclient, image_dir):
    root, _ = image_dir  # 00.png .. 03.png
    cmd, env = _produce(redis_url, line, root, "--fps", "0", "--part-from", r"name:^0([12])\.",
                        "--view", "top")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert _tags(rclient, line)[0] == [("1", "top"), ("2", "top")]
    assert "skipped 2 without a usable part id" in res.stdout
    assert "part_id_skipped" in res.stderr and "'00.png' does not match" in res.stderr


def test_part_from_key_shoots_a_part_per_new_value(redis_url, line, rclient, image_dir,
                                                   tmp_path):
    root, _ = image_dir
    rclient.set(keys.next_part(line), "K1")  # announced before start: the first part
    proc = _start(redis_url, line, root, tmp_path, "--part-from", "key", "--views", "a,b")
    try:
        wait_for(lambda: rclient.xlen(keys.frames(line)) == 2, 30, "part K1", (proc,))
        rclient.set(keys.next_part(line), "K1")  # unchanged: no new part
        rclient.set(keys.next_part(line), "bad id")
        wait_for(lambda: any(e.get("event") == "part_id_skipped" for e in proc.events()), 30,
                 "the bad id skipped", (proc,))
        rclient.set(keys.next_part(line), "K2")
        wait_for(lambda: rclient.xlen(keys.frames(line)) == 4, 30, "part K2", (proc,))
    finally:
        assert proc.stop() == 0
    assert _tags(rclient, line)[0] == [("K1", "a"), ("K1", "b"), ("K2", "a"), ("K2", "b")]
    assert "sent 4 frames (2 parts)" in proc.log_path.read_text()


def test_part_from_trigger_with_rlrctl_trigger(redis_url, line, rclient, image_dir, tmp_path):
    root, _ = image_dir
    assert _trigger(redis_url, line, "OLD").returncode == 0  # before start: never shot
    proc = _start(redis_url, line, root, tmp_path, "--part-from", "trigger", "--views",
                  "top,side")
    try:
        first = _trigger(redis_url, line, "SN-1", "--by", "ann")
        assert first.returncode == 0, first.stderr
        rclient.xadd(keys.triggers(line), {"part_id": "SN\x002", "ts": "1", "via": "modbus"})
        rclient.xadd(keys.triggers(line), {"ts": "1", "via": "modbus"})  # no part_id at all
        assert _trigger(redis_url, line, "SN-3").returncode == 0
        wait_for(lambda: rclient.xlen(keys.frames(line)) == 4, 30, "two parts", (proc,))
    finally:
        assert proc.stop() == 0
    tags, frame_ids = _tags(rclient, line)
    assert tags == [("SN-1", "top"), ("SN-1", "side"), ("SN-3", "top"), ("SN-3", "side")]
    assert len(frame_ids) == 4
    log = proc.log_path.read_text()
    assert "sent 4 frames (2 parts)" in log and "skipped 2 without a usable part id" in log
    entry_id = first.stdout.strip()
    fields = dict(rclient.xrange(keys.triggers(line), entry_id, entry_id)[0][1])
    assert fields[b"part_id"] == b"SN-1" and fields[b"via"] == b"cli" and fields[b"by"] == b"ann"
    assert float(fields[b"ts"]) > 0
    assert rclient.get(keys.next_part(line)) == b"SN-3"


def test_a_bad_part_id_or_spec_is_a_one_line_error(redis_url, line, image_dir):
    res = _trigger(redis_url, line, "a b")
    assert res.returncode == 2 and "part id 'a b' holds whitespace" in res.stderr
    root, _ = image_dir
    for args, why in ((["--part-from", "counts"], "not a known form"),
                      (["--views", "top"], "--views needs --part-from")):
        cmd, env = _produce(redis_url, line, root, "--limit", "1", *args)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 2 and why in res.stderr and "Traceback" not in res.stderr
