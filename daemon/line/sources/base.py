"""What every producer source shares: the `Source` protocol, `Captured` frames, `nap` and
`redact`, and the registry that `open_source` reads. Each source is one module of this folder
that registers the spec forms it accepts (a scheme such as `rtsp://`, or a test such as "an
existing folder"); the registry finds the modules itself, so a new source is one new file."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from rlr.errors import DataError

_NAP = 0.1  # longest uninterrupted sleep, so stop() (a signal handler) takes effect promptly


class Captured(NamedTuple):
    image: np.ndarray  # uint8 RGB (H, W, 3)
    name: str | None = None  # file name (`--part-from name:` reads it) or frame position
    part: str | None = None  # the part this frame shows (a software trigger's part id)
    cam_ts: int | None = None  # an industrial camera's own timestamp (its ticks)
    cam_frame: int | None = None  # and its frame counter
    lost: int = 0  # frames the camera's counter skipped just before this one


class Source(Protocol):
    """Frames of one camera (or what stands in for one), until the end or `stop()`.

    A source whose frames are of now (a camera, not a file) says so with a class attribute
    `live = True`: a triggered producer then takes its newest frame, never a buffered one.
    """

    def __iter__(self) -> Iterator[Captured]: ...

    def stop(self) -> None:
        """End the iteration after the current frame (safe in a signal handler)."""


def nap(seconds: float, stopped: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stopped():
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, _NAP))


def redact(target: str | int) -> str:
    """The source without a password (rtsp://user:pw@host is common on IP cameras)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", str(target))


# ----------------------------------------------------------------------------- registry

Opener = Callable[..., Source]  # (spec, loop) -> a source; (spec, loop, camera) for cameras


@dataclass(frozen=True)
class SourceKind:
    """One kind of source and the specs it accepts."""

    name: str
    form: str  # how its spec looks, for the error that lists every form
    opens: Opener
    schemes: tuple[str, ...] = ()  # e.g. ("rtsp://",): claimed before any `accepts` test
    accepts: Callable[[str], bool] | None = None
    rank: int = 50  # `accepts` tests run by rank, lowest first
    needs: tuple[str, ...] = ()  # modules of an optional extra, e.g. ("pypylon",)
    extra: str | None = None  # pip extra that installs `needs`: rlr[<extra>]
    camera: bool = False  # an industrial camera: its opener takes the camera settings too


_KINDS: dict[str, SourceKind] = {}


def register(name: str, *, form: str, schemes: tuple[str, ...] = (),
             accepts: Callable[[str], bool] | None = None, rank: int = 50,
             needs: tuple[str, ...] = (), extra: str | None = None,
             camera: bool = False) -> Callable[[Opener], Opener]:
    """Decorator for a source module's opener: `@register("folder", form=..., accepts=...)`.

    A source with an optional extra lists its modules in `needs` and imports them inside the
    opener, so the registry loads without them and only opening that source says what to
    install. A `camera` kind's opener is called with the camera settings as a third
    argument (a `daemon.line.camera.CameraConfig`, or None for the camera's own).
    """
    if not schemes and accepts is None:
        raise ValueError(f"source {name!r} registers no scheme and no accepts test")

    def add(opens: Opener) -> Opener:
        _KINDS[name] = SourceKind(name, form, opens, tuple(s.lower() for s in schemes),
                                  accepts, rank, needs, extra, camera)
        return opens

    return add


def discover() -> None:
    """Import every module of this folder, so each registers its kind."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name != "base":
            importlib.import_module(f"{__package__}.{module.name}")


def kinds() -> list[SourceKind]:
    """Every registered kind, in the order specs are matched."""
    discover()
    return sorted(_KINDS.values(), key=lambda k: (k.rank, k.name))


def known_forms() -> str:
    return "; ".join(k.form for k in kinds())


def find_kind(spec: str) -> SourceKind:
    """The kind that claims `spec`: a registered scheme first, then the `accepts` tests."""
    every = kinds()
    scheme = spec.partition("://")[0].lower() + "://" if "://" in spec else None
    for kind in every:
        if scheme in kind.schemes:
            return kind
    for kind in every:
        if kind.accepts is not None and kind.accepts(spec):
            return kind
    raise DataError(f"source {spec!r} is none of the known forms: {known_forms()}; check the "
                    "path or the spelling")


def open_source(spec: str, loop: bool = False, camera: object | None = None) -> Source:
    """The source `spec` names (folder, video file, camera index "0", "rtsp://..." ...);
    `loop` replays a finite one forever; `camera` (a CameraConfig) sets up an industrial
    camera and is refused for any other kind."""
    kind = find_kind(spec)
    if camera is not None and not kind.camera:
        raise DataError(f"camera settings (--feature, --trigger, --exposure ...) apply to "
                        f"industrial cameras (pylon://, gige://), not to the {kind.name} source "
                        f"{redact(spec)}")
    missing = [m for m in kind.needs if importlib.util.find_spec(m) is None]
    if missing:
        raise DataError(f"the {kind.name} source needs {', '.join(missing)}, which is not "
                        f"installed: pip install 'rlr[{kind.extra or kind.name}]'")
    return kind.opens(spec, loop, camera) if kind.camera else kind.opens(spec, loop)
