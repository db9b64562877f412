"""The bridges there are: every module of this folder that declares `BRIDGE` (a
`base.BridgeSpec`) is a bridge, registered under its spec's name. `rlrctl bridge` is built
from `bridges()`; adding a protocol is adding a module, nothing here changes."""

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
        if spec.name in found:
            raise ValueError(f"two bridges named {spec.name!r}: {module.__name__} and "
                             f"{found[spec.name].run.__module__}; rename one")
        found[spec.name] = spec
    return dict(sorted(found.items()))


def get(name: str, package: str = PACKAGE) -> BridgeSpec:
    """The bridge called `name`; `KeyError` naming the known ones otherwise."""
    known = bridges(package)
    if name not in known:
        raise KeyError(f"no bridge named {name!r}; known: {', '.join(known)}")
    return known[name]
