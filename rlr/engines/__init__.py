"""Engines: what computes a loaded model's scores and maps, one module per engine.

`create_engine(name, model, manifest, device, ...)` builds the engine `name` for a loaded
artifact (`torch` runs the model itself; `onnxruntime`, `openvino` and `tensorrt` run its
exported graph, cached by the artifact's sha256); `names()` and `available(device)` say which
engines exist and which run here; `export_model` writes a graph in an engine's format;
`pick_fastest` is `RLR_ENGINE=auto`. `base` holds the interface and the registry, `graph` the
exported graph and its cache, `bench` the measuring; every other module is one engine.

May import torch and the rest of rlr, never the daemon. A plug-in imports `base` and `graph`,
never another plug-in (tests/unit/test_import_boundary.py).
"""

from rlr.engines.base import (
    Build,
    Engine,
    EngineKind,
    available,
    create_engine,
    export_model,
    formats,
    get,
    kinds,
    names,
    register,
)
from rlr.engines.bench import bench_record, measure, pick_fastest, write_bench_record
from rlr.engines.graph import read_export

__all__ = [
    "Build",
    "Engine",
    "EngineKind",
    "available",
    "bench_record",
    "create_engine",
    "export_model",
    "formats",
    "get",
    "kinds",
    "measure",
    "names",
    "pick_fastest",
    "read_export",
    "register",
    "write_bench_record",
]
