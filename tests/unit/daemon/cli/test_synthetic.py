"""`rlrctl synthetic` writes the MVTec-AD layout the training commands read."""

from __future__ import annotations

from click.testing import CliRunner

from daemon.cli import main


def test_synthetic_writes_the_mvtec_layout_with_masks(tmp_path):
    out = tmp_path / "data"
    res = CliRunner().invoke(main, ["synthetic", str(out), "--classes", "tile", "--n-train", "3",
                                    "--n-test", "1", "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "wrote synthetic data set" in res.output
    assert len(list((out / "tile" / "train" / "good").glob("*.png"))) == 3
    defects = [p for p in (out / "tile" / "test").iterdir() if p.name != "good"]
    assert defects, "no defect folder"
    masks = list((out / "tile" / "ground_truth").rglob("*_mask.png"))
    assert len(masks) == sum(len(list(d.glob("*.png"))) for d in defects)
