"""A tampered engine cache on a real worker: a cached ONNX graph edited, then truncated, between
restarts. The worker never scores with a file that differs from the one it exported: it exports
again (and says which file was damaged), or, with RLR_ENGINE_CACHE_DAMAGED=refuse, stops with
one line instead of a traceback."""

from __future__ import annotations

import json

from tests.chaos.line import ChaosLine


def _scores(line: ChaosLine, ids: list[str]) -> list[float]:
    by_id = {r.frame_id: r.score for r in line.results()}
    return [by_id[i] for i in ids]


def _restart(line: ChaosLine, name: str, **settings):
    line.worker_name = name
    return line.start_worker(engine="onnxruntime", **settings)


def test_a_tampered_engine_cache_is_exported_again_or_refused(chaos, frame_jpegs, record,
                                                              tmp_path):
    cache = tmp_path / "engines"
    line = chaos()
    _restart(line, "w-clean", engine_cache=cache)
    line.wait_status("ready")
    clean = line.push(frame_jpegs[:6])
    line.wait_settled(clean)
    line.worker.stop()

    graph = next(cache.glob("*/onnx-fp32/model.onnx"))
    data = bytearray(graph.read_bytes())  # flip the sign bits of bytes among the weights
    data[-4096:-3936] = bytes(b ^ 0x80 for b in data[-4096:-3936])
    graph.write_bytes(bytes(data))
    _restart(line, "w-tampered", engine_cache=cache)
    line.wait_status("ready")
    again = line.push(frame_jpegs[:6])
    line.wait_settled(again)
    line.worker.stop()
    assert all(abs(a - b) <= 1e-4 * abs(b) + 1e-6
               for a, b in zip(_scores(line, again), _scores(line, clean), strict=True))
    damaged = [e for e in line.worker.events() if e.get("event") == "engine_cache_damaged"]
    assert [e["file"] for e in damaged] == [str(graph)], damaged
    record(line.figures("engine cache edited, restart"))

    graph.write_bytes(graph.read_bytes()[:5000])  # truncated
    proc = _restart(line, "w-refuse", engine_cache=cache, engine_cache_damaged="refuse")
    assert proc.p.wait(timeout=120) == 2
    out = proc.log_path.read_text()
    assert "Traceback" not in out and "InvalidProtobuf" not in out
    errors = [ln for ln in out.splitlines() if "RLR_ENGINE_CACHE_DAMAGED=refuse" in ln]
    assert len(errors) == 1 and str(graph) in errors[0], out[-2000:]
    assert graph.stat().st_size == 5000  # left as found
    json.loads((graph.parent / "files.json").read_text())  # the record is kept too
