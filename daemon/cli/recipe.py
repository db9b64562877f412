"""`rlrctl recipe add|list|show|activate|history`: the products a line makes and which one it
makes now (`daemon.recipes`)."""

from __future__ import annotations

import json

import click

from daemon.cli.models import when
from daemon.cli.options import connect, redis_options, settings_from
from daemon.models.versions import who
from daemon.recipes.recipe import Activation, Recipe, load
from daemon.recipes.store import RecipeStore, registry_for

_by = click.option("--by", help="Who does it, kept in the history [default: user@host].")


def _store(redis_url: str | None, config_file: str | None) -> RecipeStore:
    return RecipeStore(connect(settings_from(config_file, redis_url)))


@click.group("recipe")
@redis_options
def recipe(redis_url, config_file) -> None:
    """Recipes (one per product): add, list, show, activate on a line, history of switches."""


@recipe.command("add")
@click.argument("path", type=click.Path(dir_okay=False))
@_by
@redis_options
def add(path, by, redis_url=None, config_file=None) -> None:
    """Add a recipe from a .toml or .json file (a changed file becomes a new revision)."""
    r = load(path)
    store = _store(redis_url, config_file)
    before = store.list()
    rev = store.add(r, by or who())
    known = any(row["name"] == r.name and row["revision"] == rev for row in before)
    click.echo(f"{'unchanged' if known else 'added'} {r.name}@{rev}: product {r.product}, "
               f"class {r.product_class}, model {r.model}, views {', '.join(r.view_names)}")


@recipe.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per recipe.")
@redis_options
def list_recipes(as_json, redis_url=None, config_file=None) -> None:
    """Every recipe's latest revision."""
    rows = _store(redis_url, config_file).list()
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo("no recipes yet; add one: rlrctl recipe add FILE.toml")
        return
    click.echo(f"{'name':<20} {'rev':>4} {'no.':>5} {'product':<16} {'class':<12} "
               f"{'model':<15} {'added':<16} {'by':<18} views")
    for row in rows:
        number = "-" if row["number"] is None else str(row["number"])
        click.echo(f"{row['name']:<20} {row['revision']:>4} {number:>5} {row['product']:<16} "
                   f"{row['class']:<12} {row['model']:<15} {when(row['ts']):<16} "
                   f"{row['by'][:18]:<18} {','.join(row['views'])}")


@recipe.command("show")
@click.argument("name")
@click.option("--revision", type=click.IntRange(min=1), help="This revision (default: latest).")
@click.option("--json", "as_json", is_flag=True, help="The recipe as JSON (its file format).")
@redis_options
def show(name, revision, as_json, redis_url=None, config_file=None) -> None:
    """Show a recipe: its fields, views and revisions."""
    store = _store(redis_url, config_file)
    r, rev = store.get(name, revision)
    if as_json:
        click.echo(json.dumps({**r.to_json(), "revision": rev}, indent=2))
        return
    for k, val in _fields(r, rev):
        click.echo(f"{k:<12} {val}")
    for v in r.views:
        thr = "" if v.threshold is None else f", threshold {v.threshold:g}"
        click.echo(f"  view {v.name:<12} camera {v.camera or '-'}{thr}")
    for e in store.revisions(name):
        click.echo(f"  r{e['revision']:<4} {when(e['ts'])}  {e['by']}")


def _fields(r: Recipe, rev: int) -> list[tuple[str, str]]:
    def opt(x, unit: str = "") -> str:
        return "-" if x is None else f"{x:g}{unit}"

    return [("recipe", f"{r.name}@{rev}"), ("number", opt(r.number)), ("product", r.product),
            ("class", r.product_class), ("model", r.model), ("threshold", opt(r.threshold)),
            ("deadline", opt(r.deadline_ms, " ms")), ("incomplete", r.incomplete),
            ("description", r.description or "-")]


@recipe.command("activate")
@click.argument("name", required=False)
@click.option("--line", required=True, help="Line to switch.")
@click.option("--number", type=click.IntRange(1, 65535), help="The recipe by its number (as "
              "a PLC selects it), instead of NAME.")
@_by
@redis_options
def activate(name, line, number, by, redis_url=None, config_file=None) -> None:
    """Make recipe NAME the line's recipe from now on: parts triggered after the switch are
    made under it. Refused (the old recipe stays) when the line's model cannot serve it."""
    if (name is None) == (number is None):
        raise click.UsageError("give the recipe's NAME or --number N (one of them)")
    store = _store(redis_url, config_file)
    name = name if number is None else store.by_number(number)
    before = store.active(line)
    act = store.activate(line, name, by=by or who(), via="cli",
                         registry=registry_for(store.r, line))
    if before is not None and before.since == act.since:
        click.echo(f"line {line}: {act.label} is already active (since {when(act.since)})")
        return
    click.echo(f"line {line}: {_describe(act)}")


def _describe(act: Activation) -> str:
    was = act.previous.label if act.previous is not None else "none"
    return (f"{act.label} active since {when(act.since)} (parts triggered from then on), "
            f"by {act.by} via {act.via}; was {was}")


@recipe.command("history")
@click.option("--line", required=True, help="Line whose switches to show.")
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(min=1),
              help="Entries, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry.")
@redis_options
def history(line, count, as_json, redis_url=None, config_file=None) -> None:
    """The line's active recipe and its switches, refused ones included, newest first."""
    store = _store(redis_url, config_file)
    rows = store.history(line, count)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    act = store.active(line)
    click.echo(f"line {line}: " + (_describe(act) if act else "no active recipe"))
    if not rows:
        click.echo("no switches yet: rlrctl recipe activate NAME --line " + line)
    for row in rows:
        label = row["name"] + (f"@{row['revision']}" if row["revision"] else "")
        colour = "red" if row["action"] == "refused" else None
        click.echo(f"{when(row['ts']):<16}  {click.style(row['action'], fg=colour):<9} "
                   f"{label:<24} {row['via']:<8} {row['by'][:24]:<24} {row['why']}")
