"""Shared fixtures: a small synthetic multi-class data set, written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlr.synthetic import write_dataset


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """3 classes, 24 normal training images each, 64 px, with test defects and masks."""
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

