"""`rlrctl demo`: the whole line on one box, end to end."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default="demo",
              show_default=True, help="Where data, model, logs and the embedded Redis go.")
@click.option("--seconds", type=float, default=45, show_default=True,
              help="How long the line runs before it stops by itself.")
@click.option("--fps", type=float, default=3, show_default=True, help="Frames/s per camera.")
@click.option("--preset", type=click.Choice(["lite", "tiny"]), default="lite",
              show_default=True, help="Model preset trained for the demo.")
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Serve this artifact instead of training one (its classes should be "
                   "fabric, tile, washer for meaningful scores).")
def demo(workdir, seconds, fps, preset, epochs, model):
    """Run a whole inspection line on this machine and watch it live.

    Trains a model on a synthetic 3-class set (unless --model), starts an embedded Redis
    (unless RLR_REDIS_URL is set), a worker and one simulated camera per class replaying
    test images with defects; shows per-camera scores and alerts; then stops everything.
    """
    from daemon.demo import run_demo

    run_demo(workdir, seconds, fps, preset, epochs, model)
