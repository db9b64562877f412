"""`rlrctl status`: per line, the deployed versions, the frame queue, dead letters, workers and
recent rollout changes."""

from __future__ import annotations

import json

import click

from daemon.cli.models import num, open_registry, when
from daemon.cli.options import redis_options
from daemon.models.rollout import Rollout


@click.command()
@click.option("--line", "lines", multiple=True, help="Line(s) to show (default: every line "
              "with a rollout or a worker).")
@click.option("--history", default=5, show_default=True, help="Rollout history entries.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@redis_options
def status(lines, history, as_json, redis_url, config_file):
    """Per line: deployed versions, queue, dead letters, workers, recent rollout changes."""
    from daemon.models.status import collect

    settings, reg = open_registry(redis_url, config_file)
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
    click.echo(f"  revision {ro.revision}" + (f", changed {when(ro.updated_at)} by "
                                              f"{ro.updated_by}" if ro.revision else ""))
    click.echo(f"  production   {ro.production or '-'}  (previous {ro.previous or '-'})")
    click.echo(f"  canary       {ro.describe_canary()}")
    click.echo(f"  shadow       {ro.shadow or '-'}")
    f = e["frames"]
    stats = ", ".join(f"{k}={v}" for k, v in sorted(e["stats"].items())) or "-"
    click.echo(f"  frames       length {f['length']}, lag {num(f['lag'], 'd')}, pending "
               f"{num(f['pending'], 'd')} (group {f['group']})")
    click.echo(f"  dead letters {e['dead_letters']}   counters {stats}")
    if not e["workers"]:
        click.echo("  workers      none alive")
    for w in e["workers"]:
        flag = "" if w["healthy"] else click.style(f"  ({w['why']})", fg="yellow")
        click.echo(f"  worker {w['worker']} @ {w['host']}: {w['status']}{flag}, models "
                   f"{','.join(w['models']) or '-'}, backlog {num(w['backlog'], 'd')}, "
                   f"pending {num(w['pending'], 'd')}, done {w['done']}, dead "
                   f"{w['dead_lettered']}, beat {w['age_s']}s ago")
        for vid, err in w["model_errors"].items():
            click.secho(f"    model {vid} failed: {err}", fg="red")
        if w["last_error"]:
            click.echo(f"    last error: {w['last_error']}")
    for h in e["history"]:
        why = f'  "{h["why"]}"' if h["why"] else ""
        click.echo(f"  r{h['revision']:<4} {when(h['ts'])}  {h['by']:<20} {h['action']:<15} "
                   f"{h['version'] or '-'}{why}")
