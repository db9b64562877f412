"""`auto`: the engines available here measured on this machine, and the fastest one kept.

`rlrctl engines bench` records the measurement beside the artifact's cached exports, so a
worker with `RLR_ENGINE=auto` takes the recorded engine without measuring again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rlr.engines.base import Engine, available, create_engine
from rlr.engines.graph import artifact_cache
from rlr.errors import CacheDamaged
from rlr.model import RLRModel


def measure(engine: Engine, batch: int, seconds: float = 1.0) -> float:
    """Frames/s of `engine` on random batches of `batch` (after one warm-up batch)."""
    s = engine.image_size
    x = torch.rand(batch, 3, s, s)
    engine.predict(x)
    n, t0 = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - t0 < seconds:
        engine.predict(x)
        n += batch
    return n / (time.perf_counter() - t0)


def pick_fastest(model: RLRModel, manifest: dict[str, Any], device: torch.device,
                 batch: int, cache_dir: Path, seconds: float = 1.0,
                 log: Callable[[str, Exception], None] | None = None,
                 threads: int = 0, on_damage: str = "reexport",
                 warn: Callable[..., Any] | None = None) -> tuple[Engine, dict[str, float]]:
    """`auto`: every engine available here (fp32) measured on this machine, the fastest one.

    An engine recorded by `rlrctl engines bench` for this model is taken without measuring.
    Torch is always a candidate, so the choice is never slower than torch."""
    record = bench_record(manifest, cache_dir)
    if record and record.get("batch") == batch and record.get("best") in available(device):
        return create_engine(record["best"], model, manifest, device, "fp32", cache_dir,
                             threads=threads, on_damage=on_damage, warn=warn), \
            record["fps"]
    fps: dict[str, float] = {}
    best: tuple[float, Engine] | None = None
    for name in available(device):
        try:
            engine = create_engine(name, model, manifest, device, "fp32", cache_dir,
                                   threads=threads, on_damage=on_damage, warn=warn)
            fps[name] = measure(engine, batch, seconds)
        except CacheDamaged:  # refused on purpose: not a reason to serve another engine
            raise
        except Exception as exc:  # an engine that cannot run this model is not a candidate
            if log is not None:
                log(name, exc)
            continue
        if best is None or fps[name] > best[0]:
            best = (fps[name], engine)
    assert best is not None  # torch always runs
    return best[1], fps


def bench_record(manifest: dict[str, Any], cache_dir: Path) -> dict | None:
    path = _record_path(manifest, cache_dir)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_bench_record(manifest: dict[str, Any], batch: int, fps: dict[str, float],
                       cache_dir: Path) -> Path:
    path = _record_path(manifest, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    best = max(fps, key=fps.get)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"batch": batch, "fps": fps, "best": best,
                               "measured_at": time.time()}, indent=2))
    tmp.replace(path)
    return path


def _record_path(manifest: dict[str, Any], cache_dir: Path) -> Path:
    return artifact_cache(manifest, cache_dir) / "bench.json"
