"""`rlrctl worker`: serve a model on the frame streams."""

from __future__ import annotations

import asyncio
import sys

import click

from daemon import logs
from daemon.cli.options import connect, lines_value, redis_options, settings_from


@click.command()
@click.option("--model", type=click.Path(dir_okay=False), help="Model artifact [RLR_MODEL].")
@click.option("--line", "lines", multiple=True, help="Line(s) to serve [RLR_LINES].")
@click.option("--batch-size", type=int, help="Max frames per batch [RLR_BATCH_SIZE].")
@click.option("--device", help="auto, cpu, cuda, cuda:N [RLR_DEVICE].")
@click.option("--consumer", help="Worker name in the group [RLR_CONSUMER, default host-pid].")
@click.option("--metrics-port", type=int, help="Prometheus port, 0 = off [RLR_METRICS_PORT].")
@redis_options
def worker(model, lines, batch_size, device, consumer, metrics_port, redis_url, config_file):
    """Serve a model: read frames, score them in batches, publish results and alerts.

    A line's rollout (`rlrctl deploy`) decides its models and is followed live; --model /
    RLR_MODEL serves lines that have none. With neither, the worker waits for a deploy.

    Runs until SIGTERM / SIGINT: the first finishes, publishes and acknowledges the frames
    already read; a second one exits at once (unfinished frames go to another worker).
    """
    from daemon.serve.prometheus import WorkerMetrics
    from daemon.serve.redis_io import RedisStreams
    from daemon.serve.served_model import ServedModel
    from daemon.serve.serving import ModelWatcher
    from daemon.serve.worker import Worker
    from daemon.wire.clients import connect as connect_sync
    from daemon.wire.clients import connect_async

    settings = settings_from(config_file, redis_url, model=model, lines=lines_value(lines),
                             batch_size=batch_size, device=device, consumer=consumer,
                             metrics_port=metrics_port)
    logs.configure(settings.log_format, settings.log_level, worker=settings.consumer_name)
    log = logs.get("rlr.worker")
    # before loading a model: a wrong URL fails within RLR_REDIS_TIMEOUT_S
    client = connect(settings, timeout_s=settings.redis_timeout_s)
    if settings.recipe:
        _default_recipe(client, settings, log)
    metrics = WorkerMetrics()
    metrics.serve(settings.metrics_port, settings.metrics_host)  # a taken port fails now too
    if settings.metrics_port:
        log.info("metrics_serving", port=settings.metrics_port)
    served = None
    if settings.model is not None:
        served = ServedModel.from_file(settings.model, settings.device, settings)
        served.warm_up()
        log.info("model_loaded", path=str(settings.model), version=served.version,
                 device=str(served.device), engine=served.engine_name,
                 measured=served.measured or None, classes=served.manifest.get("class_names"))
        if not served.calibrated:
            log.warning("model_uncalibrated", note="no thresholds: every frame is reported "
                        "normal and no alert fires; run `rlrctl calibrate` on the artifact")
    def watcher(initial, publish):
        return ModelWatcher(connect_sync(settings), settings.lines, initial, publish,
                            settings.device, settings, settings.rollout_poll_s)

    async def main() -> Worker:
        streams = RedisStreams(connect_async(settings), settings, settings.consumer_name)
        w = Worker(settings, served, streams, metrics, watch_rollouts=watcher)
        await w.run()
        return w

    w = asyncio.run(main())
    if w.fatal is not None:
        click.secho(f"error: {w.fatal}", fg="red", err=True)
        sys.exit(3)
    sys.exit(1 if w.hard_stopped else 0)


def _default_recipe(client, settings, log) -> None:
    """RLR_RECIPE on each line with no active recipe yet (a switch made since is kept); a
    recipe that would be refused stops the worker with the reason (exit 2)."""
    from daemon.recipes.store import RecipeStore, registry_for

    store = RecipeStore(client)
    for line in settings.lines:
        activation = store.ensure_default(line, settings.recipe, f"worker {settings.consumer_name}",
                                          registry_for(client, line))
        if activation is not None:
            log.info("recipe_default_activated", line=line, recipe=activation.label)
