"""What every engine is, and the registry that finds them by name.

An engine computes a loaded model's scores and maps behind one interface, `predict(images) ->
Prediction` like `RLRModel`, so callers never know which one computes their scores; the
engines agree with torch to about 1e-5 in fp32 (tests/unit/rlr/engines/). Each engine is one
module in this folder that defines `ENGINE = EngineKind(...)`: its name, the package it needs,
its precisions, the graph formats it exports and its `build` function. The registry imports
every module of the folder on the first lookup and registers their `ENGINE`s, so a new engine
is one new file. A plug-in imports this module and `graph`, never another plug-in.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from rlr.engines.graph import ON_DAMAGE, Format, Warn, cached_export, write_export
from rlr.errors import ConfigError
from rlr.model import Prediction, RLRModel

COMPILE_MODES = ("off", "default", "max-autotune")


class Engine(Protocol):
    name: str
    precision: str
    image_size: int

    def predict(self, images: Tensor) -> Prediction:
        """(B, 3, S, S) float images in [0, 1] -> scores (B,) and maps (B, S, S), float32."""
        ...


@dataclass(frozen=True)
class Build:
    """What an engine is built from: a loaded artifact, where and how to run it."""

    model: RLRModel
    manifest: dict[str, Any]
    device: torch.device
    precision: str
    cache_dir: Path
    max_batch: int = 32
    compile: str = "off"  # torch.compile mode, for engines that compile (torch)
    threads: int = 0  # CPU threads the model computes with; 0: the engine's default
    on_damage: str = "reexport"  # a cached file that fails its sha256: reexport / refuse
    warn: Warn | None = None  # warn(event, **fields) about a damaged cache

    def graph(self, fmt: Format, precision: str = "fp32") -> Path:
        """The model's graph in `fmt`, exported once per artifact sha256 and cached; a
        cached graph is loaded only when its files match their record (graph.check_seal)."""
        return cached_export(self.model, self.manifest, fmt, precision, self.cache_dir,
                             self.on_damage, self.warn)


@dataclass(frozen=True)
class EngineKind:
    """One engine, as its module registers it."""

    name: str  # what RLR_ENGINE and --engine say
    build: Callable[[Build], Engine]
    requires: str | None = None  # the package it imports; None: torch only
    extra: str | None = None  # `pip install 'rlr[extra]'` installs it
    precisions: tuple[str, ...] = ("fp32",)
    formats: tuple[Format, ...] = ()  # graph formats `rlrctl export` writes for it
    needs_cuda: bool = False
    compiles: bool = False  # takes a torch.compile mode (RLR_COMPILE)
    rank: int = 50  # where it is listed: the default engine first
    summary: str = ""

    def installed(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def runs_on(self, device: torch.device | None) -> bool:
        """Installed here, and on a CUDA device where it needs one."""
        return self.installed() and (not self.needs_cuda or
                                     (device is not None and device.type == "cuda"))


_KINDS: dict[str, EngineKind] = {}
_discovered = False


def register(kind: EngineKind) -> EngineKind:
    """Add an engine to the registry (the folder's modules are registered by `discover`)."""
    known = _KINDS.get(kind.name)
    if known is not None and known is not kind:
        raise ConfigError(f"engine {kind.name!r} is registered twice; rename one of them")
    _KINDS[kind.name] = kind
    return kind


def discover() -> None:
    """Import every module of this folder and register the `ENGINE` each one defines."""
    global _discovered
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{__package__}.{info.name}")
        kind = getattr(module, "ENGINE", None)
        if isinstance(kind, EngineKind):
            register(kind)
    _discovered = True


def kinds() -> list[EngineKind]:
    """Every registered engine, the default one first."""
    if not _discovered:
        discover()
    return sorted(_KINDS.values(), key=lambda k: (k.rank, k.name))


def names() -> tuple[str, ...]:
    """The registered engines' names (what `RLR_ENGINE` may say, besides `auto`)."""
    return tuple(k.name for k in kinds())


def get(name: str) -> EngineKind:
    for kind in kinds():
        if kind.name == name:
            return kind
    raise ConfigError(f"engine {name!r} unknown; use one of {', '.join(names())}")


def available(device: torch.device | None = None) -> list[str]:
    """The engines that can run here (their package imports; TensorRT needs CUDA)."""
    return [k.name for k in kinds() if k.runs_on(device)]


def formats() -> dict[str, Format]:
    """Every graph format an engine exports, by name (`rlrctl export --format`)."""
    found = {f.name: f for k in kinds() for f in k.formats}
    return {name: found[name] for name in sorted(found)}


def require(module: str, extra: str | None = None):
    """Import an engine's package, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"the {module} engine is not installed: pip install "
                          f"'rlr[{extra or module}]' (or use the torch engine)") from exc


def create_engine(name: str, model: RLRModel, manifest: dict[str, Any], device: torch.device,
                  precision: str, cache_dir: Path, max_batch: int = 32,
                  compile: str = "off", threads: int = 0, on_damage: str = "reexport",
                  warn: Warn | None = None) -> Engine:
    """The engine `name` for a loaded artifact; exports (once, cached) what it needs.
    `compile` (torch only): torch.compile mode, off / default / max-autotune.
    `threads` > 0: CPU threads the model computes with (torch: for the whole process).
    `on_damage`: a cached export whose files fail their sha256 is exported again
    ("reexport") or refused ("refuse": `CacheDamaged`); `warn(event, **fields)` hears of it."""
    kind = get(name)
    if on_damage not in ON_DAMAGE:
        raise ConfigError(f"on_damage {on_damage!r}: use one of {', '.join(ON_DAMAGE)}")
    if threads < 0:
        raise ConfigError(f"threads {threads}: use 0 (the engine's default) or more")
    if threads:
        # A worker process per core or two, each with its own threads, beats one process
        # whose threads wait on each other at every operator while the event loop, Redis and
        # the cameras take turns on the same cores.
        torch.set_num_threads(threads)
    if compile not in COMPILE_MODES:
        raise ConfigError(f"compile mode {compile!r}: use one of {COMPILE_MODES}")
    if compile != "off" and not kind.compiles:
        raise ConfigError(f"compile mode {compile!r} applies to the torch engine only; "
                          f"{name} runs its own optimised graph (set compile off)")
    if kind.requires is not None:
        require(kind.requires, kind.extra)
    return kind.build(Build(model, manifest, device, precision, Path(cache_dir), max_batch,
                            compile, threads, on_damage, warn))


def export_model(model: RLRModel, manifest: dict[str, Any], fmt: str, out: str | os.PathLike,
                 batch: int | None = None, precision: str = "fp32") -> Path:
    """Write the graph in the format `fmt` and `export.json` into the folder `out`; returns
    the graph's path (see `graph.write_export`)."""
    known = formats()
    if fmt not in known:
        raise ConfigError(f"export format {fmt!r} unknown; use one of {', '.join(known)}")
    return write_export(model, manifest, known[fmt], out, batch, precision)
