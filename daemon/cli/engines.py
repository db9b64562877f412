"""`rlrctl export` and `rlrctl engines`: the model's graph for serving runtimes, and which
runtime is fastest for a model on this machine. `engine_options` / `predictor_for` give
`rlrctl score` and `rlrctl eval` an `--engine`, so quality is checked on the engine that will
serve."""

from __future__ import annotations

from pathlib import Path

import click

ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def engine_options(f):
    f = click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                     show_default=True,
                     help="auto: bf16 on CUDA (torch, tensorrt), fp32 otherwise.")(f)
    f = click.option("--engine", type=click.Choice(ENGINES), default="torch",
                     show_default=True, help="Runtime that computes the scores.")(f)
    return f


def predictor_for(art, engine: str, precision: str, device):
    """The artifact's model, or a runtime of it (exported once, cached)."""
    from daemon.serve.settings import EngineChoice
    from rlr.runtimes import build_runtime

    if engine == "torch" and precision == "auto":
        return art.model
    # the options as given (fp16 included), other settings at their defaults
    choice = EngineChoice.model_construct(engine=engine, precision=precision)
    prec = choice.precision_on(device)
    if engine != "torch":
        click.echo(f"engine {engine} ({prec}): exporting the model if not cached "
                   f"({choice.cache})", err=True)
    return build_runtime(engine, art.model, art.manifest, device, prec, choice.cache)


@click.command()
@click.argument("model_path", metavar="MODEL.rlr", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "openvino", "torchscript"]),
              required=True, help="Graph format.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write (replaced when it exists).")
@click.option("--batch", type=int, help="Fix the batch size (default: any batch).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32",
              show_default=True, help="openvino only: weights stored fp16, or bf16 compute.")
def export(model_path, fmt, out, batch, precision) -> None:
    """Export MODEL.rlr's inference graph (images -> score, map) with a copy of its manifest."""
    from rlr.artifact import load_artifact
    from rlr.export import export_model

    art = load_artifact(model_path)
    click.echo(f"exporting {model_path} (sha256 {art.manifest['sha256'][:16]}) as {fmt} ...")
    graph = export_model(art.model, art.manifest, fmt, out, batch, precision)
    size = sum(p.stat().st_size for p in Path(out).iterdir()) / 1e6
    click.echo(f"wrote {graph} and {Path(out) / 'export.json'} ({size:.1f} MB)")


@click.group("engines")
def engines_group() -> None:
    """Serving runtimes for a model on this machine."""


@engines_group.command("bench")
@click.argument("model_path", metavar="MODEL.rlr", type=click.Path(exists=True, dir_okay=False))
@click.option("--batch", default=8, show_default=True, help="The worker's RLR_BATCH_SIZE.")
@click.option("--seconds", default=3.0, show_default=True, help="Measuring time per engine.")
@click.option("--device", default="auto", show_default=True)
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Engine cache (default: RLR_ENGINE_CACHE's default).")
def bench(model_path, batch, seconds, device, cache_dir) -> None:
    """Measure every engine installed here on MODEL.rlr (fp32) and record the fastest, which
    workers with RLR_ENGINE=auto then take without measuring."""
    from daemon.serve.settings import default_engine_cache
    from rlr.artifact import load_artifact
    from rlr.device import resolve_device
    from rlr.runtimes import available, build_runtime, measure, write_bench_record

    dev = resolve_device(device)
    cache = Path(cache_dir) if cache_dir else default_engine_cache()
    art = load_artifact(model_path, device=dev)
    fps: dict[str, float] = {}
    for name in available(dev):
        try:
            rt = build_runtime(name, art.model, art.manifest, dev, "fp32", cache, batch)
            fps[name] = measure(rt, batch, seconds)
        except Exception as exc:
            click.secho(f"{name:<12} cannot run this model: {exc}", fg="yellow")
            continue
        click.echo(f"{name:<12} {fps[name]:8.1f} frames/s  ({fps[name] / fps['torch']:.2f}x "
                   "torch)")
    path = write_bench_record(art.manifest, batch, fps, cache)
    best = max(fps, key=fps.get)
    click.echo(f"fastest: {best}; recorded in {path}")
