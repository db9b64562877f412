"""Fixtures of the worker's unit tests: a clean environment and a small untrained model."""

from __future__ import annotations

import os
import shutil

import pytest

from daemon.serve.served_model import ServedModel
from rlr.artifact import save_artifact, update_manifest
from rlr.config import BackboneConfig, preset
from rlr.model import create_model


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith("RLR_"):
            monkeypatch.delenv(var)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """An untrained `tiny` model: the worker's logic does not depend on what it learned, and
    thresholds are set per test; training one would cost the suite ~20 s."""
    cfg = preset("tiny")
    cfg = cfg.replace(backbone=BackboneConfig(cfg.backbone.name, cfg.backbone.out_indices, 64,
                                              weights="none"))
    path = tmp_path_factory.mktemp("model") / "tiny.rlr"
    save_artifact(path, create_model(cfg).eval(), ["widget"])
    return path


@pytest.fixture(scope="module")
def engines(artifact, tmp_path_factory):
    """Engines of `artifact` by thresholds, loaded once per module."""
    cache: dict = {}

    def get(**thresholds) -> ServedModel:
        key = tuple(sorted(thresholds.items()))
        if key not in cache:
            path = tmp_path_factory.mktemp("thr") / "model.rlr"
            shutil.copy(artifact, path)
            if thresholds:
                update_manifest(path, thresholds=thresholds)
            cache[key] = ServedModel.from_file(path, "cpu")
        return cache[key]

    return get
