"""`rlr.config.configure`: a preset with the overrides `rlrctl train` and training jobs take
(one copy of that rule for both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlr.config import PRESETS, configure, preset
from rlr.errors import ConfigError


def test_none_keeps_every_value_of_the_preset():
    assert configure("lite", backbone_weights=None, image_size=None, epochs=None) == \
        PRESETS["lite"]


def test_overrides_reach_the_backbone_and_the_training_recipe(tmp_path):
    cfg = configure("tiny", backbone_weights="none", image_size=96, epochs=7, lr=0.01,
                    max_seconds=120)
    assert (cfg.backbone.weights, cfg.backbone.weights_path, cfg.backbone.image_size) == \
        ("none", None, 96)
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.max_seconds) == (7, 0.01, 120)
    assert cfg.levels == preset("tiny").levels


def test_a_weights_path_becomes_an_absolute_file_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = configure("tiny", backbone_weights="weights/b6.safetensors")
    assert cfg.backbone.weights == "file"
    assert cfg.backbone.weights_path == str(tmp_path / "weights" / "b6.safetensors")
    assert Path(cfg.backbone.weights_path).is_absolute()


def test_bad_overrides_say_what_is_wrong():
    with pytest.raises(ConfigError, match=r"unknown training settings \['epoch'\]"):
        configure("tiny", epoch=3)
    with pytest.raises(ConfigError, match="image_size 8 is too small"):
        configure("tiny", image_size=8)
    with pytest.raises(ConfigError, match="preset 'huge' unknown"):
        configure("huge")
