"""`rlrctl alerts` (tail the alert streams) and `rlrctl bridge mqtt|webhook` (deliver them)."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from datetime import datetime

import click

from daemon import keys, logs
from daemon.errors import SettingsError
from daemon.settings import Settings, load_settings

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")

_line = click.option("--line", "lines", multiple=True,
                     help="Line to follow (repeatable; default RLR_LINES).")
_config = click.option("--config", type=click.Path(), help="Settings file (KEY=value lines).")
_redis = click.option("--redis-url", help="Redis URL (default RLR_REDIS_URL).")


def _settings(config: str | None, lines: tuple[str, ...], **overrides) -> Settings:
    return load_settings(config, lines=list(lines) or None, **overrides)


def _client(settings: Settings):
    from daemon.redis_conn import connect, wait_ready

    client = connect(settings)
    wait_ready(client, settings.effective_redis_url, min(settings.redis_timeout_s, 10.0))
    return client


# ----------------------------------------------------------------------------- alerts


@click.command()
@_line
@click.option("--since", default="$", show_default=True,
              help="'$': new alerts only, '0': from the start of the stream, or a stream id.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many alerts.")
@_config
@_redis
def alerts(lines, since, as_json, count, config, redis_url) -> None:
    """Print alerts as the workers raise them (Ctrl-C to stop)."""
    if since not in ("$", "0") and not _STREAM_ID.match(since):
        raise click.BadParameter(f"{since!r}: use $, 0 or a stream id like 1714550000000-0",
                                 param_hint="--since")
    settings = _settings(config, lines, redis_url=redis_url)
    try:
        _tail(_client(settings), settings, since, as_json, count)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `rlrctl alerts | head`: quiet exit, no traceback at shutdown
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _tail(client, settings: Settings, since: str, as_json: bool, count: int | None) -> None:
    from daemon.redis_conn import TRANSIENT, Backoff, read_streams
    from daemon.schema import Alert

    streams = {keys.alerts(name): since for name in settings.lines}
    if since == "$":
        # Pin "$" to the current last id: a later "$" would skip alerts raised between reads.
        streams = {key: _last_id(client, key) for key in streams}
    shown, backoff = 0, Backoff(0.2, 5.0)
    while count is None or shown < count:
        try:
            reply = read_streams(client, lambda st, block: client.xread(st, block=block),
                                 streams, settings.block_ms)
            backoff.reset()
        except TRANSIENT as exc:
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


def _last_id(client, key: str) -> str:
    last = client.xrevrange(key, count=1)
    return last[0][0].decode() if last else "0-0"


def _human(alert) -> str:
    when = datetime.fromtimestamp(alert.raised_ts).strftime("%Y-%m-%d %H:%M:%S")
    top = max(alert.scores, default=float("nan"))
    versus = "no threshold" if alert.threshold is None else f"thr {alert.threshold:.4g}"
    return (f"{when}  {alert.line}  {alert.camera}  {alert.product_class or '-'}  "
            f"rule {alert.rule}  max {top:.4g} vs {versus}  frames {','.join(alert.frame_ids)}")


# ----------------------------------------------------------------------------- bridges


@click.group()
def bridge() -> None:
    """Deliver alerts to PLC/SCADA integrations until SIGTERM / Ctrl-C."""


@bridge.command()
@_line
@click.option("--mqtt-url", help="mqtt://host:port or mqtts://host:port (default RLR_MQTT_URL).")
@_config
@_redis
def mqtt(lines, mqtt_url, config, redis_url) -> None:
    """Publish every alert as JSON to RLR_MQTT_TOPIC on the MQTT broker."""
    from daemon.bridges import MqttSink

    settings = _settings(config, lines, redis_url=redis_url, mqtt_url=mqtt_url)
    logs.configure(settings.log_format, settings.log_level, bridge="mqtt")
    client = _client(settings)
    sink = MqttSink(settings)
    if not sink.start(wait_s=5.0):
        logs.get(__name__).warning("mqtt_not_connected_yet", broker=sink.where,
                                   hint="alerts wait and retry until the broker answers")
    _serve(client, settings, sink)


@bridge.command()
@_line
@click.option("--url", "webhook_url", help="http(s) URL to POST to (default RLR_WEBHOOK_URL).")
@_config
@_redis
def webhook(lines, webhook_url, config, redis_url) -> None:
    """POST every alert as JSON (with an Idempotency-Key header) to the webhook URL."""
    from daemon.bridges import WebhookSink

    settings = _settings(config, lines, redis_url=redis_url, webhook_url=webhook_url)
    if settings.webhook_url is None:
        raise SettingsError("no webhook URL: set RLR_WEBHOOK_URL or pass --url "
                            "(e.g. https://scada.example/rlr/alerts)")
    logs.configure(settings.log_format, settings.log_level, bridge="webhook")
    client = _client(settings)
    _serve(client, settings, WebhookSink(settings.webhook_url, settings.webhook_timeout_s))


def _serve(client, settings: Settings, sink) -> None:
    from daemon.bridges import Bridge

    runner = Bridge(client, settings, sink)
    log = logs.get(__name__)

    def on_signal(signum, frame) -> None:
        name = signal.Signals(signum).name
        if runner.stopping:  # second signal: give up on the alert in flight
            log.warning("bridge_killed", signal=name)
            raise SystemExit(1)
        log.info("bridge_stopping", signal=name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        runner.run()
    finally:
        client.close()
