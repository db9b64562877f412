"""`rlrctl` end to end on a small synthetic set: train, info, score, and its error messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from daemon.cli import main


@pytest.fixture(scope="module")
def model_file(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "model.rlr"
    res = CliRunner().invoke(main, ["train", "--data", str(synthetic_root), "--preset", "tiny",
                                    "--epochs", "12", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "trained 3 classes (fabric, tile, washer)" in res.output
    return out


def test_info_shows_the_manifest(model_file):
    res = CliRunner().invoke(main, ["info", str(model_file)])
    assert res.exit_code == 0, res.output
    assert "tf_efficientnet_lite0" in res.output and "fabric, tile, washer" in res.output
    res = CliRunner().invoke(main, ["info", "--json", str(model_file)])
    manifest = json.loads(res.output)
    assert manifest["class_names"] == ["fabric", "tile", "washer"]
    assert manifest["backbone"]["weight_source"].startswith("packaged:")


def test_score_prints_a_table_and_writes_overlays(model_file, synthetic_root, tmp_path):
    test_dir = synthetic_root / "tile" / "test"
    res = CliRunner().invoke(main, ["score", "--model", str(model_file), str(test_dir),
                                    "--out", str(tmp_path / "ov"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    n = len(list(test_dir.rglob("*.png")))
    overlays = sorted((tmp_path / "ov").glob("*.png"))
    assert len(overlays) == n
    img = np.asarray(Image.open(overlays[0]))
    assert img.shape[0] == 64 and img.shape[1] == 2 * 64 + 4  # image | overlay
    rows = [ln for ln in res.output.splitlines() if ln.strip().endswith("-")]
    assert len(rows) == n
    res = CliRunner().invoke(main, ["score", "--model", str(model_file), str(test_dir), "--json",
                                    "--threshold", "0"])
    lines = [json.loads(ln) for ln in res.output.splitlines()]
    assert len(lines) == n and all(ln["anomalous"] for ln in lines)
    scores = {ln["path"].split("/")[-2] + "/" + ln["path"].split("/")[-1]: ln["score"]
              for ln in lines}
    good = [s for k, s in scores.items() if k.startswith("good/")]
    bad = [s for k, s in scores.items() if not k.startswith("good/")]
    assert np.mean(bad) > np.mean(good)


def test_console_script_is_installed(model_file):
    exe = shutil.which("rlrctl", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "rlrctl console script missing: pip install -e ."
    out = subprocess.run([exe, "info", str(model_file)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "sha256" in out.stdout


def _train(tmp_path, data):
    return CliRunner().invoke(main, ["train", "--data", str(data), "--preset", "tiny",
                                     "--epochs", "1", "--out", str(tmp_path / "m.rlr"),
                                     "--quiet"])


def _layout(tmp_path, cls="part"):
    d = tmp_path / "data" / cls / "train" / "good"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path / "data", d


def test_train_errors_name_the_problem(tmp_path):
    res = _train(tmp_path, tmp_path / "nowhere")
    assert res.exit_code == 2 and "nowhere" in res.output and "Traceback" not in res.output

    root, good = _layout(tmp_path)
    for p in good.iterdir():
        p.unlink()
    res = _train(tmp_path, root)
    assert res.exit_code == 2 and "part" in res.output and "no training images" in res.output

    shutil.rmtree(root)
    root, good = _layout(tmp_path)
    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.new("CMYK", (64, 64)).save(good / "cmyk.jpg")
    res = _train(tmp_path, root)
    assert res.exit_code == 2
    assert "broken.png" in res.output and "cmyk.jpg" in res.output
    assert "CMYK" in res.output
    assert not (tmp_path / "m.rlr").exists()


def test_score_errors(model_file, tmp_path):
    res = CliRunner().invoke(main, ["score", "--model", str(tmp_path / "missing.rlr"), "x.png"])
    assert res.exit_code == 2 and "missing.rlr" in res.output
    res = CliRunner().invoke(main, ["score", "--model", str(model_file), str(tmp_path / "no.png")])
    assert res.exit_code == 2 and "no.png" in res.output


def test_import_official_writes_an_artifact_with_the_same_reconstructions(tmp_path):
    import torch

    from rlr.artifact import load_artifact
    from rlr.compat import rlr_to_official
    from rlr.config import preset
    from rlr.model import create_model

    torch.manual_seed(0)
    model = create_model(preset("tiny", feature_norm="none")).eval()
    ckpt = tmp_path / "official.pth"
    torch.save({"state_dict": rlr_to_official(model), "epoch": np.int64(7),
                "best_img_auc": np.float64(0.91)}, ckpt)
    out = tmp_path / "imported.rlr"
    res = CliRunner().invoke(main, ["import-official", str(ckpt), "--preset", "tiny",
                                    "--out", str(out), "--classes", "a,b"])
    assert res.exit_code == 0, res.output
    art = load_artifact(out)
    assert art.manifest["class_names"] == ["a", "b"]
    assert art.manifest["training"]["official"]["epoch"] == 7
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want, got = model(images), art.model(images)
    assert torch.equal(want.anomaly_map, got.anomaly_map)

    res = CliRunner().invoke(main, ["import-official", str(ckpt), "--preset", "lite",
                                    "--out", str(tmp_path / "x.rlr"), "--backbone-weights",
                                    "none"])
    assert res.exit_code == 2 and "level 0" in res.output


def test_eval_prints_a_table_and_writes_a_report(tiny_artifact, synthetic_root, tmp_path):
    res = CliRunner().invoke(main, ["eval", "--model", str(tiny_artifact), "--data",
                                    str(synthetic_root), "--dataset", "mvtec", "--out",
                                    str(tmp_path / "rep"), "--overlays", "1"])
    assert res.exit_code == 0, res.output
    assert "img_auroc" in res.output and "px_aupro" in res.output and "mean" in res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(data["per_class"]) == {"fabric", "tile", "washer"}
    assert (tmp_path / "rep" / "report.md").exists()
    assert len(list((tmp_path / "rep" / "overlays").glob("*.png"))) == 6


def test_eval_refuses_a_mask_of_the_wrong_size(tiny_artifact, synthetic_root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(synthetic_root, bad)
    mask = next((bad / "tile" / "ground_truth").rglob("*_mask.png"))
    Image.new("L", (10, 10)).save(mask)
    res = CliRunner().invoke(main, ["eval", "--model", str(tiny_artifact), "--data", str(bad),
                                    "--dataset", "mvtec"])
    assert res.exit_code == 2 and mask.name in res.output


def test_calibrate_writes_thresholds_that_score_uses(tiny_artifact, synthetic_root, tmp_path):
    calibrated = tmp_path / "cal.rlr"
    res = CliRunner().invoke(main, ["calibrate", "--model", str(tiny_artifact), "--data",
                                    str(synthetic_root), "--far", "0", "--out", str(calibrated)])
    assert res.exit_code == 0, res.output
    assert "default" in res.output and "tile" in res.output
    manifest = json.loads(CliRunner().invoke(main, ["info", "--json", str(calibrated)]).output)
    th = manifest["thresholds"]
    assert set(th) == {"default", "fabric", "tile", "washer"}
    assert th["default"] >= max(th["fabric"], th["tile"], th["washer"])
    assert manifest["metrics"]["calibration"]["far"] == 0
    # what the thresholds will do on unseen normals: printed per class and stored
    n = manifest["metrics"]["calibration"]["counts"]["tile"]
    mean, lo, hi = manifest["metrics"]["calibration"]["unseen_far"]["tile"]
    assert mean == pytest.approx(1 / (n + 1)) and 0 < lo < mean < hi < 1
    tile_row = next(ln for ln in res.output.splitlines() if ln.startswith("tile"))
    assert tile_row.endswith(f"{lo:.2%} to {hi:.2%}") and "on unseen normals" in res.output
    # normals held out of training stay below their threshold; drawn defects mostly above
    res = CliRunner().invoke(main, ["score", "--model", str(calibrated), "--json",
                                    str(synthetic_root / "tile" / "test")])
    lines = [json.loads(ln) for ln in res.output.splitlines()]
    flagged = [ln["anomalous"] for ln in lines if "/good/" not in ln["path"]]
    assert sum(flagged) >= len(flagged) // 2
    assert all(ln["normalized"] == pytest.approx(ln["score"] / th["default"]) for ln in lines)
    assert json.loads(CliRunner().invoke(main, ["info", "--json", str(tiny_artifact)]).output
                      )["thresholds"]["default"] is None  # --out left the original alone
    # eval reports how the calibrated thresholds behave on the test split
    res = CliRunner().invoke(main, ["eval", "--model", str(calibrated), "--data",
                                    str(synthetic_root), "--dataset", "mvtec", "--no-pixel",
                                    "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "far" in res.output and "detect" in res.output
    row = json.loads((tmp_path / "rep" / "report.json").read_text())["per_class"]["tile"]
    assert row["threshold"] == pytest.approx(th["tile"])
    assert 0.0 <= row["false_alarm_rate"] <= 1.0 and row["detection_rate"] >= 0.5


def test_calibrate_uses_a_calibration_folder_whole_and_the_training_folder_split(
        synthetic_root, tmp_path):
    from rlr.artifact import save_artifact
    from rlr.config import preset
    from rlr.model import create_model
    from rlr.synthetic import write_dataset

    # untrained (the folder rule does not depend on the scores), "trained" on synthetic_root
    tiny_artifact = tmp_path / "tiny.rlr"
    save_artifact(tiny_artifact, create_model(preset("tiny"), load_backbone_weights=False),
                  ["fabric", "tile", "washer"], training={"data": {"root": str(synthetic_root)}})

    calib = write_dataset(tmp_path / "calib", classes=["fabric", "tile", "washer"], n_train=12,
                          n_test_good=0, n_test_defect=0, size=64, seed=5)
    res = CliRunner().invoke(main, ["calibrate", "--model", str(tiny_artifact), "--data",
                                    str(calib), "--far", "0.1", "--out", str(tmp_path / "a.rlr")])
    assert res.exit_code == 0, res.output
    assert f"calibrating on every normal of {calib}" in res.output
    for cls in ("fabric", "tile", "washer"):
        assert f"{cls:<16}   12 normals from {calib / cls / 'train' / 'good'}" in res.output
    counts = json.loads(CliRunner().invoke(main, ["info", "--json", str(tmp_path / "a.rlr")])
                        .output)["metrics"]["calibration"]["counts"]
    assert counts == {"fabric": 12, "tile": 12, "washer": 12, "default": 36}

    res = CliRunner().invoke(main, ["calibrate", "--model", str(tiny_artifact), "--data",
                                    str(synthetic_root), "--far", "0.1",
                                    "--out", str(tmp_path / "b.rlr")])
    assert res.exit_code == 0, res.output
    assert f"the validation split of {synthetic_root} (the model trained on it" in res.output
    counts = json.loads(CliRunner().invoke(main, ["info", "--json", str(tmp_path / "b.rlr")])
                        .output)["metrics"]["calibration"]["counts"]
    assert 0 < counts["tile"] < 24  # only the images training held out
