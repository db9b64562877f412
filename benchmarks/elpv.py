"""Quality on real data: one unified RLR model on ELPV mono + poly normals, CPU time budget.

Trains the `lite-coarse` preset (packaged EfficientNet-Lite0 backbone, levels 3 and 4) on the
ELPV normal training split with a training-time budget (default 20 minutes; the cosine schedule
is fitted into it),
selects the checkpoint on the ELPV validation normals, then evaluates on the test split and
prints per-class image AUROC / AP / F1-max, the p = 1/3 and 2/3 rows apart, and the times.

    python benchmarks/elpv.py [--minutes 20] [--image-size 256] [--device cpu] [--out DIR]

ELPV (PyPI `elpv-dataset`) is CC BY-NC-SA: benchmark use only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from rlr.config import BackboneConfig, preset
from rlr.datasets import load_dataset
from rlr.evaluate import evaluate
from rlr.pipeline import train_on_dataset
from rlr.report import console_table, write_report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=20.0, help="training time budget")
    ap.add_argument("--epochs", type=int, default=40, help="upper bound on epochs")
    ap.add_argument("--preset", default="lite-coarse")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache-dir", default=".cache/elpv-features",
                    help="backbone feature cache (reused between runs)")
    ap.add_argument("--out", default=None, help="also write a report folder here")
    args = ap.parse_args()

    cfg = preset(args.preset)
    if args.image_size:
        cfg = cfg.replace(backbone=BackboneConfig(**{**cfg.backbone.__dict__,
                                                      "image_size": args.image_size}))
    changes = {"epochs": args.epochs, "max_seconds": args.minutes * 60, "patience": 0,
               "seed": args.seed}
    if args.lr:
        changes["lr"] = args.lr
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    cfg = cfg.replace(train=dataclasses.replace(cfg.train, **changes))

    ds = load_dataset("elpv", seed=args.seed)
    summary = ds.summary()["classes"]
    print(f"ELPV split (seed {args.seed}): " + "; ".join(
        f"{c}: train {v['train']}, validation {v['validation']}, test {v['test_normal']} normal "
        f"+ {v['test_anomalous']} p=1 + {sum(v['groups'].values())} p=1/3,2/3 apart"
        for c, v in summary.items()))
    print(f"preset {args.preset}: {cfg.backbone.name} {cfg.backbone.out_indices} "
          f"@ {cfg.backbone.image_size} px, levels "
          + ", ".join(f"d{lv.d_model}x{lv.n_layers}" for lv in cfg.levels)
          + f", lr {cfg.train.lr}, batch {cfg.train.batch_size}, budget {args.minutes:g} min, "
          f"{torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    trained = train_on_dataset(cfg, ds, device=args.device, cache_dir=args.cache_dir,
                               progress=True)
    res = trained.result
    rep = evaluate(trained.model, ds, batch_size=16, device=trained.model.reconstructor
                   .levels[0].reference.device, progress=True)
    total = time.perf_counter() - t0

    print()
    print(console_table(rep))
    print()
    print(f"training: {res.seconds / 60:.1f} min, {res.epochs_run} epochs "
          f"({res.images_per_second:.1f} img/s), best validation epoch {res.best_epoch}; "
          f"backbone features {trained.data_summary['feature_seconds']:.0f} s; "
          f"evaluation {rep.seconds:.0f} s ({rep.images_per_second:.1f} img/s); "
          f"total {total / 60:.1f} min")
    print(f"mean image AUROC over mono/poly: {rep.mean['image_auroc']:.4f}")
    if args.out:
        out = write_report(rep, args.out, trained.model, overlays_per_kind=3)
        (Path(out) / "training.json").write_text(json.dumps(trained.training_summary(),
                                                            indent=2, default=float))
        print(f"report: {out}/report.md")


if __name__ == "__main__":
    main()
