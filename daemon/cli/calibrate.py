"""`rlrctl calibrate`: per-class alarm thresholds from normal validation images at a
false-alarm rate."""

from __future__ import annotations

import click

from daemon.cli.evaluate import dataset_for
from rlr.config import DATASET_KINDS


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
    ds = dataset_for(kind, data_root, classes, art.manifest["class_names"], False, tcfg["seed"])
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
