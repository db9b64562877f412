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

    Trains a model on a synthetic 3-class set and calibrates it on separate normal images
    (unless --model), starts an embedded Redis (unless RLR_REDIS_URL is set), a worker and
    one simulated camera per class replaying unseen normal images with defects among them
    (PNG, like the calibration images); shows per-camera scores and alerts; then stops.
    """
    from daemon.demo import run_demo

    run_demo(workdir, seconds, fps, preset, epochs, model)


@click.command("redis")
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default="rlr-redis", show_default=True, help="Data directory (append-only file).")
@click.option("--port", type=int, default=6379, show_default=True,
              help="TCP port on 127.0.0.1 (0: unix socket only).")
def redis_server(workdir, port):
    """Run the embedded Redis in the foreground until Ctrl-C / SIGTERM.

    For a single box without a system Redis, and for the README walk-throughs. Plants run
    their own Redis (or Redis Cluster / Sentinel) and point RLR_REDIS_URL at it.
    """
    import signal
    import threading

    from daemon.embedded import EmbeddedRedis

    server = EmbeddedRedis(workdir, port=port or None).start()
    click.echo(f"redis-server running: RLR_REDIS_URL={server.url}  (data in {workdir}; "
               "Ctrl-C stops it)")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                raise click.ClickException(f"redis-server exited; see {workdir}/redis.log")
    finally:
        server.stop()
