"""`rlrctl train`: train a model on normal images, here or (with --submit) as a queued job."""

from __future__ import annotations

from pathlib import Path

import click

from rlr.config import DATASET_KINDS, PRESETS


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
    from rlr.config import TrainingRun
    from rlr.pipeline import load_training_data, train_on_checked

    class_list = [c for item in classes for c in item.split(",") if c] or None
    run = TrainingRun(data=data_root, dataset=kind, classes=class_list and tuple(class_list),
                      preset=preset_name, epochs=epochs, max_minutes=max_minutes,
                      batch_size=batch_size, lr=lr, image_size=image_size,
                      backbone_weights=backbone_weights, seed=seed)
    cfg = run.config()
    out_path = Path(out)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)

    if data_root is None and kind != "elpv":
        raise click.UsageError(f"--data DIR is required for --dataset {kind}")
    dataset = load_training_data(run, cfg, progress=not quiet)
    trained = train_on_checked(cfg, dataset, device=device, cache_dir=cache_dir,
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
