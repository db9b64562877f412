"""The industrial camera options of `rlrctl produce` (pylon://, gige://): features, exposure,
gain, pixel format, ROI and the trigger, turned into one `CameraConfig`."""

from __future__ import annotations

from pathlib import Path

import click

from daemon.line.camera import EDGES, TRIGGER_MODES

NAMES = ("feature", "exposure", "gain", "pixel_format", "roi", "trigger", "trigger_line",
         "trigger_edge", "trigger_delay")


def _feature(ctx, param, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        out += _from_file(value[1:]) if value.startswith("@") else [_pair(value, "=")]
    return tuple(out)


def _pair(text: str, sep: str) -> tuple[str, str]:
    name, found, setting = text.partition(sep)
    if not found or not name.strip() or not setting.strip():
        raise click.BadParameter(f"{text!r}: write Name=Value, e.g. ExposureTime=800")
    return name.strip(), setting.strip()


def _from_file(path: str) -> list[tuple[str, str]]:
    """Name=Value lines, or a pylon feature file (.pfs: Name<TAB>Value); # comments."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"feature file {path}: {exc}") from None
    return [_pair(line, "=" if "=" in line else "\t") for line in map(str.strip, lines)
            if line and not line.startswith("#")]


def _roi(ctx, param, value: str | None) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    try:
        x, y, w, h = (int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: write X,Y,WIDTH,HEIGHT in pixels, e.g. "
                                 "0,0,1280,1024") from None
    if min(x, y) < 0 or min(w, h) < 1:
        raise click.BadParameter(f"{value!r}: offsets must be >= 0 and the size >= 1")
    return x, y, w, h


def camera_options(command):
    """Adds the camera options to a command (they reach it as keyword arguments, NAMES)."""
    options = [
        click.option("--feature", multiple=True, callback=_feature, metavar="NAME=VALUE",
                     help="Set any GenICam feature of the camera (repeatable), checked against "
                          "its node map, e.g. --feature BalanceWhiteAuto=Continuous; @FILE "
                          "reads Name=Value lines (or a pylon .pfs file)."),
        click.option("--exposure", type=click.FloatRange(min=0, min_open=True), metavar="US",
                     help="Exposure time in microseconds (ExposureTime)."),
        click.option("--gain", type=float, help="Gain (Gain, or GainRaw on older cameras)."),
        click.option("--pixel-format", help="Mono8, RGB8, BGR8 or Bayer{RG,GR,GB,BG}8.  "
                     "[default: the camera's]"),
        click.option("--roi", callback=_roi, metavar="X,Y,W,H",
                     help="Region of interest read out by the camera."),
        click.option("--trigger", type=click.Choice(TRIGGER_MODES), default="free",
                     show_default=True, help="free: run at --fps; hardware: one frame per edge "
                     "on --trigger-line; software: one frame per entry of rlr:triggers:{line}, "
                     "with its part id."),
        click.option("--trigger-line", default="Line1", show_default=True,
                     help="Input line of the hardware trigger."),
        click.option("--trigger-edge", type=click.Choice(tuple(EDGES)), default="rising",
                     show_default=True),
        click.option("--trigger-delay", type=click.FloatRange(min=0), metavar="US",
                     help="Delay from the trigger edge to the exposure, in microseconds."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def given(values: dict) -> bool:
    """Whether any camera option differs from its default."""
    defaults = {"feature": (), "trigger": "free", "trigger_line": "Line1",
                "trigger_edge": "rising"}
    return any(values.get(n) != defaults.get(n) for n in NAMES)


def camera_config(values: dict, fps: float, triggers=None):
    """The CameraConfig the options ask for; `triggers` feeds --trigger software."""
    from daemon.line.camera import CameraConfig, Trigger

    trigger = Trigger(values["trigger"], values["trigger_line"], values["trigger_edge"],
                      values["trigger_delay"])
    return CameraConfig(values["feature"], values["exposure"], values["gain"],
                        values["pixel_format"], values["roi"], fps or None, trigger, triggers)
