"""Shared fixtures: a small synthetic multi-class data set, written once per test session, and
the models trained or thresholded on it.

Every test loads this file, the pure ones too (tests/unit/test_import_boundary.py), so it imports
nothing heavy at the top: cv2 and torch load inside the fixtures, when a test asks for one
(tests/unit/test_layout.py checks it)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """3 classes, 24 normal training images each, 64 px, with test defects and masks."""
    from rlr.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synthetic")
    return write_dataset(root, classes=["fabric", "tile", "washer"], n_train=24, n_test_good=4,
                         n_test_defect=2, size=64, seed=0)


@pytest.fixture(scope="session")
def tiny_trained(synthetic_root):
    """A `tiny` model trained for 25 epochs on `synthetic_root` (a few seconds on a CPU)."""
    import dataclasses

    from rlr.config import preset
    from rlr.datasets import load_dataset
    from rlr.pipeline import train_on_dataset

    cfg = preset("tiny")
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=25))
    return train_on_dataset(cfg, load_dataset("folder", synthetic_root), progress=False)


@pytest.fixture(scope="session")
def tiny_artifact(tiny_trained, tmp_path_factory) -> Path:
    from rlr.artifact import save_artifact

    path = tmp_path_factory.mktemp("artifact") / "tiny.rlr"
    save_artifact(path, tiny_trained.model, tiny_trained.class_names,
                  training=tiny_trained.training_summary())
    return path


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
