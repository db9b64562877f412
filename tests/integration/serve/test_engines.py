"""Real workers on the serving engines: an OpenVINO worker and an ONNX Runtime worker score the
same frames as a torch worker (to 1e-4), `auto` measures and says what it chose, and an
engine that cannot run here stops the worker with one line naming the setting."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from daemon.line.producer import push_images
from tests.integration.procs import ROOT, daemon_env, results, start_worker, wait_for, wait_ready

pytestmark = pytest.mark.slow


def _events(log_path, name: str) -> list[dict]:
    out = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def test_exported_engines_score_like_torch_and_auto_picks_one(redis_url, line, rclient,
                                                              served_model, frame_jpegs,
                                                              tmp_path):
    cache = tmp_path / "engines"
    lines = {e: f"{line}-{e}" for e in ("torch", "openvino", "onnxruntime", "auto")}
    workers = {e: start_worker(redis_url, lines[e], served_model, f"w-{e}", tmp_path,
                               engine=e, engine_cache=cache, batch_size=4)
               for e in lines}
    try:
        wait_ready(rclient, *workers.values(), names=tuple(f"w-{e}" for e in lines),
                   timeout=240)
        frames = frame_jpegs[:12]
        order = {e: {fid: i for i, fid in enumerate(push_images(rclient, name, "cam1", frames))}
                 for e, name in lines.items()}
        for e, name in lines.items():
            wait_for(lambda name=name: len(results(rclient, name)) >= len(frames), 120,
                     f"the {e} worker's results", tuple(workers.values()))
        scores = {e: {order[e][r.frame_id]: r.score for r in results(rclient, name)}
                  for e, name in lines.items()}
        for e in ("openvino", "onnxruntime", "auto"):
            assert scores[e].keys() == scores["torch"].keys()
            for fid, ref in scores["torch"].items():
                assert abs(scores[e][fid] - ref) <= 1e-4 * abs(ref) + 1e-6, (e, fid)
    finally:
        for w in workers.values():
            w.stop()
    loaded = {e: _events(tmp_path / f"w-{e}.log", "model_loaded")[0]["engine"] for e in lines}
    assert loaded["openvino"] == "openvino/fp32" and loaded["onnxruntime"] == "onnxruntime/fp32"
    auto = _events(tmp_path / "w-auto.log", "model_loaded")[0]
    assert set(auto["measured"]) == {"torch", "onnxruntime", "openvino"}
    best = max(auto["measured"], key=auto["measured"].get)
    assert auto["engine"] == f"{best}/fp32"
    # The exports were made once and shared through the cache folder.
    assert len(list(cache.glob("*/onnx-fp32/model.onnx"))) == 1
    assert len(list(cache.glob("*/openvino-fp32/model.xml"))) == 1


def test_an_engine_that_cannot_run_here_is_a_one_line_error(redis_url, line, served_model):
    env = daemon_env(redis_url, line, consumer="w-trt", model=served_model, engine="tensorrt",
                     device="cpu")
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", "worker"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "RLR_ENGINE=tensorrt" in last, proc.stderr[-2000:]
