"""`rlrctl calibrate`: per-class alarm thresholds from normal images at a false-alarm rate:
every normal of a folder collected for calibration, the validation split of the training
folder (`rlr.calibrate.calibration_normals`)."""

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
    """Set per-class alarm thresholds from normal images at a false-alarm rate.

    A folder collected for calibration is used whole (<class>/train/good); the folder the model
    was trained on gives only the validation split training held out, so no image was
    trained on (ELPV: its validation normals). Says per class how many normals, from where.
    """
    import shutil

    from rlr.artifact import load_artifact, update_manifest
    from rlr.calibrate import UNSEEN_LEVEL, calibrate_model, calibration_normals
    from rlr.device import resolve_device

    art = load_artifact(model_path)
    seed = art.manifest["config"]["train"]["seed"]
    ds = dataset_for(kind, data_root, classes, art.manifest["class_names"], False, seed)
    normals, source = calibration_normals(ds, art.manifest)
    if not normals:
        raise click.UsageError(f"no normals to calibrate on in {source}; check --data/--classes")
    click.echo(f"calibrating on {source}")
    for name, (n, folder) in _origins(normals).items():
        click.echo(f"  {name:<16}{n:>5} normals from {folder}")
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


def _origins(normals) -> dict[str, tuple[int, str]]:
    """Per class: how many normals, and the folder they lie in."""
    import os

    folders: dict[str, list[str]] = {}
    for s in normals:
        folders.setdefault(s.class_name, []).append(str(s.path.parent))
    return {name: (len(dirs), os.path.commonpath(dirs)) for name, dirs in sorted(folders.items())}
