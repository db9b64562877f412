"""Writes an evaluation report: report.json (the source), report.md, curves and overlays."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rlr.data import load_image, load_mask
from rlr.evaluate import EvalReport, ImageRecord, extremes
from rlr.model import RLRModel


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def markdown_table(report: EvalReport) -> str:
    """Per-class rows, the mean row, then the separately reported groups."""
    cols = report.metric_columns()
    head = ["class", *cols, "normal", "anomalous"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for cls, row in report.per_class.items():
        lines.append("| " + " | ".join([cls, *(_fmt(row.get(c, float("nan"))) for c in cols),
                                        str(row["n_normal"]), str(row["n_anomalous"])]) + " |")
    lines.append("| **mean** | " + " | ".join(
        f"**{_fmt(report.mean.get(c, float('nan')))}**" for c in cols) + " | | |")
    for name, row in report.groups.items():
        lines.append("| " + " | ".join(
            [f"{name} (apart)", *(_fmt(row.get(c, float("nan"))) if c.startswith("image_")
                                  else "" for c in cols),
             str(row["n_normal"]), str(row["n_anomalous"])]) + " |")
    return "\n".join(lines)


def console_table(report: EvalReport) -> str:
    cols = report.metric_columns()
    short = [c.replace("image_", "img_").replace("pixel_", "px_").replace("false_alarm_rate", "far")
             .replace("detection_rate", "detect") for c in cols]
    width = max([len(c) for c in report.per_class] + [len(g) for g in report.groups] + [5]) + 2
    widths = [max(len(c) + 2, 8) for c in short]
    out = [f"{'class':<{width}}" + "".join(f"{c:>{w}}" for c, w in zip(short, widths, strict=True))]
    rows = [*report.per_class.items(), ("mean", report.mean), *report.groups.items()]
    for name, row in rows:
        out.append(f"{name:<{width}}" + "".join(
            f"{_fmt(row[c]) if c in row else '':>{w}}" for c, w in zip(cols, widths, strict=True)))
    return "\n".join(out)


def _curves(report: EvalReport, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    names = []
    fig_roc, ax_roc = plt.subplots(figsize=(5, 5))
    fig_pr, ax_pr = plt.subplots(figsize=(5, 5))
    for cls, row in report.per_class.items():
        recs = [r for r in report.records if r.class_name == cls and r.group == ""]
        y = np.array([r.label for r in recs])
        s = np.array([r.score for r in recs])
        if len(set(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        prec, rec, _ = precision_recall_curve(y, s)
        ax_roc.plot(fpr, tpr, label=f"{cls} ({row['image_auroc']:.3f})")
        ax_pr.plot(rec, prec, label=f"{cls} ({row['image_ap']:.3f})")
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    for ax, title, xl, yl in ((ax_roc, "Image ROC", "false positive rate", "true positive rate"),
                              (ax_pr, "Image precision-recall", "recall", "precision")):
        ax.set(title=title, xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
    for fig, name in ((fig_roc, "roc.png"), (fig_pr, "pr.png")):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def _overlays(report: EvalReport, model: RLRModel, out: Path, k: int, device) -> list[str]:
    from rlr.data import Sample
    from rlr.inference import score_samples
    from rlr.visualize import colorize, overlay, save_rgb, side_by_side

    written: list[str] = []
    size = model.image_size
    picks: list[tuple[str, str, ImageRecord]] = []
    for cls, kinds in extremes(report, k).items():
        for kind, recs in kinds.items():
            picks += [(cls, kind, r) for r in recs]
    if not picks:
        return written
    samples = [Sample(Path(r.path), r.class_name, r.label) for _, _, r in picks]
    _, maps = score_samples(model, samples, device=device, keep_maps=True)
    all_scores = np.array([r.score for r in report.records])
    vmin = float(np.percentile(all_scores, 1)) * 0.5
    vmax = float(maps.max())
    (out / "overlays").mkdir(exist_ok=True)
    for (cls, kind, r), amap in zip(picks, maps.astype(np.float32), strict=True):
        img = load_image(r.path, size)
        gt = load_mask(r.mask_path, size) if r.mask_path else np.zeros((size, size), bool)
        gt_rgb = np.repeat((gt * 255).astype(np.uint8)[..., None], 3, axis=2)
        panel = side_by_side(img, gt_rgb, overlay(img, amap, vmin, vmax),
                             colorize(amap, vmin, vmax))
        name = f"overlays/{cls}_{kind}_{Path(r.path).stem}_{r.score:.3f}.png"
        save_rgb(str(out / name), panel)
        written.append(name)
    return written


def write_report(report: EvalReport, out_dir: str | Path, model: RLRModel | None = None,
                 overlays_per_kind: int = 3, device="cpu") -> Path:
    """Write report.json, report.md, roc.png / pr.png and overlays; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    (out / "report.json").write_text(json.dumps(data, indent=2, default=float))
    pictures = _curves(report, out)
    overlay_names = (_overlays(report, model, out, overlays_per_kind, device)
                     if model is not None and overlays_per_kind > 0 else [])
    md = [f"# Evaluation: {report.dataset.get('kind', '')} data set", ""]
    if report.model:
        md += [f"Model: `{report.model.get('path', '')}` "
               f"(sha256 {str(report.model.get('sha256', ''))[:16]})", ""]
    md += [markdown_table(report), "",
           f"{len(report.records)} test images scored in {report.seconds:.1f} s "
           f"({report.images_per_second:.1f} img/s). Rows marked *apart* are kept out of the "
           "mean.", ""]
    md += [f"![{p}]({p})" for p in pictures] + [""]
    if overlay_names:
        md += ["## Cases to look at", "",
               "image | ground truth | overlay | anomaly map — the highest-scoring normal images "
               "and the lowest-scoring anomalies of each class.", ""]
        md += [f"![{n}]({n})" for n in overlay_names]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return out
