"""`rlrctl export`, `rlrctl engines bench` and `--engine` on score, as a user runs them."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner

from daemon.cli import main


def test_export_score_and_bench_on_the_engines(served_model, synthetic_root, tmp_path,
                                               monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()
    res = runner.invoke(main, ["export", str(served_model), "--format", "openvino",
                               "--out", str(tmp_path / "ov")])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "ov" / "export.json").read_text())
    assert info["format"] == "openvino" and (tmp_path / "ov" / "model.xml").exists()

    images = str(synthetic_root / "tile" / "test")
    scores = {}
    for engine in ("torch", "onnxruntime", "openvino"):
        res = runner.invoke(main, ["score", "--model", str(served_model), images, "--json",
                                   "--engine", engine])
        assert res.exit_code == 0, res.output
        rows = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
        scores[engine] = [r["score"] for r in rows]
    assert len(scores["torch"]) > 3
    for engine in ("onnxruntime", "openvino"):
        assert all(abs(a - b) <= 1e-4 * abs(b) + 1e-6
                   for a, b in zip(scores[engine], scores["torch"], strict=True))

    res = runner.invoke(main, ["engines", "bench", str(served_model), "--batch", "2",
                               "--seconds", "0.3"])
    assert res.exit_code == 0, res.output
    assert "fastest:" in res.output and "openvino" in res.output
    record = next((tmp_path / "cache" / "rlr" / "engines").glob("*/bench.json"))
    assert json.loads(record.read_text())["batch"] == 2


def test_export_refuses_what_it_cannot_write(served_model, tmp_path):
    res = CliRunner().invoke(main, ["export", str(served_model), "--format", "onnx",
                                    "--out", str(tmp_path / "x"), "--precision", "fp16"])
    assert res.exit_code == 2 and "onnx exports are fp32" in res.output


def test_engines_lists_the_registry():
    res = CliRunner().invoke(main, ["engines"])
    assert res.exit_code == 0, res.output
    rows = {ln.split()[0]: ln for ln in res.output.splitlines()[1:]}
    assert next(iter(rows)) == "torch"
    assert {"torch", "onnxruntime", "openvino", "tensorrt"} <= set(rows)
    assert "pip install 'rlr[onnx]'" in rows["onnxruntime"] and " yes " in rows["openvino"]
    assert "torchscript" in rows["torch"] and "a CUDA device" in rows["tensorrt"]


def test_export_without_the_onnx_package_names_the_extra(served_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails as if not installed
    res = CliRunner().invoke(main, ["export", str(served_model), "--format", "onnx",
                                    "--out", str(tmp_path / "x")])
    assert res.exit_code == 2, res.output
    assert "pip install 'rlr[onnx]'" in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 2  # the "exporting" line and the error
    assert not (tmp_path / "x").exists()
