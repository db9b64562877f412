"""`rlrctl worker` (serve a model on the frame streams) and `rlrctl check` (health probe)."""

from __future__ import annotations

import asyncio
import sys

import click

from daemon import logs
from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.wire import heartbeat


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
    connect(settings, timeout_s=30)  # before loading a model: a wrong URL fails in seconds
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


@click.command()
@click.option("--worker", "worker_id", help="Check this worker (its RLR_CONSUMER name).")
@click.option("--line", help="Only workers serving this line.")
@click.option("--all-hosts", is_flag=True, help="Consider workers on every host, not only this "
              "one (a fleet-wide check).")
@click.option("--min-workers", type=int, default=1, show_default=True,
              help="Healthy workers needed.")
@click.option("--liveness", is_flag=True, help="Liveness instead of readiness: a worker that "
              "is alive but not serving (waiting for its first model, draining, waiting for "
              "Redis) passes; only a stalled loop or a missing heartbeat fails.")
@click.option("--quiet", "-q", is_flag=True, help="No output, exit status only.")
@redis_options
def check(worker_id, line, all_hosts, min_workers, liveness, quiet, redis_url, config_file):
    """Health probe: exit 0 when enough workers are healthy, 1 otherwise.

    By default it checks the workers on this host (a container's or pod's own worker), as
    systemd, compose and Kubernetes probes want. A worker is healthy when its heartbeat is
    fresh, its status is `ready` and its loop is not stalled.
    """
    from daemon.wire.clients import connect as connect_sync
    from daemon.wire.clients import ping

    settings = settings_from(config_file, redis_url)
    client = connect_sync(settings)
    try:
        ping(client, settings.effective_redis_url)
    except Exception as exc:
        if not quiet:
            click.echo(f"unhealthy: {exc}", err=True)
        sys.exit(1)
    host = None if (all_hosts or worker_id) else heartbeat.this_host()
    ok, workers, verdict = heartbeat.check(heartbeat.read_heartbeats(client), worker_id, host, line,
                                        min_workers, live=liveness)
    if not quiet:
        for w in workers:
            b = w.beat
            click.echo(f"{w.worker:28} {w.host:16} {w.status:18} done={b.get('done', 0):<8} "
                       f"backlog={sum((b.get('backlog') or {}).values()):<6} "
                       f"model={b.get('model_version')}  {'' if w.healthy else w.why}")
        if line:
            from daemon.models.status import line_stats

            stats = line_stats(client, line)
            if stats:
                click.echo(f"line {line}: " + ", ".join(f"{k}={v}" for k, v in
                                                         sorted(stats.items())))
        click.echo(("healthy: " if ok else "unhealthy: ") + verdict)
    sys.exit(0 if ok else 1)
