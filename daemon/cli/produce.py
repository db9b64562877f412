"""`rlrctl produce`: push a camera's frames (or a folder / video standing in for one) to a line."""

from __future__ import annotations

import signal

import click

from daemon.cli.camera_options import camera_options
from daemon.cli.options import connect, redis_options, settings_from
from daemon.errors import SettingsError
from daemon.wire.schema import ENCODINGS


def _install_signals(producer) -> None:
    """First SIGTERM/SIGINT: finish the frame in flight and exit 0. Second: exit now."""
    calls = []

    def handler(signum, frame) -> None:
        calls.append(signum)
        if len(calls) > 1:
            raise SystemExit(128 + signum)
        producer.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.command()
@click.option("--source", required=True,
              help="Folder of images, video file, camera index (0, 1 ...), rtsp:// / http:// "
                   "stream URL, or an industrial camera: pylon://[SERIAL], gige://[ID|IP].")
@click.option("--camera", required=True, help="Camera name (part of frame ids and alerts).")
@click.option("--line", help="Production line to push to.  [default: first of RLR_LINES]")
@click.option("--fps", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Frames per second; 0 = as fast as possible. An industrial camera "
                   "free-runs at this rate itself.")
@click.option("--encoding", default="jpeg", show_default=True, type=click.Choice(ENCODINGS),
              help="How frames travel in the stream.")
@click.option("--jpeg-quality", default=90, show_default=True, type=click.IntRange(1, 100))
@click.option("--size", type=click.IntRange(min=8),
              help="Resize frames to SIZE x SIZE pixels before sending.  [default: as captured]")
@click.option("--class", "product_class", help="Product class the frames show.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many frames sent.")
@click.option("--loop/--no-loop", default=False, show_default=True,
              help="Replay a folder or video file forever.")
@click.option("--part-from", "part_from", metavar="SPEC",
              help="Give frames a part id: counter[:TEMPLATE][:start=N], name:REGEX, key or "
                   "trigger (docs/cli.md, Part ids and views).  [default: no part ids]")
@click.option("--views", help="The views this camera shoots of each part, in order "
                              "(top,side): one frame each.  [default: one frame per part]")
@click.option("--view", help="The one view this camera shoots (--views NAME).")
@camera_options
@redis_options
def produce(source, camera, line, fps, encoding, jpeg_quality, size, product_class, limit, loop,
            part_from, views, view, redis_url, config_file, **camera_settings) -> None:
    """Push frames from SOURCE to rlr:frames:{line} at a steady rate."""
    from daemon import logs
    from daemon.line.part_ids import parse_views
    from daemon.line.producer import Producer, check_name
    from daemon.line.sources import open_source, redact

    settings = settings_from(config_file, redis_url, lines=line)
    line = settings.line
    check_name("camera", camera)
    views = parse_views(views, view)
    if views and not part_from:
        raise SettingsError("--views needs --part-from: a view is one picture of a part, and "
                            "the part needs an id")
    logs.configure(settings.log_format, settings.log_level, camera=camera, line=line)
    client = connect(settings, timeout_s=10)
    if part_from and camera_settings.get("trigger") == "software":
        raise SettingsError("--trigger software takes each part id from the trigger that fires "
                            "the camera: drop --part-from (or use --part-from with a free-running "
                            "camera, which then keeps its newest frame for each part)")
    frames = open_source(source, loop, _camera(source, camera_settings, fps, client, line))
    if getattr(frames, "paced", False):
        fps = None  # the camera's own rate or its triggers set the pace
    part_ids = _part_ids(part_from, views, client, line, frames)
    producer = Producer(client, line, camera, fps=fps, encoding=encoding,
                        jpeg_quality=jpeg_quality, size=size, product_class=product_class,
                        frames_maxlen=settings.frames_maxlen, part_ids=part_ids)
    _install_signals(producer)
    logs.get().info("producer_started", source=redact(source), fps=fps, encoding=encoding,
                    session=producer.session, limit=limit, part_from=part_from,
                    views=",".join(views) or None)
    try:
        stats = producer.run(frames, limit)
    finally:
        client.close()
    parts = f" ({stats.parts} parts)" if part_ids is not None else ""
    skipped = f", skipped {stats.skipped} without a usable part id" if part_ids is not None else ""
    click.echo(f"sent {stats.sent} frames{parts} to {line} in {stats.elapsed:.1f} s "
               f"({stats.fps:.1f} fps, {stats.bytes / 1e6:.1f} MB); dropped "
               f"{stats.dropped_late} late, {stats.dropped_offline} while Redis was away"
               + (f"; the camera lost {stats.lost_camera}" if stats.lost_camera else "")
               + skipped)


def _part_ids(spec, views, client, line, frames):
    """The part ids `--part-from` names, or None; `name:` needs a source with file names."""
    if not spec:
        return None
    from daemon.line.part_ids import open_part_ids

    if spec.startswith("name:") and getattr(frames, "live", False):
        raise SettingsError(f"--part-from {spec!r} reads file names, and a live camera has "
                            "none: use a folder source, or counter, key or trigger")
    return open_part_ids(spec, views, client, line)


def _camera(source, values, fps, client, line):
    """The camera settings for an industrial camera source; None for the others (which
    refuse camera options)."""
    from daemon.cli.camera_options import camera_config, given
    from daemon.line.sources.base import find_kind
    from daemon.line.triggers import RedisTriggers

    if not find_kind(source).camera:
        return camera_config(values, fps) if given(values) else None
    triggers = RedisTriggers(client, line) if values["trigger"] == "software" else None
    return camera_config(values, fps, triggers)
