"""`rlrctl health`: camera health (not worker liveness, that is `rlrctl check`): which cameras
are unhealthy now, and their recent health events."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

import click

from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.wire import keys


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@click.option("--line", "lines", multiple=True, help="Line(s) to show (default RLR_LINES).")
@click.option("--events", "count", default=10, show_default=True,
              help="Recent health events to list per line.")
@click.option("--follow", "-f", is_flag=True, help="Then print new events as they come.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line / event.")
@redis_options
def health(lines, count, follow, as_json, redis_url, config_file) -> None:
    """Camera health: conditions raised now (frozen, dark, bright, blur, shift, score drift,
    alarm rate) and the latest raised / cleared events. Exits 1 when a camera is unhealthy."""
    from daemon.wire.schema import HealthEvent

    settings = settings_from(config_file, redis_url, lines=lines_value(lines))
    client = connect(settings)
    unhealthy = False
    last: dict[str, str] = {}
    for line in settings.lines:
        state = {k.decode(): json.loads(v) for k, v in
                 client.hgetall(keys.camera_health(line)).items()}
        entries = client.xrevrange(keys.health(line), count=count)
        last[keys.health(line)] = entries[0][0].decode() if entries else "0-0"
        events = [HealthEvent.from_fields(f) for _, f in reversed(entries)]
        unhealthy |= bool(state)
        if as_json:
            click.echo(json.dumps({"line": line, "unhealthy": state,
                                   "events": [e.to_json() for e in events]}))
            continue
        click.secho(f"line {line}: " + (f"{len(state)} camera(s) unhealthy" if state
                                        else "every camera healthy"), bold=True)
        for camera, kinds in sorted(state.items()):
            for kind, info in sorted(kinds.items()):
                click.secho(f"  {camera:<20} {kind:<12} since {_when(info['since'])}  "
                            f"{json.dumps(info.get('evidence', {}))}", fg="yellow")
        for e in events:
            click.echo(_row(e))
    if follow:
        _follow(client, last, as_json)
    sys.exit(1 if unhealthy else 0)


def _row(e) -> str:
    return (f"  {_when(e.ts)}  {e.camera:<20} {e.kind:<12} {e.state:<8} "
            f"{json.dumps(e.evidence)}")


def _follow(client, streams: dict[str, str], as_json: bool) -> None:
    from daemon.wire.schema import HealthEvent

    try:
        while True:
            for key, entries in client.xread(streams, block=1000) or []:
                for eid, fields in entries:
                    streams[key.decode()] = eid.decode()
                    e = HealthEvent.from_fields(fields)
                    click.echo(json.dumps(e.to_json()) if as_json else _row(e))
            time.sleep(0)
    except KeyboardInterrupt:
        pass
