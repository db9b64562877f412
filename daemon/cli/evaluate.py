"""`rlrctl eval`: score a data set's test images, print per-class metrics, write a report.

`dataset_for` reads the data set options the same way for `rlrctl calibrate`."""

from __future__ import annotations

import click

from daemon.cli.engines import engine_options, predictor_for
from rlr.config import DATASET_KINDS


def dataset_for(kind: str, data_root: str | None, classes: str, model_classes, require_test: bool,
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
    ds = dataset_for(kind, data_root, classes, art.manifest["class_names"], True, seed)
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
