"""`rlrctl export` and `rlrctl engines`: the model's graph in an engine's format, the engines
registered (rlr.engines) and which one is fastest for a model on this machine.
`engine_options` / `predictor_for` give `rlrctl score` and `rlrctl eval` an `--engine`, so
quality is checked on the engine that will serve."""

from __future__ import annotations

from pathlib import Path

import click

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class _Registered(click.Choice):
    """A choice among names the engine registry gives, read when first needed, so loading
    a command module does not import the engines (and torch)."""

    def __init__(self, names) -> None:
        self._names = names
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._names())


def _engine_names() -> tuple[str, ...]:
    from rlr.engines import names

    return names()


def _format_names() -> tuple[str, ...]:
    from rlr.engines import formats

    return tuple(formats())


def engine_options(f):
    f = click.option("--precision", type=click.Choice(PRECISIONS), default="auto",
                     show_default=True,
                     help="auto: bf16 on CUDA (torch, tensorrt), fp32 otherwise.")(f)
    f = click.option("--engine", type=_Registered(_engine_names), default="torch",
                     show_default=True, help="Engine that computes the scores.")(f)
    return f


def predictor_for(art, engine: str, precision: str, device):
    """The artifact's model, or an engine of it (exported once, cached)."""
    from daemon.serve.settings import EngineChoice
    from rlr.engines import create_engine

    if engine == "torch" and precision == "auto":
        return art.model
    # the options as given (fp16 included), other settings at their defaults
    choice = EngineChoice.model_construct(engine=engine, precision=precision)
    prec = choice.precision_on(device)
    if engine != "torch":
        click.echo(f"engine {engine} ({prec}): exporting the model if not cached "
                   f"({choice.cache})", err=True)
    return create_engine(engine, art.model, art.manifest, device, prec, choice.cache,
                         on_damage=choice.engine_cache_damaged, warn=_warn_damaged)


def _warn_damaged(event: str, file: str = "", why: str = "", action: str = "", **_) -> None:
    click.echo(f"warning: engine cache {file}: {why}; {action}", err=True)


@click.command()
@click.argument("model_path", metavar="MODEL.rlr", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=_Registered(_format_names),
              required=True, help="Graph format.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write (replaced when it exists).")
@click.option("--batch", type=int, help="Fix the batch size (default: any batch).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32",
              show_default=True, help="openvino only: weights stored fp16, or bf16 compute.")
def export(model_path, fmt, out, batch, precision) -> None:
    """Export MODEL.rlr's inference graph (images -> score, map) with a copy of its manifest."""
    from rlr.artifact import load_artifact
    from rlr.engines import export_model

    art = load_artifact(model_path)
    click.echo(f"exporting {model_path} (sha256 {art.manifest['sha256'][:16]}) as {fmt} ...")
    graph = export_model(art.model, art.manifest, fmt, out, batch, precision)
    size = sum(p.stat().st_size for p in Path(out).iterdir()) / 1e6
    click.echo(f"wrote {graph} and {Path(out) / 'export.json'} ({size:.1f} MB)")


@click.group("engines", invoke_without_command=True)
@click.pass_context
def engines_group(ctx: click.Context) -> None:
    """Serving engines: alone, every registered engine and whether it runs here."""
    if ctx.invoked_subcommand is not None:
        return
    from rlr.device import resolve_device
    from rlr.engines import kinds

    dev = resolve_device("auto")
    click.echo(f"{'engine':<12} {'here':<5} {'precisions':<15} {'exports':<12} needs")
    for kind in kinds():
        here = "yes" if kind.runs_on(dev) else "no"
        needs = [f"pip install 'rlr[{kind.extra}]'"] if kind.extra else []
        needs += ["a CUDA device"] if kind.needs_cuda else []
        click.echo(f"{kind.name:<12} {here:<5} {','.join(kind.precisions):<15} "
                   f"{','.join(f.name for f in kind.formats) or '-':<12} "
                   f"{'; '.join(needs) or '-'}")


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
    from rlr.engines import available, create_engine, measure, write_bench_record

    dev = resolve_device(device)
    cache = Path(cache_dir) if cache_dir else default_engine_cache()
    art = load_artifact(model_path, device=dev)
    fps: dict[str, float] = {}
    for name in available(dev):
        try:
            engine = create_engine(name, art.model, art.manifest, dev, "fp32", cache, batch)
            fps[name] = measure(engine, batch, seconds)
        except Exception as exc:
            click.secho(f"{name:<12} cannot run this model: {exc}", fg="yellow")
            continue
        click.echo(f"{name:<12} {fps[name]:8.1f} frames/s  ({fps[name] / fps['torch']:.2f}x "
                   "torch)")
    path = write_bench_record(art.manifest, batch, fps, cache)
    best = max(fps, key=fps.get)
    click.echo(f"fastest: {best}; recorded in {path}")
