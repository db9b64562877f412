"""Industrial (GenICam) cameras, whatever the driver: the settings a producer writes to one,
its pixel formats turned into the RGB the producer encodes, the frame counter that shows lost
frames, and the acquisition loop that triggers, grabs and reconnects. A driver (Basler pylon,
GigE Vision through Aravis) is a small class in `daemon.line.sources`; this module never
imports one, so it runs and is tested without any camera library."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import cv2
import numpy as np

from daemon import logs
from daemon.line.sources.base import Captured, nap
from daemon.wire.backoff import Backoff
from rlr.errors import DataError

TRIGGER_MODES = ("free", "software", "hardware")
EDGES = {"rising": "RisingEdge", "falling": "FallingEdge"}

# GenICam names a Bayer mosaic by its first row (BayerRG8: R G / G B); OpenCV names it by the
# second and third pixel of the second row, so each GenICam pattern is OpenCV's diagonal twin.
_BAYER = {"BayerRG8": cv2.COLOR_BayerBG2RGB, "BayerGR8": cv2.COLOR_BayerGB2RGB,
          "BayerGB8": cv2.COLOR_BayerGR2RGB, "BayerBG8": cv2.COLOR_BayerRG2RGB}
_RGB = ("RGB8", "RGB8Packed")
_BGR = ("BGR8", "BGR8Packed")
PIXEL_FORMATS = ("Mono8", *_RGB, *_BGR, *_BAYER)


class CameraGone(Exception):
    """The camera is not there (unplugged, rebooted, powered off, not yet found)."""


class FeatureRefused(Exception):
    """The camera refused a feature write; the message is the node's own error, one line."""


class Grab(NamedTuple):
    raw: np.ndarray  # (H, W) for mono and Bayer, (H, W, 3) for RGB / BGR
    pixel_format: str
    cam_ts: int  # the camera's timestamp, in its own ticks
    cam_frame: int  # the camera's frame counter (GenICam block id / GigE Vision frame id)


class Driver(Protocol):
    """One camera through its vendor's library. Every method but `name` may raise
    `CameraGone`; `write` raises `FeatureRefused`."""

    name: str  # for logs and errors: "pylon 0815-0000"

    def connect(self) -> str: ...  # open the camera; returns model and serial, for the log

    def has(self, feature: str) -> bool: ...

    def write(self, feature: str, value: str) -> None: ...

    def read(self, feature: str) -> str: ...

    def start(self) -> None: ...  # start acquisition (buffers queued)

    def fire(self) -> None: ...  # TriggerSoftware

    def grab(self, timeout_s: float) -> Grab | None: ...  # None: nothing within the timeout

    def check(self) -> None: ...  # raise CameraGone when the camera has gone (idle liveness)

    def close(self) -> None: ...


class PartTrigger(NamedTuple):
    part_id: str
    ts: float
    via: str


class Triggers(Protocol):
    """Where software triggers come from (`daemon.line.triggers.RedisTriggers`)."""

    def next(self, timeout_s: float) -> PartTrigger | None: ...

    def skip(self) -> int: ...  # drop what is waiting (stale after an outage); how many


@dataclass(frozen=True)
class Trigger:
    mode: str = "free"  # free | software | hardware
    line: str = "Line1"  # hardware: the input line
    edge: str = "rising"  # hardware: rising | falling
    delay_us: float | None = None  # hardware: from the edge to the exposure

    def __post_init__(self) -> None:
        if self.mode not in TRIGGER_MODES:
            raise DataError(f"trigger mode {self.mode!r}: use one of {', '.join(TRIGGER_MODES)}")
        if self.edge not in EDGES:
            raise DataError(f"trigger edge {self.edge!r}: use rising or falling")


@dataclass(frozen=True)
class CameraConfig:
    """What the producer's options ask of a camera; `writes()` turns it into features."""

    features: tuple[tuple[str, str], ...] = ()  # --feature Name=Value, written last
    exposure_us: float | None = None
    gain: float | None = None
    pixel_format: str | None = None
    roi: tuple[int, int, int, int] | None = None  # x, y, width, height
    fps: float | None = None  # free-run frame rate; None: the camera's own
    trigger: Trigger = field(default_factory=Trigger)
    triggers: Triggers | None = None  # software trigger: the Redis feed

    def writes(self) -> list[tuple[tuple[str, ...], str, bool]]:
        """(names, value, required) in the order cameras accept them: the first name the
        camera has is written (SFNC names first, the older *Abs / *Raw ones after)."""
        out: list[tuple[tuple[str, ...], str, bool]] = []
        if self.pixel_format:
            out.append((("PixelFormat",), self.pixel_format, True))
        if self.roi:  # offsets to 0 first: the width's maximum depends on the offset
            x, y, w, h = self.roi
            out += [(("OffsetX",), "0", True), (("OffsetY",), "0", True),
                    (("Width",), str(w), True), (("Height",), str(h), True),
                    (("OffsetX",), str(x), True), (("OffsetY",), str(y), True)]
        if self.exposure_us is not None:
            out.append((("ExposureTime", "ExposureTimeAbs"), _num(self.exposure_us), True))
        if self.gain is not None:
            out.append((("Gain", "GainRaw"), _num(self.gain), True))
        out += self._trigger_writes()
        out += [((name,), value, True) for name, value in self.features]
        return out

    def _trigger_writes(self) -> list[tuple[tuple[str, ...], str, bool]]:
        t = self.trigger
        out = [(("TriggerSelector",), "FrameStart", False)]
        if t.mode == "free":
            out.append((("TriggerMode",), "Off", True))
            if self.fps:
                out += [(("AcquisitionFrameRateEnable",), "1", False),
                        (("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), _num(self.fps),
                         True)]
            return out
        out += [(("TriggerMode",), "On", True),
                (("TriggerSource",), "Software" if t.mode == "software" else t.line, True)]
        if t.mode == "hardware":
            out.append((("TriggerActivation",), EDGES[t.edge], True))
            if t.delay_us is not None:
                out.append((("TriggerDelay", "TriggerDelayAbs"), _num(t.delay_us), True))
        return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def configure(driver: Driver, config: CameraConfig) -> str:
    """Write `config` to the camera; returns its pixel format. One clear line (DataError)
    for a feature the camera lacks, a value it refuses, a format this side cannot convert."""
    for names, value, required in config.writes():
        name = next((n for n in names if driver.has(n)), None)
        if name is None:
            if required:
                raise DataError(f"camera {driver.name} has no feature {names[0]!r}; check the "
                                "name's spelling and case in the camera's feature list")
            continue
        try:
            driver.write(name, value)
        except FeatureRefused as exc:
            raise DataError(f"camera {driver.name} refused {name}={value}: {exc}") from None
    pixel_format = driver.read("PixelFormat")
    if pixel_format not in PIXEL_FORMATS:
        raise DataError(f"camera {driver.name} sends pixel format {pixel_format}, which cannot "
                        f"be converted to 8-bit RGB: set --pixel-format to one of "
                        f"{', '.join(PIXEL_FORMATS)}")
    return pixel_format


def to_rgb(raw: np.ndarray, pixel_format: str) -> np.ndarray:
    """A camera image as uint8 RGB (H, W, 3), what the producer encodes."""
    if pixel_format == "Mono8":
        return np.repeat(raw.reshape(raw.shape[0], raw.shape[1], 1), 3, axis=2)
    if pixel_format in _RGB:
        return raw.reshape(raw.shape[0], -1, 3)
    if pixel_format in _BGR:
        return np.ascontiguousarray(raw.reshape(raw.shape[0], -1, 3)[..., ::-1])
    if pixel_format in _BAYER:
        return cv2.cvtColor(np.ascontiguousarray(raw), _BAYER[pixel_format])
    raise DataError(f"pixel format {pixel_format} cannot be converted to 8-bit RGB: use one of "
                    f"{', '.join(PIXEL_FORMATS)}")


class FrameCounter:
    """Frames lost, from the camera's frame counter: a jump past the next number is that many
    frames lost (dropped in the camera, on the wire, or for want of a free buffer). A counter
    that goes back (reconnect, camera reset, 16-bit GigE Vision wrap) loses none."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.lost = 0

    def see(self, number: int) -> int:
        lost = number - self.last - 1 if self.last is not None and number > self.last else 0
        self.last = number
        self.lost += lost
        return lost

    def restart(self) -> None:
        self.last = None


class CameraSource:
    """Frames of one GenICam camera: free-running, or one per hardware or software trigger
    (each software trigger's part id goes with its frame). A camera that disappears is
    reconnected with backoff; only a camera never found at all is an error."""

    paced = True  # the camera sets the rate: the producer must not pace it again

    def __init__(self, driver: Driver, config: CameraConfig, backoff: Backoff | None = None,
                 grab_timeout_s: float = 1.0) -> None:
        if config.trigger.mode == "software" and config.triggers is None:
            raise DataError("software trigger needs a trigger feed (rlrctl produce --trigger "
                            "software reads rlr:triggers:{line})")
        self.driver, self.config = driver, config
        self.backoff = backoff or Backoff(0.5, 10.0)
        self.grab_timeout_s = grab_timeout_s
        self.counter = FrameCounter()
        self._closed = False
        self._log = logs.get().bind(camera_source=driver.name)

    def stop(self) -> None:
        """End the iteration after the current frame (safe in a signal handler)."""
        self._closed = True

    def __iter__(self) -> Iterator[Captured]:
        connected = False
        while not self._closed:
            try:
                described = self.driver.connect()
                pixel_format = configure(self.driver, self.config)
                self.driver.start()
                self._connected(described, pixel_format, connected)
                connected = True
                yield from self._acquire(pixel_format)
            except CameraGone as exc:
                if not connected:
                    raise DataError(f"camera {self.driver.name}: {exc}") from None
                self._lost(exc)
            finally:
                self.driver.close()

    def _connected(self, described: str, pixel_format: str, before: bool) -> None:
        self.counter.restart()
        self.backoff.reset()
        if self.config.triggers is not None and before:
            skipped = self.config.triggers.skip()  # those parts have gone by: never fire late
            if skipped:
                self._log.warning("triggers_missed", n=skipped, why="camera was away")
        event = "camera_reconnected" if before else "camera_connected"
        self._log.info(event, camera_model=described, pixel_format=pixel_format,
                       trigger=self.config.trigger.mode)

    def _lost(self, exc: CameraGone) -> None:
        delay = self.backoff.next()
        self._log.warning("camera_unavailable", error=str(exc), retry_s=delay)
        nap(delay, lambda: self._closed)

    def _acquire(self, pixel_format: str) -> Iterator[Captured]:
        software = self.config.trigger.mode == "software"
        checked = time.monotonic()
        while not self._closed:
            part = None
            if software:
                trigger = self.config.triggers.next(0.2)
                if trigger is None:
                    if time.monotonic() - checked > 1.0:  # no frames to tell: ask the camera
                        self.driver.check()
                        checked = time.monotonic()
                    continue
                self.driver.fire()
                part = trigger.part_id
            grab = self.driver.grab(self.grab_timeout_s)
            if grab is None:
                if software:
                    self._log.warning("trigger_without_frame", part=part)
                continue
            lost = self.counter.see(grab.cam_frame)  # the producer logs and counts it
            yield Captured(to_rgb(grab.raw, pixel_format), None, part=part, cam_ts=grab.cam_ts,
                           cam_frame=grab.cam_frame, lost=lost)


def one_line(text: str) -> str:
    """A vendor library's error as one line: its first clause, whitespace squeezed."""
    return " ".join(str(text).split(" : ")[0].split()) or "refused"
