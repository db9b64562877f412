"""Reconstructor speed: the fast inference path vs the straightforward dense-mask path.

On the CPU it also runs the fast path exported to ONNX Runtime and OpenVINO (fp32), against
the same dense path (the authors' forward).

Runs the `paper` preset's reconstructor dimensions (tf_efficientnet_b6 levels 2 and 3 at
256 px: 32x32 and 16x16 grids, d_model 256/512, 4 layers, 8 heads) on random features, batch 8,
and prints img/s of both paths and their ratio, measured in one run. fp32 on CPU; bf16 autocast
on CUDA. Backbone time is not included (it is the same for both paths).

    python benchmarks/model_speed.py [--preset paper] [--batch 8] [--iters 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from rlr.backbone import Backbone
from rlr.config import BackboneConfig, preset
from rlr.model import RLRReconstructor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(rec, feats, dense: bool, iters: int, device: torch.device) -> float:
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else contextlib.nullcontext())
    with torch.inference_mode(), amp:
        rec(feats, dense=dense)  # warm-up (and builds the reference cache on the fast path)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            rec(feats, dense=dense)
        _sync(device)
    return iters * feats[0].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-engines", action="store_true",
                    help="skip the exported fast path on ONNX Runtime / OpenVINO (CPU)")
    args = ap.parse_args()

    cfg = preset(args.preset)
    device = torch.device(args.device)
    # Architecture only: the speed of the reconstructor does not depend on backbone weights.
    bb = Backbone(BackboneConfig(**{**cfg.backbone.__dict__, "weights": "none"}),
                  load_weights=False)
    torch.manual_seed(0)
    rec = RLRReconstructor(bb.channels, bb.grid_sizes, cfg.levels).to(device).eval()
    feats = [torch.randn(args.batch, c, *g, device=device)
             for c, g in zip(bb.channels, bb.grid_sizes, strict=True)]

    with torch.inference_mode():
        d = rec(feats, dense=True)
        f = rec(feats)
    rel = max(float((a.recon - b.recon).abs().max() / a.recon.abs().max())
              for a, b in zip(d, f, strict=True))

    dense = measure(rec, feats, True, args.iters, device)
    fast = measure(rec, feats, False, args.iters, device)
    dims = ", ".join(f"{g[0]}x{g[1]}xC{c} d{lv.d_model} L{lv.n_layers} h{lv.n_heads} w{lvl.window}"
                     for c, g, lv, lvl in zip(bb.channels, bb.grid_sizes, cfg.levels, rec.levels,
                                              strict=True))
    prec = "bf16 autocast" if device.type == "cuda" else "fp32"
    print(f"preset {args.preset}: {dims}")
    print(f"device {device} ({prec}), batch {args.batch}, {args.iters} iterations, "
          f"{torch.get_num_threads()} threads")
    print(f"dense path: {dense:8.2f} img/s")
    print(f"fast path:  {fast:8.2f} img/s")
    print(f"speed-up:   {fast / dense:8.2f}x   (max relative difference {rel:.2e})")
    if device.type == "cpu" and not args.no_engines:
        for name, fps, err in exported(rec, feats, f, args.iters):
            print(f"{name + ':':<12}{fps:8.2f} img/s   {fps / dense:5.2f}x the dense path "
                  f"(max relative difference to fast {err:.2e})")


def exported(rec, feats, ref, iters: int):
    """The fast path exported to ONNX (reference keys/values folded in as constants) on ONNX
    Runtime and OpenVINO, where installed."""
    import importlib.util
    import tempfile
    import warnings

    class Recon(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rec = rec

        def forward(self, *fs):
            return tuple(o.recon for o in self.rec(list(fs)))

    path = tempfile.mkdtemp() + "/rec.onnx"
    names = [f"f{i}" for i in range(len(feats))]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Recon().eval(), tuple(feats), path, input_names=names,
                          opset_version=17, dynamo=False)
    inputs = {n: x.numpy() for n, x in zip(names, feats, strict=True)}
    runs = []
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        runs.append(("onnxruntime", lambda: sess.run(None, inputs)))
    if importlib.util.find_spec("openvino"):
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        runs.append(("openvino", lambda: [compiled(inputs)[i] for i in range(len(feats))]))
    for name, run in runs:
        outs = run()
        err = max(float(abs(o - r.recon.numpy()).max() / r.recon.abs().max())
                  for o, r in zip(outs, ref, strict=True))
        t0 = time.perf_counter()
        for _ in range(iters):
            run()
        yield name, iters * feats[0].shape[0] / (time.perf_counter() - t0), err


if __name__ == "__main__":
    main()
