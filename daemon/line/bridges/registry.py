"""The bridges there are: every module of this folder that declares `BRIDGE` (a
`base.BridgeSpec`) is a bridge, registered under its spec's name, which is also the module's
name. `rlrctl bridge` is built from `bridges()` (every bridge) and `get(name)` (one bridge, its
module alone imported); adding a protocol is adding a module, nothing here changes."""

from __future__ import annotations

import importlib
import pkgutil

from daemon.line.bridges.base import BridgeSpec

PACKAGE = "daemon.line.bridges"


def bridges(package: str = PACKAGE) -> dict[str, BridgeSpec]:
    """Name -> spec of every bridge module in `package`, by name."""
    found: dict[str, BridgeSpec] = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        spec = getattr(module, "BRIDGE", None)
        if not isinstance(spec, BridgeSpec):
            continue  # a shared module (base, linestate, ...), not a bridge
        if spec.name != info.name:
            raise ValueError(f"{module.__name__} declares the bridge {spec.name!r}: name the "
                             f"module {spec.name}.py or the bridge {info.name!r}")
        found[spec.name] = spec
    return dict(sorted(found.items()))


def get(name: str, package: str = PACKAGE) -> BridgeSpec:
    """The bridge called `name`; `KeyError` naming the known ones otherwise."""
    if name.isidentifier():
        # A bridge's module is named after it: one import, not every bridge's libraries.
        try:
            spec = getattr(importlib.import_module(f"{package}.{name}"), "BRIDGE", None)
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise  # the bridge is there, a library it needs is not
            spec = None
        if isinstance(spec, BridgeSpec) and spec.name == name:
            return spec
    known = bridges(package)
    if name not in known:
        raise KeyError(f"no bridge named {name!r}; known: {', '.join(known)}")
    return known[name]
