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

from daemon import logs
from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.errors import SettingsError
from daemon.line.settings import AlertBridgeSettings
from daemon.wire import keys

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")

_line = click.option("--line", "lines", multiple=True,
                     help="Line to follow (repeatable; default RLR_LINES).")


# ----------------------------------------------------------------------------- alerts


@click.command()
@_line
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


# ----------------------------------------------------------------------------- bridges


@click.group()
def bridge() -> None:
    """Deliver alerts to PLC/SCADA integrations until SIGTERM / Ctrl-C."""


@bridge.command()
@_line
@click.option("--mqtt-url", help="mqtt://host:port or mqtts://host:port (default RLR_MQTT_URL).")
@click.option("--format", "fmt", type=click.Choice(["json", "sparkplug"]), default="json",
              show_default=True, help="json: every alert to RLR_MQTT_TOPIC; sparkplug: the line "
              "state as a Sparkplug B edge node, one device per camera.")
@redis_options
def mqtt(lines, mqtt_url, fmt, redis_url, config_file) -> None:
    """Publish every alert as JSON to RLR_MQTT_TOPIC on the MQTT broker (or, with --format
    sparkplug, the line state as Sparkplug B)."""
    from daemon.line.sinks import MqttSink

    settings = settings_from(config_file, redis_url, lines=lines_value(lines), mqtt_url=mqtt_url)
    if fmt == "sparkplug":
        from daemon.cli.plc import sparkplug

        sparkplug(settings)
        return
    logs.configure(settings.log_format, settings.log_level, bridge="mqtt")
    client = connect(settings)
    sink = MqttSink(settings)
    if not sink.start(wait_s=5.0):
        logs.get(__name__).warning("mqtt_not_connected_yet", broker=sink.where,
                                   hint="alerts wait and retry until the broker answers")
    _serve(client, settings, sink)


@bridge.command()
@_line
@click.option("--url", "webhook_url", help="http(s) URL to POST to (default RLR_WEBHOOK_URL).")
@redis_options
def webhook(lines, webhook_url, redis_url, config_file) -> None:
    """POST every alert as JSON (with an Idempotency-Key header) to the webhook URL."""
    from daemon.line.sinks import WebhookSink

    settings = settings_from(config_file, redis_url, lines=lines_value(lines),
                             webhook_url=webhook_url)
    if settings.webhook_url is None:
        raise SettingsError("no webhook URL: set RLR_WEBHOOK_URL or pass --url "
                            "(e.g. https://scada.example/rlr/alerts)")
    logs.configure(settings.log_format, settings.log_level, bridge="webhook")
    client = connect(settings)
    _serve(client, settings, WebhookSink(settings.webhook_url, settings.webhook_timeout_s))


def _serve(client, settings: AlertBridgeSettings, sink) -> None:
    from daemon.line.bridge import Bridge

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


def _plc_commands() -> None:
    from daemon.cli.plc import modbus, opcua, sparkplug_command

    bridge.add_command(modbus)
    bridge.add_command(opcua)
    bridge.add_command(sparkplug_command)


_plc_commands()
