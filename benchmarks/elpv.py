"""Quality on real data: one unified RLR model on ELPV mono + poly normals, CPU time budget.

Trains the `lite-coarse` preset (packaged EfficientNet-Lite0 backbone, levels 3 and 4) on the
ELPV normal training split with a training-time budget (default 20 minutes; the cosine schedule
is fitted into it),
selects the checkpoint on the ELPV validation normals, then evaluates on the test split and
prints per-class image AUROC / AP / F1-max, the p = 1/3 and 2/3 rows apart, and the times.

Beside it, a memory-bank baseline of the PatchCore kind (`rlr.membank`) on the same backbone
features, levels, image size and training normals, scored on the same test split. Both get
per-class alarm thresholds from the validation normals at `--far` (rlr.calibrate, as
`rlrctl calibrate`), and the table shows the false-alarm rate those thresholds give on the test
normals and the detection rate on the p = 1 cells.

    python benchmarks/elpv.py [--minutes 20] [--image-size 256] [--device cpu] [--out DIR]
                              [--coreset 0.01] [--far 0.01]

ELPV (PyPI `elpv-dataset`) is CC BY-NC-SA: benchmark use only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from rlr.calibrate import UNSEEN_LEVEL, calibrate_model, normals_needed
from rlr.config import SCORE_NORMALIZE, BackboneConfig, preset
from rlr.datasets import load_dataset
from rlr.evaluate import evaluate
from rlr.features import channel_stats
from rlr.membank import fit_memory_bank
from rlr.pipeline import sample_features, train_on_dataset
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
    ap.add_argument("--coreset", type=float, default=0.01,
                    help="memory-bank baseline: fraction of training patches kept")
    ap.add_argument("--far", type=float, default=0.01, help="false-alarm target for thresholds")
    ap.add_argument("--normalize", choices=SCORE_NORMALIZE, default=None,
                    help="RLR level fusion: position = each level's scores standardised per "
                         "position on the validation normals; none = raw average (default: "
                         "the preset's)")
    args = ap.parse_args()

    cfg = preset(args.preset)
    if args.normalize:
        cfg = cfg.replace(score=dataclasses.replace(cfg.score, normalize=args.normalize))
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
          + f", score fusion {cfg.score.normalize}"
          + f", lr {cfg.train.lr}, batch {cfg.train.batch_size}, budget {args.minutes:g} min, "
          f"{torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    trained = train_on_dataset(cfg, ds, device=args.device, cache_dir=args.cache_dir,
                               progress=True)
    res = trained.result
    model = trained.model
    dev = model.reconstructor.levels[0].reference.device

    t1 = time.perf_counter()
    train_feats = sample_features(model, ds.train, args.cache_dir, dev, progress=True)
    stats = channel_stats(train_feats) if cfg.feature_norm == "channel" else (None, None)
    baseline = fit_memory_bank(model.backbone, train_feats, model.scorer, args.coreset,
                               *stats, seed=args.seed).to(dev)
    del train_feats
    bank_seconds = time.perf_counter() - t1

    cals = {name: calibrate_model(m, ds.validation, args.far, batch_size=16, device=dev)
            for name, m in (("RLR", model), ("baseline", baseline))}
    reps = {name: evaluate(m, ds, batch_size=16, device=dev, progress=True,
                           thresholds=cals[name].thresholds)
            for name, m in (("RLR", model), ("baseline", baseline))}
    rep = reps["RLR"]
    total = time.perf_counter() - t0

    print()
    fusion = ("per-position score statistics = validation normals; "
              if cfg.score.normalize == "position" else "")
    print("splits: training = train normals; checkpoint = validation normals; "
          f"{fusion}thresholds = validation normals at {args.far:g} false alarms; every figure "
          "below = test split (far = false-alarm rate on the test normals, detect = detection "
          "rate on p=1 cells)")
    for name, r in reps.items():
        label = (f"RLR ({args.preset})" if name == "RLR" else
                 f"baseline: memory bank, {args.coreset:.0%} coreset "
                 f"({baseline.bank.shape[0]} x {baseline.bank.shape[1]})")
        print(f"\n{label}")
        print(console_table(r))
        cal = cals[name]
        for cls, row in r.per_class.items():
            mean, lo, hi = cal.unseen_far[cls]
            alarms = round(row["false_alarm_rate"] * row["n_normal"])
            print(f"  {cls}: threshold from {cal.counts[cls]} validation normals; expected on "
                  f"unseen normals {lo:.2%} to {hi:.2%} ({UNSEEN_LEVEL:.0%} interval, mean "
                  f"{mean:.2%}); measured on the test normals {alarms}/{row['n_normal']} = "
                  f"{row['false_alarm_rate']:.2%}")
    print()
    print(f"training: {res.seconds / 60:.1f} min, {res.epochs_run} epochs "
          f"({res.images_per_second:.1f} img/s), best validation epoch {res.best_epoch}; "
          f"backbone features {trained.data_summary['feature_seconds']:.0f} s; memory bank "
          f"{bank_seconds:.0f} s; evaluation RLR {rep.seconds:.0f} s "
          f"({rep.images_per_second:.1f} img/s), baseline {reps['baseline'].seconds:.0f} s "
          f"({reps['baseline'].images_per_second:.1f} img/s); total {total / 60:.1f} min")
    print(f"a threshold at {args.far:g} from n normals: its rate on unseen normals is "
          f"Beta-distributed whatever the scores (rlr.calibrate.unseen_far); about "
          f"{normals_needed(args.far)} normals per class pin it within a factor of two "
          f"({UNSEEN_LEVEL:.0%} of the time)")
    for key in ("image_auroc", "image_ap", "image_f1_max"):
        a, b = rep.mean[key], reps["baseline"].mean[key]
        print(f"mean {key} over mono/poly: RLR {a:.4f}, baseline {b:.4f}, "
              f"RLR - baseline {a - b:+.4f}")
    if args.out:
        out = write_report(rep, args.out, model, overlays_per_kind=3)
        (Path(out) / "training.json").write_text(json.dumps(trained.training_summary(),
                                                            indent=2, default=float))
        print(f"report: {out}/report.md")


if __name__ == "__main__":
    main()
