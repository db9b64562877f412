"""`rlrctl produce`: push a camera's frames (or a folder / video standing in for one) to a line."""

from __future__ import annotations

import signal

import click

from daemon.cli.camera_options import camera_options
from daemon.cli.options import connect, redis_options, settings_from
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
@camera_options
@redis_options
def produce(source, camera, line, fps, encoding, jpeg_quality, size, product_class, limit, loop,
            redis_url, config_file, **camera_settings) -> None:
    """Push frames from SOURCE to rlr:frames:{line} at a steady rate."""
    from daemon import logs
    from daemon.line.producer import Producer, check_name
    from daemon.line.sources import open_source, redact

    settings = settings_from(config_file, redis_url, lines=line)
    line = settings.line
    check_name("camera", camera)
    logs.configure(settings.log_format, settings.log_level, camera=camera, line=line)
    client = connect(settings, timeout_s=10)
    frames = open_source(source, loop, _camera(source, camera_settings, fps, client, line))
    if getattr(frames, "paced", False):
        fps = None  # the camera's own rate or its triggers set the pace
    producer = Producer(client, line, camera, fps=fps, encoding=encoding,
                        jpeg_quality=jpeg_quality, size=size, product_class=product_class,
                        frames_maxlen=settings.frames_maxlen)
    _install_signals(producer)
    logs.get().info("producer_started", source=redact(source), fps=fps, encoding=encoding,
                    session=producer.session, limit=limit)
    try:
        stats = producer.run(frames, limit)
    finally:
        client.close()
    click.echo(f"sent {stats.sent} frames to {line} in {stats.elapsed:.1f} s "
               f"({stats.fps:.1f} fps, {stats.bytes / 1e6:.1f} MB); dropped "
               f"{stats.dropped_late} late, {stats.dropped_offline} while Redis was away"
               + (f"; the camera lost {stats.lost_camera}" if stats.lost_camera else ""))


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
