"""`rlrctl models`, `deploy`, `promote`, `rollback`, `undeploy`, `status`: the model registry
and per-line rollouts (`daemon.models`)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import click

from daemon.cli.options import connect, redis_options, settings_from
from daemon.models.registry import Registry
from daemon.models.rollout import Rollout
from daemon.models.versions import ModelVersion, who
from daemon.wire.settings import WireSettings


def _connect(redis_url: str | None, config_file: str | None) -> tuple[WireSettings, Registry]:
    settings = settings_from(config_file, redis_url)
    return settings, Registry(connect(settings))


def _when(ts: float | None) -> str:
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


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


# ---------------------------------------------------------------------- models


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
    _, reg = _connect(redis_url, config_file)
    versions, uses = reg.list(), _uses(reg)
    if as_json:
        for v in versions:
            click.echo(json.dumps({**v.to_json(), "key_metrics": key_metrics(v),
                                   "calibrated": v.calibrated, "lines": uses.get(v.id, [])}))
        return
    if not versions:
        click.echo("no model versions yet; register one: rlrctl models register MODEL.rlr")
        return
    click.echo(f"{'id':<15} {'created':<16} {'by':<18} {'classes':<20} {'preset':<7} "
               f"{'img AUROC':>9} {'val loss':>9} {'calib.':<7} {'size':>9}  lines")
    for v in versions:
        m = key_metrics(v)
        classes = ",".join(v.class_names)
        classes = classes if len(classes) <= 20 else classes[:19] + "…"
        click.echo(f"{v.id:<15} {_when(v.created_at):<16} {v.created_by[:18]:<18} "
                   f"{classes:<20} {v.preset or '-':<7} {_num(m['image_auroc'], '.4f'):>9} "
                   f"{_num(m['val_loss'], '.4f'):>9} {v.calibrated:<7} "
                   f"{_size(v.size_bytes):>9}  {' '.join(uses.get(v.id, [])) or '-'}")


@models.command("register")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--note", default="", help="Free text kept with the version.")
@click.option("--source-job", help="Training job that produced it.")
@redis_options
def register(path, note, source_job, redis_url=None, config_file=None) -> None:
    """Verify a model artifact and store it in Redis, where every worker can fetch it."""
    _, reg = _connect(redis_url, config_file)
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
    _, reg = _connect(redis_url, config_file)
    v = reg.resolve(version)
    used = [f"{line}:{alias}" for line, alias in reg.usage(v.id)]
    if as_json:
        click.echo(json.dumps({**v.to_json(), "lines": used}, indent=2))
        return
    rows = [("id", v.id), ("sha256", v.sha256), ("created", f"{_when(v.created_at)} by "
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
    _, reg = _connect(redis_url, config_file)
    v = reg.resolve(version)
    if not yes:
        click.confirm(f"delete {v.id} ({', '.join(v.class_names)}, {_when(v.created_at)})?",
                      abort=True)
    reg.delete(v.id)
    click.echo(f"deleted {v.id}")


# ---------------------------------------------------------------------- rollouts


def _describe(ro: Rollout) -> str:
    return (f"line {ro.line} (revision {ro.revision}): production {ro.production or '-'}"
            f" (previous {ro.previous or '-'}), canary {ro.describe_canary()}, "
            f"shadow {ro.shadow or '-'}")


def _resolve_model(reg: Registry, model: str, note: str) -> str:
    path = Path(model)
    if path.is_file():
        known = {v.id for v in reg.list()}
        v = reg.register_file(path, who(), note=note)
        click.echo(f"{'already registered' if v.id in known else 'registered'} {path} as {v.id}")
        return v.id
    if path.suffix in (".rlr", ".safetensors") or "/" in model:
        raise click.BadParameter(f"{model} does not exist; give a model version id "
                                 "(rlrctl models) or the path of a .rlr file", param_hint="MODEL")
    return reg.resolve(model).id


@click.command()
@click.argument("model")
@click.option("--line", required=True, help="Line to deploy on.")
@click.option("--canary", is_flag=True, help="Serve it to some cameras only (--cameras or "
              "--percent).")
@click.option("--cameras", help="Canary cameras, comma-separated.")
@click.option("--percent", type=float, help="Canary share of cameras (stable per camera id).")
@click.option("--shadow", is_flag=True, help="Score every frame with it too, into its "
              "own results stream; it never alerts.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@click.option("--note", default="", help="Note for a version registered from a file.")
@redis_options
def deploy(model, line, canary, cameras, percent, shadow, why, note, redis_url, config_file):
    """Deploy MODEL (a version id, or a .rlr file to register first) on a line.

    Default: it becomes the line's production model (the old one is kept for rollback).
    """
    if canary and shadow:
        raise click.UsageError("choose --canary or --shadow, not both")
    if (cameras or percent is not None) and not canary:
        raise click.UsageError("--cameras / --percent go with --canary")
    if canary and (not cameras) == (percent is None):
        raise click.UsageError("--canary needs --cameras a,b or --percent P (one of them)")
    _, reg = _connect(redis_url, config_file)
    vid = _resolve_model(reg, model, note)
    mode = "canary" if canary else "shadow" if shadow else "production"
    cams = [c for c in cameras.split(",")] if cameras else None
    ro = reg.deploy(line, vid, mode=mode, cameras=cams, percent=percent, by=who(), why=why)
    click.echo(f"{vid} deployed as {mode}; " + _describe(ro))


@click.command()
@click.option("--line", required=True, help="Line whose canary becomes production.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def promote(line, why, redis_url, config_file):
    """Make the line's canary its production model."""
    _, reg = _connect(redis_url, config_file)
    ro = reg.promote(line, by=who(), why=why)
    click.echo(f"promoted {ro.production}; " + _describe(ro))


@click.command()
@click.option("--line", required=True, help="Line to roll back.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def rollback(line, why, redis_url, config_file):
    """Put the previous production model back on the line."""
    _, reg = _connect(redis_url, config_file)
    ro = reg.rollback(line, by=who(), why=why)
    click.echo(f"rolled back to {ro.production}; " + _describe(ro))


@click.command()
@click.option("--line", required=True)
@click.option("--canary", "alias", flag_value="canary", help="End the canary.")
@click.option("--shadow", "alias", flag_value="shadow", help="End the shadow.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def undeploy(line, alias, why, redis_url, config_file):
    """End a line's canary or shadow (production changes with deploy or rollback)."""
    if alias is None:
        raise click.UsageError("say what to end: --canary or --shadow")
    _, reg = _connect(redis_url, config_file)
    ro = reg.clear(line, alias, by=who(), why=why)
    click.echo(f"{alias} ended; " + _describe(ro))


@click.command()
@click.option("--line", "lines", multiple=True, help="Line(s) to show (default: every line "
              "with a rollout or a worker).")
@click.option("--history", default=5, show_default=True, help="Rollout history entries.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@redis_options
def status(lines, history, as_json, redis_url, config_file):
    """Per line: deployed versions, queue, dead letters, workers, recent rollout changes."""
    from daemon.models.status import collect

    settings, reg = _connect(redis_url, config_file)
    report = collect(reg.r, reg, lines, settings.group, history)
    if as_json:
        click.echo(json.dumps({"lines": report}, indent=2))
        return
    if not report:
        click.echo("no lines yet: deploy a model (rlrctl deploy MODEL --line L) or start a "
                   "worker")
    for entry in report:
        _print_line(entry)


def _print_line(e: dict) -> None:
    ro = Rollout.from_json(e["rollout"])
    click.secho(f"line {e['line']}", bold=True, nl=False)
    if ro.corrupt:
        click.secho(f"  rollout record CORRUPT: {ro.corrupt}", fg="red")
        click.echo(f"  repair it: rlrctl deploy MODEL --line {e['line']} (or rollback); the "
                   "last readable state in the history is kept")
    click.echo(f"  revision {ro.revision}" + (f", changed {_when(ro.updated_at)} by "
                                              f"{ro.updated_by}" if ro.revision else ""))
    click.echo(f"  production   {ro.production or '-'}  (previous {ro.previous or '-'})")
    click.echo(f"  canary       {ro.describe_canary()}")
    click.echo(f"  shadow       {ro.shadow or '-'}")
    f = e["frames"]
    stats = ", ".join(f"{k}={v}" for k, v in sorted(e["stats"].items())) or "-"
    click.echo(f"  frames       length {f['length']}, lag {_num(f['lag'], 'd')}, pending "
               f"{_num(f['pending'], 'd')} (group {f['group']})")
    click.echo(f"  dead letters {e['dead_letters']}   counters {stats}")
    if not e["workers"]:
        click.echo("  workers      none alive")
    for w in e["workers"]:
        flag = "" if w["healthy"] else click.style(f"  ({w['why']})", fg="yellow")
        click.echo(f"  worker {w['worker']} @ {w['host']}: {w['status']}{flag}, models "
                   f"{','.join(w['models']) or '-'}, backlog {_num(w['backlog'], 'd')}, "
                   f"pending {_num(w['pending'], 'd')}, done {w['done']}, dead "
                   f"{w['dead_lettered']}, beat {w['age_s']}s ago")
        for vid, err in w["model_errors"].items():
            click.secho(f"    model {vid} failed: {err}", fg="red")
        if w["last_error"]:
            click.echo(f"    last error: {w['last_error']}")
    for h in e["history"]:
        why = f'  "{h["why"]}"' if h["why"] else ""
        click.echo(f"  r{h['revision']:<4} {_when(h['ts'])}  {h['by']:<20} {h['action']:<15} "
                   f"{h['version'] or '-'}{why}")
