"""`rlrctl bridge modbus` and `rlrctl bridge opcua`: the line state for PLCs and SCADA."""

from __future__ import annotations

import asyncio
import signal

import click

from daemon import logs
from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.errors import SettingsError
from daemon.line.settings import PlcBridgeSettings

_line = click.option("--line", "lines", multiple=True,
                     help="Line to serve (repeatable; default RLR_LINES).")
_camera = click.option("--camera", "cameras", multiple=True,
                       help="Camera to map (repeatable; default RLR_PLC_CAMERAS, else the "
                       "cameras seen in recent results).")


def _entries(settings: PlcBridgeSettings, cameras: tuple[str, ...]) -> list[tuple[str, str]]:
    from daemon.line.plcstate import discover_cameras, parse_cameras

    names = list(cameras) or parse_cameras(settings.plc_cameras)
    if names:
        return [(line, cam) for line in settings.lines for cam in names]
    client = connect(settings)
    try:
        found = discover_cameras(client, settings.lines)
    finally:
        client.close()
    if not found:
        raise SettingsError(f"no cameras known on line(s) {','.join(settings.lines)}: pass "
                            "--camera NAME (repeatable) or set RLR_PLC_CAMERAS=cam1,cam2")
    return found


def _run(main, kind: str) -> None:
    """Run `main(stop)` on an event loop; SIGTERM / SIGINT set `stop`."""
    log = logs.get(__name__)

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: (log.info(
                "bridge_stopping", kind=kind, signal=signal.Signals(s).name), stop.set()))
        await main(stop)

    asyncio.run(runner())


@click.command()
@_line
@_camera
@click.option("--host", help="Address to bind (default RLR_MODBUS_HOST).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default RLR_MODBUS_PORT).")
@click.option("--print-map", is_flag=True, help="Print the register map and exit.")
@redis_options
def modbus(lines, cameras, host, port, print_map, redis_url, config_file) -> None:
    """Serve the line state as a Modbus TCP server (reject coils, latches, scores)."""
    from daemon.line import modbus as mb

    settings = settings_from(config_file, redis_url, lines=lines_value(lines), modbus_host=host,
                             modbus_port=port)
    entries = _entries(settings, cameras)
    if print_map:
        click.echo(mb.format_map(mb.register_map(entries)))
        return
    logs.configure(settings.log_format, settings.log_level, bridge="modbus")
    connect(settings).close()  # fail now, in one line, when Redis does not answer

    async def main(stop: asyncio.Event) -> None:
        from daemon.line.plcstate import LineFeed
        from daemon.wire.clients import connect_async

        client = connect_async(settings)
        table = mb.ModbusTable(entries, settings.modbus_pulse_ms)
        try:
            await mb.serve(lambda listener: LineFeed(client, settings, "modbus", settings.lines,
                                                     listener, entries),
                           table, settings.modbus_host, settings.modbus_port, stop,
                           settings.block_ms)
        finally:
            await client.aclose()

    _run(main, "modbus")


@click.command()
@_line
@_camera
@click.option("--endpoint", help="opc.tcp:// URL to bind (default RLR_OPCUA_ENDPOINT).")
@redis_options
def opcua(lines, cameras, endpoint, redis_url, config_file) -> None:
    """Serve the line state as an OPC UA server (node tree, alert events, acknowledge)."""
    settings = settings_from(config_file, redis_url, lines=lines_value(lines),
                             opcua_endpoint=endpoint)
    logs.configure(settings.log_format, settings.log_level, bridge="opcua")
    client = connect(settings)
    try:  # cameras appear in the tree as results arrive; these are there from the start
        known = [(line, cam) for line in settings.lines
                 for cam in (list(cameras) or _parse(settings.plc_cameras))] or \
            _discover(client, settings.lines)
    finally:
        client.close()

    async def main(stop: asyncio.Event) -> None:
        from daemon.line import opcua as ua_bridge
        from daemon.wire.clients import connect_async

        aclient = connect_async(settings)
        try:
            await ua_bridge.serve(settings, aclient, settings.lines, known, stop)
        finally:
            await aclient.aclose()

    _run(main, "opcua")


def _parse(value: str) -> list[str]:
    from daemon.line.plcstate import parse_cameras

    return parse_cameras(value)


def _discover(client, lines) -> list[tuple[str, str]]:
    from daemon.line.plcstate import discover_cameras

    return discover_cameras(client, lines)


@click.command("sparkplug")
@_line
@click.option("--mqtt-url", help="mqtt://host:port or mqtts://host:port (default RLR_MQTT_URL).")
@redis_options
def sparkplug_command(lines, mqtt_url, redis_url, config_file) -> None:
    """Publish the line state as a Sparkplug B edge node (= bridge mqtt --format sparkplug)."""
    sparkplug(settings_from(config_file, redis_url, lines=lines_value(lines),
                            mqtt_url=mqtt_url))


def sparkplug(settings: PlcBridgeSettings) -> None:
    """`rlrctl bridge mqtt --format sparkplug`: run the Sparkplug B edge node."""
    from daemon.line import sparkplug as spb

    logs.configure(settings.log_format, settings.log_level, bridge="sparkplug")
    spb.check_id(settings.sparkplug_group, "RLR_SPARKPLUG_GROUP")
    connect(settings).close()

    async def main(stop: asyncio.Event) -> None:
        from daemon.wire.clients import connect_async

        client = connect_async(settings)
        try:
            await spb.serve(settings, client, settings.lines, stop)
        finally:
            await client.aclose()

    _run(main, "sparkplug")
