"""Training: the loss goes down, drawn defects outrank normals, checkpoints resume exactly."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from rlr.config import BackboneConfig, LevelConfig, RLRConfig, TrainConfig
from rlr.errors import CheckpointError
from rlr.inference import score_paths
from rlr.model import RLRModel, create_model
from rlr.train import fit
from tests.helpers import split_test_images


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return tiny_trained


def test_training_lowers_the_loss(trained):
    hist = trained.result.history
    assert len(hist) == 25
    assert hist[-1]["train_loss"] < 0.7 * hist[0]["train_loss"]
    assert trained.result.best_val_loss < hist[0]["val_loss"]
    assert trained.class_names == ["fabric", "tile", "washer"]
    assert trained.data_summary["n_validation"] >= 3  # at least one per class


def test_drawn_defects_score_above_normals(trained, synthetic_root):
    aucs = []
    for cls in trained.class_names:
        paths, labels = split_test_images(synthetic_root, cls)
        scores = [r.score for r in score_paths(trained.model, paths)]
        aucs.append(roc_auc_score(labels, scores))
    assert np.mean(aucs) >= 0.9, aucs


def test_defect_pixels_score_above_normal_pixels(trained, synthetic_root):
    from rlr.data import load_image

    cls = "tile"
    paths = sorted(p for d in (synthetic_root / cls / "test").iterdir() if d.name != "good"
                   for p in d.glob("*.png"))
    inside, outside = [], []
    for r in score_paths(trained.model, paths):
        mask_path = (synthetic_root / cls / "ground_truth" / r.path.parent.name
                     / f"{r.path.stem}_mask.png")
        mask = load_image(mask_path, 64)[..., 0] > 127
        inside.append(r.anomaly_map[mask].mean())
        outside.append(r.anomaly_map[~mask].mean())
    assert np.mean(inside) > 1.5 * np.mean(outside)


def _toy(seed=0, **train):
    cfg = RLRConfig(
        backbone=BackboneConfig("tf_efficientnet_lite0", (1, 2), 64, weights="none"),
        levels=(LevelConfig(16, 1, 2), LevelConfig(16, 1, 2)),
        train=TrainConfig(**{"epochs": 6, "batch_size": 4, "lr": 1e-3, "patience": 0, **train}),
    )
    torch.manual_seed(seed)
    model = create_model(cfg)
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(10, c, *s, generator=g)
             for c, s in zip(model.backbone.channels, model.backbone.grid_sizes, strict=True)]
    val = [f[:3] + 0.1 for f in feats]
    return model, cfg, feats, val


def _weights(model: RLRModel):
    return {k: v.clone() for k, v in model.reconstructor.state_dict().items()}


@pytest.mark.slow
def test_resumed_training_equals_uninterrupted_training(tmp_path):
    model, cfg, feats, val = _toy()
    fit(model, feats, val, cfg.train, progress=False)
    straight = _weights(model)

    model, cfg, feats, val = _toy()
    ckpt = tmp_path / "run.ckpt"

    def crash_after_three(record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt  # the process dies mid-run

    with pytest.raises(KeyboardInterrupt):
        fit(model, feats, val, cfg.train, checkpoint=ckpt, progress=False,
            on_epoch=crash_after_three)
    model, cfg, feats, val = _toy()  # a fresh process: nothing but the checkpoint survives
    res = fit(model, feats, val, cfg.train, checkpoint=ckpt, resume=True, progress=False)
    assert res.epochs_run == 6 and len(res.history) == 6
    resumed = _weights(model)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=0, msg=k)


def test_resume_with_other_settings_is_refused(tmp_path):
    model, cfg, feats, val = _toy()
    ckpt = tmp_path / "run.ckpt"
    fit(model, feats, val, dataclasses.replace(cfg.train, epochs=1), checkpoint=ckpt,
        progress=False)
    model, cfg, feats, val = _toy()
    with pytest.raises(CheckpointError, match="batch_size"):
        fit(model, feats, val, dataclasses.replace(cfg.train, batch_size=2), checkpoint=ckpt,
            resume=True, progress=False)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot resume"):
        fit(model, feats, val, cfg.train, checkpoint=ckpt, resume=True, progress=False)


@pytest.mark.slow
def test_early_stop_keeps_the_best_validation_epoch():
    model, cfg, feats, val = _toy(epochs=30, patience=3, lr=3e-2, schedule="constant",
                                  warmup_epochs=0)
    res = fit(model, feats, val, cfg.train, progress=False)
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert res.best_val_loss == pytest.approx(min(losses))
    if res.stopped_early:
        assert res.epochs_run - res.best_epoch == 3
    # the weights returned are the best epoch's, not the last one's
    from rlr.train import validation_loss
    assert validation_loss(model, val, 4, torch.device("cpu")) == pytest.approx(min(losses),
                                                                                rel=1e-5)


def test_time_budget_stops_training_and_finishes_the_schedule():
    model, cfg, feats, val = _toy(epochs=10_000, max_seconds=1.5, warmup_epochs=0)
    res = fit(model, feats, val, cfg.train, progress=False)
    assert res.out_of_time and res.epochs_run < 10_000
    ends = [0.0] + [h["seconds"] for h in res.history]
    longest_epoch = max(b - a for a, b in itertools.pairwise(ends))
    assert res.seconds < 1.5 + longest_epoch + 1.0  # it stops within one epoch of the budget
    assert res.history[-1]["lr"] < 0.3 * cfg.train.lr  # cosine decayed by time, not by steps


@pytest.mark.slow
def test_position_normalisation_is_fitted_on_the_validation_normals_and_ships(
        synthetic_root, tmp_path):
    from rlr.artifact import load_artifact, save_artifact
    from rlr.config import ScoreConfig, preset
    from rlr.data import list_images, load_image, to_tensor
    from rlr.datasets import load_dataset
    from rlr.engines import available, create_engine
    from rlr.errors import ConfigError
    from rlr.pipeline import train_on_dataset, train_on_samples

    cfg = preset("tiny")
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, epochs=2),
                      score=ScoreConfig(sigma=1.0, normalize="position"))
    ds = load_dataset("folder", synthetic_root)
    trained = train_on_dataset(cfg, ds, progress=False)
    model = trained.model
    stats = model.scorer.position_stats()
    assert [m.shape for m, _ in stats] == [torch.Size(g) for g in model.backbone.grid_sizes]
    assert all(m.abs().sum() > 0 and not torch.allclose(s, torch.ones_like(s))
               for m, s in stats)
    # The validation normals' own scores come out standardised: mean ~0 at every position.
    with torch.no_grad():
        val_feats = model.features(to_tensor([load_image(s.path, 64) for s in _val(ds, cfg)]))
    levels = model.level_scores(val_feats)
    for (m, _), lv in zip(stats, levels, strict=True):
        assert torch.allclose(lv.mean(0), m, atol=1e-4)
    x = to_tensor([load_image(p, 64) for p in list_images([synthetic_root / "tile" / "test"])][:4])
    ref = model.predict(x)
    path = tmp_path / "norm.rlr"
    save_artifact(path, model, trained.class_names)
    loaded = load_artifact(path).model
    assert torch.allclose(loaded.predict(x).score, ref.score)
    if "onnxruntime" in available(torch.device("cpu")):
        rt = create_engine("onnxruntime", loaded, load_artifact(path).manifest,
                           torch.device("cpu"), "fp32", tmp_path / "engines")
        assert torch.allclose(rt.predict(x).score, ref.score, rtol=1e-4)
    with pytest.raises(ConfigError, match="fitted on the validation normals and there are 1"):
        train_on_samples(cfg, list(ds.train)[:3], validation=list(ds.train)[3:4],
                         progress=False)


def _val(ds, cfg):
    from rlr.data import split_validation

    return split_validation(list(ds.train), cfg.train.val_fraction, cfg.train.seed)[1]
