"""`rlrctl score`: score images with a model artifact, optionally writing heat-map overlays."""

from __future__ import annotations

import json
from pathlib import Path

import click

from daemon.cli.engines import engine_options, predictor_for


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(), help="Model artifact.")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), help="Folder for heat-map overlays (PNG).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threshold", type=float,
              help="Alarm threshold; default: the model's calibrated threshold, if any.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@engine_options
def score(model_path, images, out, batch_size, device, threshold, as_json, engine,
          precision) -> None:
    """Score IMAGES (files or folders) and optionally write heat-map overlays."""
    from rlr.artifact import load_artifact
    from rlr.data import list_images
    from rlr.device import resolve_device
    from rlr.inference import score_paths
    from rlr.visualize import overlay, save_rgb, side_by_side

    art = load_artifact(model_path)
    paths = list_images(images)
    if threshold is None:
        threshold = (art.manifest.get("thresholds") or {}).get("default")
    dev = resolve_device(device)
    results = list(score_paths(predictor_for(art, engine, precision, dev), paths, batch_size,
                               dev, progress=not as_json and len(paths) > batch_size))
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        # One colour scale for the whole batch, so heat maps compare across images.
        vmin = min(float(r.anomaly_map.min()) for r in results)
        vmax = max(float(r.anomaly_map.max()) for r in results)
        if threshold is not None:
            vmax = max(vmax, threshold)
    for i, r in enumerate(results):
        flag = None if threshold is None else r.score > threshold
        if out:
            name = f"{i:04d}_{r.path.parent.name}_{r.path.stem}.png"
            save_rgb(str(out_dir / name),
                     side_by_side(r.image, overlay(r.image, r.anomaly_map, vmin, vmax)))
        if as_json:
            click.echo(json.dumps({
                "path": str(r.path), "score": r.score, "anomalous": flag,
                "normalized": None if not threshold else r.score / threshold}))
    if not as_json:
        width = min(max(len(str(r.path)) for r in results), 70)
        click.echo(f"{'image':<{width}}  {'score':>9}  {'/thresh':>8}  anomalous")
        for r in results:
            flag = "-" if threshold is None else ("YES" if r.score > threshold else "no")
            norm = f"{r.score / threshold:8.3f}" if threshold else f"{'-':>8}"
            name = str(r.path)
            name = name if len(name) <= width else "…" + name[-width + 1 :]
            click.echo(f"{name:<{width}}  {r.score:9.4f}  {norm}  {flag}")
        if threshold is None:
            click.echo("no threshold set: scores are relative (higher = more anomalous)")
        if out:
            click.echo(f"overlays written to {out}")
