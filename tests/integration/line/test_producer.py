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
