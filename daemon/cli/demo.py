"""`rlrctl demo`: the whole line on one box, end to end, watched in the terminal; and
`rlrctl redis`, the embedded Redis in the foreground."""

from __future__ import annotations

import sys
import time
from collections import deque
from pathlib import Path

import click


class TerminalView:
    """The demo's live view: a redrawn table on a terminal, one line per second otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.url = ""

    def console(self, url: str) -> None:
        self.url = url  # kept on screen: the redrawn table would wipe a line printed once

    def step(self, title: str) -> None:
        click.secho(f"==> {title}", bold=True)

    def warn(self, text: str) -> None:
        click.secho(text, fg="yellow")

    def alert(self, alert) -> None:
        if not self.tty:
            click.secho(f"ALERT {alert.camera}: {alert.rule} frames "
                        f"{', '.join(alert.frame_ids)}", fg="red")

    def summary(self, text: str) -> None:
        click.echo(text)

    def show(self, cams: dict, alerts: deque, left_s: float) -> None:
        if not self.tty:
            click.echo(" | ".join(f"{c}: {v.frames} frames, {v.anomalous} anomalous, "
                                  f"{v.alerts} alerts" for c, v in sorted(cams.items())))
            return
        rows = [f"{'camera':<14}{'frames':>7}{'anomalous':>10}{'score/thr':>10}  {'last':<8}"
                f"{'alerts':>7}  latency  recent (score / threshold)"]
        for cam, v in sorted(cams.items()):
            last = v.last
            verdict = "-" if last is None else ("DEFECT" if last.is_anomaly else "ok")
            norm = f"{last.normalized:.2f}" if last is not None and last.normalized else "-"
            lat = f"{last.latency_ms:6.0f}ms" if last is not None else "       -"
            spark = "".join(_bar(s) for s in v.scores)
            rows.append(f"{cam:<14}{v.frames:>7}{v.anomalous:>10}{norm:>10}  {verdict:<8}"
                        f"{v.alerts:>7}  {lat}  {spark}")
        click.echo("\x1b[H\x1b[2J", nl=False)
        click.secho(f"rlr line demo - live results ({max(0, left_s):.0f}s left, Ctrl-C stops)"
                    + (f"   console: {self.url}" if self.url else ""), bold=True)
        click.echo("\n".join(rows))
        click.echo("\nrecent alerts:")
        for a in list(alerts)[::-1]:
            click.secho(f"  {time.strftime('%H:%M:%S', time.localtime(a.raised_ts))} "
                        f"{a.camera:<14} {a.rule}  max score {max(a.scores):.3f} "
                        f"(threshold {a.threshold or 0:.3f})  frames {', '.join(a.frame_ids)}",
                        fg="red")


def _bar(score: float) -> str:
    if score >= 1.0:
        return "#"
    return " .:-=+*"[min(6, int(score * 7))]


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default="demo",
              show_default=True, help="Where data, model, logs and the embedded Redis go.")
@click.option("--seconds", type=float, default=45, show_default=True,
              help="How long the line runs before it stops by itself.")
@click.option("--fps", type=float, default=3, show_default=True, help="Frames/s per camera.")
@click.option("--preset", type=click.Choice(["lite", "tiny"]), default="lite",
              show_default=True, help="Model preset trained for the demo.")
@click.option("--epochs", type=int, default=8, show_default=True)
@click.option("--console-port", type=click.IntRange(0, 65535), default=8780, show_default=True,
              help="Port of the line console the demo starts (0: none; taken: any free one).")
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Serve this artifact instead of training one (its classes should be "
                   "fabric, tile, washer for meaningful scores).")
def demo(workdir, seconds, fps, preset, epochs, console_port, model):
    """Run a whole inspection line on this machine and watch it live.

    Trains a model on a synthetic 3-class set and calibrates it on separate normal images
    (unless --model), starts an embedded Redis (unless RLR_REDIS_URL is set), a worker and
    one simulated camera per class replaying unseen normal images with defects among them
    (PNG, like the calibration images); shows per-camera scores and alerts; then stops.
    """
    from daemon.line.demo import run_demo

    run_demo(workdir, seconds, fps, preset, epochs, model, TerminalView(), console_port)


@click.command("redis")
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path),
              default="rlr-redis", show_default=True, help="Data directory (append-only file).")
@click.option("--port", type=int, default=6379, show_default=True,
              help="TCP port on 127.0.0.1 (0: unix socket only).")
def redis_server(workdir, port):
    """Run the embedded Redis in the foreground until Ctrl-C / SIGTERM.

    For a single box without a system Redis, and for the walk-throughs in docs/. Plants run
    their own Redis (or Redis Cluster / Sentinel) and point RLR_REDIS_URL at it.
    """
    import signal
    import threading

    from daemon.line.embedded import EmbeddedRedis

    server = EmbeddedRedis(workdir, port=port or None).start()
    click.echo(f"redis-server running: RLR_REDIS_URL={server.url}  (data in {workdir}; "
               "Ctrl-C stops it)")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(1.0):
            if server.process is None or server.process.poll() is not None:
                raise click.ClickException(f"redis-server exited; see {workdir}/redis.log")
    finally:
        server.stop()
