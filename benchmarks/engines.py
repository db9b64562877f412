"""Model-only frames/s per serving engine and precision, side by side in one run.

For each preset (`lite`, `lite-coarse`, and the `paper` dimensions with random backbone
weights), each engine installed here (torch eager, ONNX Runtime, OpenVINO fp32 and bf16 where
the CPU has it) at batch 1 and 8: frames/s on random images, and the speed-up over torch.
Engines alternate within each measurement round, so a slow phase of the machine hits all of
them alike; the median of the rounds is printed.

    python benchmarks/engines.py [--presets lite,lite-coarse,paper] [--batches 1,8]
                                 [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from rlr.config import preset
from rlr.engines import available, create_engine, measure
from rlr.model import create_model


def candidates() -> list[tuple[str, str]]:
    out = [(name, "fp32") for name in available(torch.device("cpu"))]
    if "openvino" in dict(out):
        import openvino as ov

        if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            out.append(("openvino", "bf16"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="lite,lite-coarse,paper")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--seconds", type=float, default=3.0, help="per engine per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="rlr-engines-"))
    engines = candidates()
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads); engines: {', '.join(f'{n}/{p}' for n, p in engines)}", flush=True)
    print(f"{'preset':<12} {'batch':>5} {'engine':<18} {'frames/s':>9} {'vs torch':>9}")
    for name in args.presets.split(","):
        torch.manual_seed(0)
        model = create_model(preset(name), load_backbone_weights=name != "paper").eval()
        manifest = {"sha256": f"bench-{name}-" + "0" * 40}
        built = {}
        for engine, precision in engines:
            try:
                built[(engine, precision)] = create_engine(
                    engine, model, manifest, torch.device("cpu"), precision, cache)
            except Exception as exc:
                print(f"{name:<12} {engine}/{precision}: cannot build ({exc})", flush=True)
        for batch in (int(b) for b in args.batches.split(",")):
            fps: dict[tuple[str, str], list[float]] = {k: [] for k in built}
            for _ in range(args.rounds):
                for key, rt in built.items():
                    fps[key].append(measure(rt, batch, args.seconds))
            base = float(np.median(fps[("torch", "fp32")]))
            for (engine, precision), values in fps.items():
                med = float(np.median(values))
                print(f"{name:<12} {batch:>5} {engine + '/' + precision:<18} {med:9.1f} "
                      f"{med / base:8.2f}x", flush=True)


if __name__ == "__main__":
    main()
