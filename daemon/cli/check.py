"""`rlrctl check`: the workers' liveness and readiness probe (exit 0 or 1) for systemd,
compose and Kubernetes."""

from __future__ import annotations

import sys

import click

from daemon.cli.options import redis_options, settings_from
from daemon.wire import heartbeat


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
