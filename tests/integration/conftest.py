"""Integration fixtures: a real Redis server (127.0.0.1:6379 when reachable, else embedded)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
import redis

from daemon.line.embedded import EmbeddedRedis

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url():
    """URL of a real Redis server for this test session."""
    if _reachable(LOCAL_REDIS):
        yield LOCAL_REDIS
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def line(redis_url):
    """A fresh line name; its keys are deleted afterwards (the shared Redis stays clean)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"rlr:*{{{name}}}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def rclient(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def frame_jpegs(synthetic_root) -> list[bytes]:
    """JPEG bytes of the synthetic test images (normal and defective, 64 px)."""
    from daemon.wire.codec import encode_image
    from rlr.data import list_images, load_image

    paths = list_images(sorted(synthetic_root.glob("*/test")))
    return [encode_image(load_image(p), "jpeg")[0] for p in paths]


def _with_threshold(src, dst, value):
    import shutil

    from rlr.artifact import update_manifest

    shutil.copy(src, dst)
    update_manifest(dst, thresholds={"default": value})
    return dst


@pytest.fixture(scope="session")
def served_model(tiny_artifact, synthetic_root, tmp_path_factory):
    """The tiny model with a threshold at the median test score (about half the frames alarm)."""
    import numpy as np

    from rlr.artifact import load_artifact
    from rlr.data import list_images
    from rlr.inference import score_paths

    model, _ = load_artifact(tiny_artifact)
    paths = list_images(sorted(synthetic_root.glob("*/test")))
    scores = [s.score for s in score_paths(model, paths)]
    return _with_threshold(tiny_artifact, tmp_path_factory.mktemp("served") / "served.rlr",
                           float(np.median(scores)))


@pytest.fixture(scope="session")
def alarming_model(tiny_artifact, tmp_path_factory):
    """The tiny model with a threshold so low that every frame is anomalous."""
    return _with_threshold(tiny_artifact, tmp_path_factory.mktemp("alarm") / "alarm.rlr", 1e-9)
