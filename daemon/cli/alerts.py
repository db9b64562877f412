"""`rlrctl alerts`: tail the alert streams (`rlrctl bridge`, in `bridge`, delivers them)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import datetime

import click

from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.line.settings import AlertBridgeSettings
from daemon.wire import keys

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


@click.command()
@click.option("--line", "lines", multiple=True,
              help="Line to follow (repeatable; default RLR_LINES).")
@click.option("--since", default="$", show_default=True,
              help="'$': new alerts only, '0': from the start of the stream, or a stream id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many alerts.")
@redis_options
def alerts(lines, since, as_json, count, redis_url, config_file) -> None:
    """Print alerts as the workers raise them (Ctrl-C to stop)."""
    if since not in ("$", "0") and not _STREAM_ID.match(since):
        raise click.BadParameter(f"{since!r}: use $, 0 or a stream id like 1714550000000-0",
                                 param_hint="--since")
    settings = settings_from(config_file, redis_url, lines=lines_value(lines))
    try:
        _tail(connect(settings), settings, since, as_json, count)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `rlrctl alerts | head`: quiet exit, no traceback at shutdown
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _tail(client, settings: AlertBridgeSettings, since: str, as_json: bool,
          count: int | None) -> None:
    from daemon.wire.backoff import Backoff
    from daemon.wire.clients import away, is_cluster
    from daemon.wire.groups import last_id, read_streams, run_sync
    from daemon.wire.schema import Alert

    streams = {keys.alerts(name): since for name in settings.lines}
    if since == "$":
        # Pin "$" to the current last id: a later "$" would skip alerts raised between reads.
        streams = {key: run_sync(client, last_id(key)) for key in streams}
    shown, backoff = 0, Backoff(0.2, 5.0)
    while count is None or shown < count:
        try:
            reply = run_sync(client, read_streams("xread", (), streams, settings.block_ms,
                                                  is_cluster(client)))
            backoff.reset()
        except Exception as exc:
            if not away(exc):
                raise
            click.secho(f"Redis unavailable ({exc}); retrying", fg="yellow", err=True)
            time.sleep(backoff.next())
            continue
        for key, entries in reply or []:
            for entry_id, fields in entries:
                streams[key.decode()] = entry_id
                try:
                    alert = Alert.from_fields(fields)
                except (KeyError, ValueError, TypeError) as exc:
                    click.secho(f"skipping malformed alert {entry_id.decode()}: {exc!r}",
                                fg="yellow", err=True)
                    continue
                if count is None or shown < count:
                    click.echo(json.dumps({"id": entry_id.decode(), **alert.to_json()})
                               if as_json else _human(alert))
                    shown += 1
                sys.stdout.flush()


def _human(alert) -> str:
    when = datetime.fromtimestamp(alert.raised_ts).strftime("%Y-%m-%d %H:%M:%S")
    top = max(alert.scores, default=float("nan"))
    versus = "no threshold" if alert.threshold is None else f"thr {alert.threshold:.4g}"
    return (f"{when}  {alert.line}  {alert.camera}  {alert.product_class or '-'}  "
            f"rule {alert.rule}  max {top:.4g} vs {versus}  frames {','.join(alert.frame_ids)}")
