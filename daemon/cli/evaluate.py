"""`rlrctl` evaluation commands: eval (metrics + report) and calibrate (alarm thresholds)."""

from __future__ import annotations

import click

from daemon.cli.engines import engine_options, predictor_for
from rlr.config import DATASET_KINDS


def _dataset(kind: str, data_root: str | None, classes: str, model_classes, require_test: bool,
             seed: int = 0):
    from rlr.datasets import check_dataset, load_dataset

    if data_root is None and kind != "elpv":
        raise click.UsageError(f"--data DIR is required for --dataset {kind}")
    wanted = [c for c in classes.split(",") if c] or None
    ds = load_dataset(kind, data_root, wanted, seed=seed, require_train=not require_test,
                      require_test=require_test)
    unknown = sorted(set(ds.class_names) - set(model_classes)) if model_classes else []
    if unknown:
        click.secho(f"warning: classes {unknown} were not in the model's training set "
                    f"({', '.join(model_classes)})", fg="yellow", err=True)
    check_dataset(ds, progress=True)
    return ds


@click.command("eval")
@click.option("--model", "model_path", required=True, type=click.Path(), help="Model artifact.")
@click.option("--data", "data_root", type=click.Path(), help="Data set root (not for elpv).")
@click.option("--dataset", "kind", default="mvtec", show_default=True,
              type=click.Choice(DATASET_KINDS))
@click.option("--classes", default="", help="Comma-separated subset of classes.")
@click.option("--out", type=click.Path(), help="Report folder (JSON, Markdown, pictures).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--no-pixel", is_flag=True, help="Skip pixel metrics even when masks exist.")
@click.option("--overlays", default=3, show_default=True,
              help="Overlays per class for the highest normals / lowest anomalies.")
@click.option("--seed", default=0, show_default=True, help="Split seed (ELPV).")
@engine_options
def evaluate(model_path, data_root, kind, classes, out, batch_size, device, no_pixel, overlays,
             seed, engine, precision) -> None:
    """Score a data set's test images; print per-class metrics, write a report."""
    from rlr.artifact import load_artifact
    from rlr.device import resolve_device
    from rlr.evaluate import evaluate as run_eval
    from rlr.report import console_table, write_report

    art = load_artifact(model_path)
    ds = _dataset(kind, data_root, classes, art.manifest["class_names"], True, seed)
    dev = resolve_device(device)
    model = predictor_for(art, engine, precision, dev)
    report = run_eval(model, ds, batch_size, dev, progress=True, pixel=not no_pixel,
                      model_info={"path": str(model_path), "sha256": art.manifest["sha256"],
                                  "config": art.manifest["config"],
                                  "engine": getattr(model, "name", "torch"),
                                  "precision": getattr(model, "precision", "fp32")},
                      thresholds=art.manifest.get("thresholds"))
    click.echo(console_table(report))
    if out:
        write_report(report, out, model, overlays, dev)
        click.echo(f"report written to {out}/report.md (source: report.json)")


@click.command()
@click.option("--model", "model_path", required=True, type=click.Path(), help="Model artifact.")
@click.option("--data", "data_root", type=click.Path(), help="Data set root (not for elpv).")
@click.option("--dataset", "kind", default="folder", show_default=True,
              type=click.Choice(DATASET_KINDS))
@click.option("--classes", default="", help="Comma-separated subset of classes.")
@click.option("--far", default=0.005, show_default=True,
              help="Target false-alarm rate on normal images (0.005 = 0.5%).")
@click.option("--out", type=click.Path(), help="Write a calibrated copy here (default: in place).")
@click.option("--batch-size", default=8, show_default=True)
@click.option("--device", default="auto", show_default=True)
def calibrate(model_path, data_root, kind, classes, far, out, batch_size, device) -> None:
    """Set per-class alarm thresholds from normal validation images at a false-alarm rate.

    Uses the data set's validation normals (ELPV) or the same validation split of
    <class>/train/good that training held out, so the images were not trained on.
    """
    import shutil

    from rlr.artifact import load_artifact, update_manifest
    from rlr.calibrate import UNSEEN_LEVEL, calibrate_model, validation_normals
    from rlr.device import resolve_device

    art = load_artifact(model_path)
    tcfg = art.manifest["config"]["train"]
    ds = _dataset(kind, data_root, classes, art.manifest["class_names"], False, tcfg["seed"])
    normals = validation_normals(ds, tcfg)
    if not normals:
        raise click.UsageError("no validation normals to calibrate on; check --data/--classes")
    cal = calibrate_model(art.model, normals, far, batch_size, resolve_device(device))
    for w in cal.warnings:
        click.secho(f"warning: {w}", fg="yellow", err=True)
    target = out or model_path
    if out:
        shutil.copyfile(model_path, out)
    prev = art.manifest.get("metrics") or {}
    update_manifest(target, thresholds=cal.thresholds,
                    metrics={**prev, **cal.manifest_fields()["metrics"]})
    click.echo(f"{'class':<16}{'normals':>9}{'threshold':>12}{'alarms':>9}"
               f"  on unseen normals ({UNSEEN_LEVEL:.0%} interval)")
    for name, t in cal.thresholds.items():
        _, lo, hi = cal.unseen_far[name]
        click.echo(f"{name:<16}{cal.counts[name]:>9}{t:>12.4f}{cal.observed_far[name]:>9.2%}"
                   f"  {lo:.2%} to {hi:.2%}")
    click.echo(f"thresholds for a false-alarm rate of {far:g} written to {target}")
