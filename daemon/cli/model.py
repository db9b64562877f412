"""`rlrctl` model commands: train, score, info, import-official, synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import click

from daemon.cli.engines import engine_options, predictor_for
from rlr.config import DATASET_KINDS, PRESETS, configure


@click.command()
@click.option("--data", "data_root", type=click.Path(),
              help="Data set root; for folder/mvtec: <class>/train/good/*.png normal images.")
@click.option("--dataset", "kind", default="folder", show_default=True,
              type=click.Choice(DATASET_KINDS),
              help="Layout of --data (elpv reads the installed elpv-dataset package).")
@click.option("--classes", multiple=True,
              help="Classes to train on (repeat or comma-separate); default: all found.")
@click.option("--preset", "preset_name", default="lite", show_default=True,
              type=click.Choice(sorted(PRESETS)), help="Named model configuration.")
@click.option("--out", type=click.Path(),
              help="Model artifact to write (required unless --submit).")
@click.option("--epochs", type=int, help="Override the preset's epoch count.")
@click.option("--max-minutes", type=float,
              help="Training time budget; the learning-rate schedule is fitted into it.")
@click.option("--batch-size", type=int, help="Override the preset's batch size.")
@click.option("--lr", type=float, help="Override the preset's learning rate.")
@click.option("--image-size", type=int, help="Override the input size (pixels, square).")
@click.option("--backbone-weights", help="packaged | hub | none | PATH to a weights file.")
@click.option("--seed", type=int, help="Random seed (data split, init, shuffling).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--cache-dir", type=click.Path(), help="Reuse backbone features between runs.")
@click.option("--checkpoint", type=click.Path(), help="Resumable training checkpoint file.")
@click.option("--resume", is_flag=True, help="Continue from --checkpoint if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--submit", is_flag=True,
              help="Queue a training job for `rlrctl trainer` (via Redis) instead of training "
              "here; --data is the path on the trainer machine.")
@click.option("--far", type=float, help="With --submit: false-alarm rate the finished model is "
              "calibrated at [default 0.005].")
@click.option("--deploy-line", help="With --submit: deploy the finished model as canary here.")
@click.option("--canary-cameras", help="With --deploy-line: comma-separated canary cameras.")
@click.option("--canary-percent", type=float,
              help="With --deploy-line: share of the line's cameras the canary serves (0-100].")
@click.option("--redis-url", help="With --submit: Redis URL [RLR_REDIS_URL].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="With --submit: settings file (KEY=value lines) [RLR_CONFIG].")
def train(data_root, kind, classes, preset_name, out, epochs, max_minutes, batch_size, lr,
          image_size, backbone_weights, seed, device, cache_dir, checkpoint, resume,
          quiet, submit, far, deploy_line, canary_cameras, canary_percent, redis_url,
          config_file) -> None:
    """Train one model on the normal images of every class (or, with --submit, queue a
    training job that a `rlrctl trainer` runs, calibrates, registers and can deploy)."""
    if submit:
        from daemon.cli.jobs import submit_training

        submit_training(click.get_current_context())
        return
    given = [name for name, value in (("--far", far), ("--deploy-line", deploy_line),
                                      ("--canary-cameras", canary_cameras),
                                      ("--canary-percent", canary_percent),
                                      ("--redis-url", redis_url), ("--config", config_file))
             if value is not None]
    if given:
        raise click.UsageError(f"{', '.join(given)}: only with --submit (to calibrate a local "
                               "model: rlrctl calibrate --far)")
    if out is None:
        raise click.UsageError("Missing option '--out' (the model artifact to write).")
    from rlr.artifact import save_artifact
    from rlr.datasets import load_dataset
    from rlr.pipeline import train_on_dataset

    cfg = configure(preset_name, backbone_weights=backbone_weights, image_size=image_size,
                    epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                    max_seconds=max_minutes * 60 if max_minutes else None)
    class_list = [c for item in classes for c in item.split(",") if c] or None
    out_path = Path(out)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)

    if data_root is None and kind != "elpv":
        raise click.UsageError(f"--data DIR is required for --dataset {kind}")
    dataset = load_dataset(kind, data_root, class_list, seed=cfg.train.seed)
    trained = train_on_dataset(cfg, dataset, device=device, cache_dir=cache_dir,
                               checkpoint=checkpoint, resume=resume, progress=not quiet)
    res = trained.result
    manifest = save_artifact(out_path, trained.model.cpu(), trained.class_names,
                             training=trained.training_summary())
    click.echo(
        f"trained {len(trained.class_names)} classes ({', '.join(trained.class_names)}) on "
        f"{trained.data_summary['n_train']} images "
        f"(validation {trained.data_summary['n_validation']})"
    )
    click.echo(
        f"best epoch {res.best_epoch}/{res.epochs_run}  validation loss {res.best_val_loss:.4f}  "
        f"{res.images_per_second:.1f} img/s  {res.seconds:.0f} s"
        + ("  (stopped early)" if res.stopped_early else "")
        + ("  (time budget reached)" if res.out_of_time else "")
    )
    click.echo(f"wrote {out_path}  sha256 {manifest['sha256'][:16]}")


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


@click.command()
@click.argument("model_path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.option("--no-verify", is_flag=True, help="Read the header only, without checking the "
              "file against its sha256 (instant on any size; the checksum shown is unchecked).")
def info(model_path, as_json, no_verify) -> None:
    """Show a model artifact's manifest, after verifying the file against its sha256.

    A damaged or altered file exits with status 2 and says why, as `rlrctl score` would.
    """
    from rlr.artifact import read_manifest, verify_artifact

    m = read_manifest(model_path) if no_verify else verify_artifact(model_path)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    cfg, bb = m["config"], m["backbone"]
    rows = [
        ("schema", m["schema_version"]),
        ("created", m.get("created_at")),
        ("backbone", f"{bb['name']} {tuple(cfg['backbone']['out_indices'])} "
                     f"@ {bb['image_size']} px, weights {bb['weight_source']}"),
        ("levels", ", ".join(f"{tuple(g)} d={lv['d_model']} x{lv['n_layers']}"
                             for g, lv in zip(bb["grid_sizes"], cfg["levels"], strict=True))),
        ("classes", ", ".join(m["class_names"]) or "-"),
        ("thresholds", json.dumps(m.get("thresholds"))),
        ("sha256", f"{m['sha256']} " + ("(not verified: --no-verify)" if no_verify
                                          else "(verified)")),
    ]
    result = (m.get("training") or {}).get("result")
    if result:
        rows.append(("training", f"best epoch {result['best_epoch']}/{result['epochs_run']}, "
                                 f"val loss {result['best_val_loss']:.4f}"))
    for k, v in rows:
        click.echo(f"{k:<11} {v}")


@click.command("import-official")
@click.argument("checkpoint", type=click.Path())
@click.option("--preset", "preset_name", default="paper", show_default=True,
              type=click.Choice(sorted(PRESETS)), help="Config the checkpoint was trained with.")
@click.option("--out", required=True, type=click.Path(), help="Model artifact to write.")
@click.option("--image-size", type=int)
@click.option("--backbone-weights", help="packaged | hub | none | PATH to a weights file.")
@click.option("--classes", default="", help="Comma-separated class names to record.")
def import_official(checkpoint, preset_name, out, image_size, backbone_weights, classes) -> None:
    """Convert a checkpoint trained with the authors' official code into an rlr artifact."""
    from rlr.artifact import save_artifact
    from rlr.compat import import_official as do_import

    cfg = configure(preset_name, backbone_weights=backbone_weights, image_size=image_size)
    cfg = cfg.replace(feature_norm="none")
    model, meta = do_import(checkpoint, cfg)
    manifest = save_artifact(Path(out), model, [c for c in classes.split(",") if c],
                             training={"imported_from": str(checkpoint), "official": meta})
    click.echo(f"imported {checkpoint} -> {out}  sha256 {manifest['sha256'][:16]}")


@click.command()
@click.argument("out", type=click.Path())
@click.option("--classes", default="", help="Comma-separated subset of the synthetic classes.")
@click.option("--n-train", default=40, show_default=True, help="Normal training images per class.")
@click.option("--n-test", default=6, show_default=True, help="Test images per class and kind.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
def synthetic(out, classes, n_train, n_test, size, seed) -> None:
    """Write a synthetic multi-class data set (MVTec-AD layout, with defect masks) to OUT."""
    from rlr.synthetic import write_dataset

    root = write_dataset(out, classes=[c for c in classes.split(",") if c] or None,
                         n_train=n_train, n_test_good=n_test, n_test_defect=n_test, size=size,
                         seed=seed, progress=True)
    click.echo(f"wrote synthetic data set to {root}")
