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

