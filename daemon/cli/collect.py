"""`rlrctl collect`: write frames of a live line as training images (MVTec-style layout)."""

from __future__ import annotations

import re
import signal
import sys

import click

from daemon.cli.options import connect, redis_options, settings_from

_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


@click.command()
@click.option("--line", help="Line to read frames from [default: the first of RLR_LINES].")
@click.option("--cameras", help="Comma-separated cameras to take frames from (default: all).")
@click.option("--class", "product_class",
              help="Product class: frames of other classes are skipped, frames without a class "
              "are filed under it (default: each frame's class, else its camera name).")
@click.option("--n", "count", default=500, show_default=True, type=click.IntRange(min=1),
              help="Frames to write.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Data set root: frames go to OUT/<class>/train/good/<camera>-<frame_id>.png.")
@click.option("--since", default="$", show_default=True,
              help="'$': frames from now on; '0': every frame still in the stream; or an id.")
@click.option("--only-normal", is_flag=True,
              help="Keep only frames a worker scored as normal (waits for their results).")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=16),
              help="Side of the square images written (the workers' resize before scoring).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True),
              help="Stop after this long even with fewer than --n frames.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@redis_options
def collect(line, cameras, product_class, count, out, since, only_normal, size, max_seconds,
            quiet, redis_url, config_file) -> None:
    """Write frames from a line's stream into a training layout, to learn a new variant.

    Reads without a consumer group, so the workers keep every frame. Ctrl-C stops early and
    keeps what was written.
    """
    from tqdm import tqdm

    from daemon.line.capture import Collector

    if since not in ("$", "0") and not _STREAM_ID.match(since):
        raise click.BadParameter(f"{since!r}: use $, 0 or a stream id like 1714550000000-0",
                                 param_hint="--since")
    settings = settings_from(config_file, redis_url, lines=line)
    client = connect(settings)
    wanted = [c.strip() for c in (cameras or "").split(",") if c.strip()] or None
    collector = Collector(client, settings.line, out, cameras=wanted,
                          product_class=product_class, size=size, only_normal=only_normal,
                          max_payload_bytes=settings.max_payload_bytes,
                          max_side=settings.max_image_side, block_ms=settings.block_ms)
    signal.signal(signal.SIGTERM, lambda *_: collector.stop())
    bar = tqdm(total=count, desc=f"collecting {settings.line}", unit="frame", disable=quiet,
               file=sys.stderr)
    try:
        stats = collector.run(count, since, max_seconds, on_write=lambda _: bar.update())
    except KeyboardInterrupt:
        stats = collector.stats
    finally:
        bar.close()
    per_class = ", ".join(f"{k} {v}" for k, v in sorted(stats.per_class.items()))
    click.echo(f"wrote {stats.written} frame(s) to {out}" + (f": {per_class}" if per_class
                                                            else ""))
    skipped = stats.skipped()
    if skipped:
        click.echo("skipped: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                           for k, v in skipped.items()))
    if not stats.written:
        click.secho(f"no frames collected from line {settings.line}: is a camera producing "
                    "(rlrctl produce), and do --cameras / --class match its frames?"
                    + (" With --only-normal a worker must be scoring the line." if only_normal
                       else ""), fg="yellow", err=True)
        sys.exit(1)
    if stats.written < count:
        click.secho(f"warning: {stats.written} of {count} frames collected", fg="yellow",
                    err=True)
    classes = ",".join(sorted(stats.per_class))
    click.echo(f"train on them with: rlrctl train --data {out} --classes {classes} --out M.rlr")
