"""`rlrctl models`: the registered model versions (`daemon.models`): list, register, show,
delete. `open_registry`, `when` and `num` serve the rollout and status commands too."""

from __future__ import annotations

import datetime
import json

import click

from daemon.cli.options import connect, redis_options, settings_from
from daemon.models.registry import Registry
from daemon.models.versions import ModelVersion, who
from daemon.wire.settings import WireSettings


def open_registry(redis_url: str | None, config_file: str | None) -> tuple[WireSettings, Registry]:
    """The settings and the model registry of `--redis-url` / `--config`."""
    settings = settings_from(config_file, redis_url)
    return settings, Registry(connect(settings))


def when(ts: float | None) -> str:
    """A timestamp as people read it, or '-'."""
    if not ts:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


def _find(d, key: str, depth: int = 3):
    """The first number under `key` in nested dicts, preferring a "mean" sub-dict."""
    if not isinstance(d, dict) or depth < 0:
        return None
    if isinstance(d.get(key), (int, float)) and not isinstance(d.get(key), bool):
        return d[key]
    for k in sorted(d, key=lambda k: (k != "mean", str(k))):
        found = _find(d[k], key, depth - 1)
        if found is not None:
            return found
    return None


def key_metrics(v: ModelVersion) -> dict:
    """Image AUROC (when an evaluation stored it) and the best validation loss."""
    auroc = _find(v.metrics, "image_auroc")
    if auroc is None:
        auroc = _find(v.metrics, "mean_image_auroc")
    return {"image_auroc": auroc, "val_loss": v.training.get("best_val_loss")}


def _uses(registry: Registry) -> dict[str, list[str]]:
    uses: dict[str, list[str]] = {}
    for line, ro in registry.rollouts().items():
        for alias in ("production", "canary", "shadow"):
            vid = getattr(ro, alias)
            if vid is not None:
                uses.setdefault(vid, []).append(f"{line}:{alias}")
    return uses


def num(x, fmt: str) -> str:
    """A number in `fmt`, or '-' when there is none."""
    return "-" if x is None else format(x, fmt)


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@redis_options
@click.pass_context
def models(ctx, as_json, redis_url, config_file) -> None:
    """Registered model versions; without a subcommand, list them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_models, as_json=as_json)


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per version.")
@redis_options
def list_models(as_json, redis_url=None, config_file=None) -> None:
    """List model versions, newest first, with their metrics and where they are deployed."""
    _, reg = open_registry(redis_url, config_file)
    versions, uses = reg.list(), _uses(reg)
    if as_json:
        for v in versions:
            if v.corrupt:
                click.echo(json.dumps({"id": v.id, "corrupt": v.corrupt}))
                continue
            click.echo(json.dumps({**v.to_json(), "key_metrics": key_metrics(v),
                                   "calibrated": v.calibrated, "lines": uses.get(v.id, [])}))
        return
    if not versions:
        click.echo("no model versions yet; register one: rlrctl models register MODEL.rlr")
        return
    click.echo(f"{'id':<15} {'created':<16} {'by':<18} {'classes':<20} {'preset':<7} "
               f"{'img AUROC':>9} {'val loss':>9} {'calib.':<7} {'size':>9}  lines")
    for v in versions:
        if v.corrupt:
            click.secho(f"{v.id:<15} CORRUPT record: {v.corrupt} (register its .rlr file again, "
                        f"or rlrctl models delete {v.id})", fg="red")
            continue
        m = key_metrics(v)
        classes = ",".join(v.class_names)
        classes = classes if len(classes) <= 20 else classes[:19] + "…"
        click.echo(f"{v.id:<15} {when(v.created_at):<16} {v.created_by[:18]:<18} "
                   f"{classes:<20} {v.preset or '-':<7} {num(m['image_auroc'], '.4f'):>9} "
                   f"{num(m['val_loss'], '.4f'):>9} {v.calibrated:<7} "
                   f"{_size(v.size_bytes):>9}  {' '.join(uses.get(v.id, [])) or '-'}")


@models.command("register")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--note", default="", help="Free text kept with the version.")
@click.option("--source-job", help="Training job that produced it.")
@redis_options
def register(path, note, source_job, redis_url=None, config_file=None) -> None:
    """Verify a model artifact and store it in Redis, where every worker can fetch it."""
    _, reg = open_registry(redis_url, config_file)
    known = {v.id for v in reg.list()}
    v = reg.register_file(path, who(), source_job=source_job, note=note)
    click.echo(f"{'already registered' if v.id in known else 'registered'} {v.id} "
               f"({_size(v.size_bytes)}, classes {', '.join(v.class_names)})")


@models.command("show")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@redis_options
def show(version, as_json, redis_url=None, config_file=None) -> None:
    """Show one model version: provenance, thresholds, metrics, where it is deployed."""
    _, reg = open_registry(redis_url, config_file)
    v = reg.resolve(version)
    used = [f"{line}:{alias}" for line, alias in reg.usage(v.id)]
    if v.corrupt:
        click.echo(json.dumps({"id": v.id, "corrupt": v.corrupt, "lines": used}) if as_json
                   else f"{v.id} CORRUPT record: {v.corrupt} (used by {', '.join(used) or '-'})")
        return
    if as_json:
        click.echo(json.dumps({**v.to_json(), "lines": used}, indent=2))
        return
    rows = [("id", v.id), ("sha256", v.sha256), ("created", f"{when(v.created_at)} by "
                                                             f"{v.created_by}"),
            ("source job", v.source_job or "-"), ("note", v.note or "-"),
            ("backbone", f"{v.backbone or '-'} @ {v.image_size or '?'} px, preset "
                         f"{v.preset or '-'}"),
            ("classes", ", ".join(v.class_names) or "-"), ("size", _size(v.size_bytes)),
            ("calibrated", v.calibrated), ("thresholds", json.dumps(v.thresholds)),
            ("metrics", json.dumps(v.metrics) if v.metrics else "-"),
            ("training", json.dumps(v.training) if v.training else "-"),
            ("used by", ", ".join(used) or "-")]
    for k, val in rows:
        click.echo(f"{k:<11} {val}")


@models.command("delete")
@click.argument("version")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@redis_options
def delete(version, yes, redis_url=None, config_file=None) -> None:
    """Delete a model version no line uses (nor keeps for rollback)."""
    _, reg = open_registry(redis_url, config_file)
    v = reg.resolve(version)
    if not yes:
        click.confirm(f"delete {v.id} ({', '.join(v.class_names)}, {when(v.created_at)})?",
                      abort=True)
    reg.delete(v.id)
    click.echo(f"deleted {v.id}")
