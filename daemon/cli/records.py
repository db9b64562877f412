"""`rlrctl records migrate|parts|part|yield|recipes|export|prune` (read the records, apply
their retention) and `rlrctl recorder` (write them): the historian of every frame result, part
verdict and recipe switch."""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone

import click

from daemon import logs
from daemon.cli.options import connect, lines_value, redis_options, settings_from
from daemon.cli.settings import load_settings
from daemon.errors import RecordsError
from daemon.records import queries, schema
from daemon.records.settings import RecorderSettings
from daemon.records.store import Store

_url = click.option("--records-url", help="Records database [RLR_RECORDS_URL; unset: SQLite "
                    "under RLR_RECORDS_DIR].")
_json = click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")


def _settings(records_url: str | None) -> RecorderSettings:
    """The settings (environment, RLR_CONFIG) with `--records-url` over RLR_RECORDS_URL."""
    return load_settings(records_url=records_url or None)


def _reading(records_url: str | None) -> tuple[Store, RecorderSettings]:
    """The store to read, after checking its schema is the one this rlr reads."""
    settings = _settings(records_url)
    store = Store.open(settings)
    now, want = schema.current(store.engine), schema.head()
    if now is None:
        raise RecordsError(f"records database {store.shown_url} holds no records yet: start "
                           "`rlrctl recorder` (or run `rlrctl records migrate`)")
    if now != want:
        raise RecordsError(f"records database {store.shown_url} is at schema revision {now}, "
                           f"this rlr reads {want}: run `rlrctl records migrate`")
    return store, settings


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(rows) -> None:
    for row in rows:
        click.echo(json.dumps(row, default=str))


@click.group("records")
def records() -> None:
    """The records of every frame result, part verdict and recipe switch: migrate, parts,
    part, yield, recipes, export, prune."""


@records.command()
@_url
def migrate(records_url) -> None:
    """Create or upgrade the records database's schema."""
    store = Store.open(_settings(records_url))
    before, after = store.migrate()
    if before == after:
        click.echo(f"{store.shown_url}: schema {after}, up to date")
    else:
        click.echo(f"{store.shown_url}: schema {before or 'empty'} -> {after}")


@records.command("parts")
@click.option("--line", help="Only this line.")
@click.option("--since", help="8h, 7d, 2026-12-01T06:00 ... (default: all).")
@click.option("--verdict", type=click.Choice(queries.VERDICTS),
              help="Only this verdict (what the views said).")
@click.option("--outcome", type=click.Choice(queries.OUTCOMES),
              help="Only this outcome (what the reject gate did).")
@click.option("--limit", "-n", default=100, show_default=True, type=click.IntRange(min=1))
@_json
@_url
def parts_cmd(line, since, verdict, outcome, limit, as_json, records_url) -> None:
    """Part verdicts, newest first, and how many parts, rejects (by outcome: an incomplete
    part rejected counts) and incomplete parts match."""
    store, _ = _reading(records_url)
    since_ms = queries.parse_since(since)
    rows = queries.parts(store, line, since_ms, verdict, limit, outcome)
    if as_json:
        return _print_json(rows)
    click.echo(f"{'time (UTC)':19}  {'line':10} {'part':24} {'verdict':10} {'outcome':7} "
               f"{'recipe':12} {'total ms':>8}  missing")
    for r in rows:
        total = "-" if r["total_ms"] is None else f"{r['total_ms']:.0f}"
        click.echo(f"{_when(r['ts_ms']):19}  {r['line']:10} {r['part_id']:24} "
                   f"{r['verdict']:10} {r['outcome']:7} {r['recipe'] or '-':12} {total:>8}  "
                   f"{r['missing'] or '-'}")
    n = queries.part_counts(store, line, since_ms, verdict, outcome)
    click.echo(f"{n.parts} parts, {n.rejects} rejected (incomplete ones the gate rejected "
               f"included), {n.incomplete} incomplete")


@records.command("part")
@click.argument("part_id")
@click.option("--line", help="Only this line.")
@_json
@_url
def part_cmd(part_id, line, as_json, records_url) -> None:
    """Every instance of a part id, newest first (a PLC's counter that wraps around brings an
    id back), each with its views: score, model version, recipe, pictures' paths."""
    store, settings = _reading(records_url)
    found = queries.part(store, part_id, line)
    folder = settings.pictures_dir.resolve()
    frames = [f for v in found["verdicts"] for f in v["frames"]] + found["unjoined"]
    for f in frames:
        for kind in ("picture", "mask"):
            ref = f[f"{kind}_ref"]
            f[f"{kind}_path"] = None if ref is None else str(folder / ref)
    if as_json:
        return click.echo(json.dumps(found, default=str))
    if not frames and not found["verdicts"]:
        raise RecordsError(f"no part {part_id!r} in {store.shown_url}")
    for v in found["verdicts"]:
        missing = f", missing {v['missing']}" if v["missing"] else ""
        click.echo(f"part {v['part_id']} on {v['line']} first seen {_when(v['first_ts_ms'])}: "
                   f"{v['verdict']}, {v['outcome']} at {_when(v['ts_ms'])} (recipe "
                   f"{v['recipe'] or '-'}, product {v['product'] or '-'}{missing})")
        _print_frames(v["frames"])
    if found["unjoined"]:
        click.echo(f"frames of {part_id} without a recorded verdict:")
        _print_frames(found["unjoined"])


def _print_frames(frames: list[dict]) -> None:
    for f in frames:
        threshold = "-" if f["threshold"] is None else f"{f['threshold']:.4g}"
        click.echo(f"  {f['view'] or '-':10} {f['camera']:10} frame {f['frame_id']:16} "
                   f"{_when(f['ts_ms'])}  score {f['score']:.4g} / {threshold} "
                   f"{'ANOMALY' if f['is_anomaly'] else 'ok':7} model {f['model_version']} "
                   f"picture {f['picture_path'] or '-'} mask {f['mask_path'] or '-'}")


@records.command("recipes")
@click.option("--line", help="Only this line.")
@click.option("--since", default="7d", show_default=True, help="8h, 7d, 2026-12-01 ...")
@click.option("--limit", "-n", default=1000, show_default=True, type=click.IntRange(min=1))
@_json
@_url
def recipes_cmd(line, since, limit, as_json, records_url) -> None:
    """Recipe switches and refused switches, newest first: who, when, through what, why."""
    store, _ = _reading(records_url)
    rows = queries.recipes(store, line, queries.parse_since(since), limit)
    if as_json:
        return _print_json(rows)
    click.echo(f"{'time (UTC)':19}  {'line':10} {'action':9} {'recipe':20} {'by':12} "
               f"{'via':8} why")
    for r in rows:
        label = r["name"] if r["revision"] is None else f"{r['name']}@{r['revision']}"
        click.echo(f"{_when(r['ts_ms']):19}  {r['line']:10} {r['action']:9} {label:20} "
                   f"{r['by'] or '-':12} {r['via'] or '-':8} {r['why'] or ''}")


@records.command("yield")
@click.option("--by", type=click.Choice(queries.BUCKETS), default="hour", show_default=True)
@click.option("--line", help="Only this line.")
@click.option("--since", default="7d", show_default=True, help="8h, 7d, 2026-12-01 ...")
@click.option("--frames", "of_frames", is_flag=True,
              help="Count frame results instead of part verdicts.")
@_json
@_url
def yield_cmd(by, line, since, of_frames, as_json, records_url) -> None:
    """Parts, rejects, incomplete parts and the reject rate per hour, shift or day."""
    store, settings = _reading(records_url)
    rows = queries.yield_by(store, line, by, queries.parse_since(since),
                            "frames" if of_frames else "parts", settings)
    if as_json:
        return _print_json({**r._asdict(), "reject_rate": r.reject_rate} for r in rows)
    what = "frames" if of_frames else "parts"
    click.echo(f"{by + ' from (UTC)':19}  {'line':10} {what:>8} {'rejects':>8} "
               f"{'incompl.':>8} {'rate':>7}")
    for r in rows:
        click.echo(f"{_when(r.start_ms):19}  {r.line:10} {r.parts:8} {r.rejects:8} "
                   f"{r.incomplete:8} {r.reject_rate:7.2%}")


@records.command("export")
@click.option("--since", help="8h, 30d, 2026-11-01 ... (default: everything).")
@click.option("--format", "fmt", type=click.Choice(queries.FORMATS), default="csv",
              show_default=True)
@click.option("--what", type=click.Choice(("frames", "parts", "recipes")), default="frames",
              show_default=True)
@click.option("--line", help="Only this line.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), required=True)
@_url
def export_cmd(since, fmt, what, line, output, records_url) -> None:
    """Write the records to a CSV or Parquet file (Parquet needs pyarrow)."""
    store, _ = _reading(records_url)
    n = queries.export(store, output, queries.parse_since(since), fmt, what, line)
    click.echo(f"{n} {what} rows -> {output}")


@records.command("prune")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@_url
def prune_cmd(dry_run, records_url) -> None:
    """Apply the retention once: rows older than RLR_RECORDS_DAYS or beyond RLR_RECORDS_MAX_GB
    (oldest first) go with their pictures; rollups older than RLR_RECORDS_ROLLUP_DAYS."""
    from daemon.records.pictures import Pictures
    from daemon.records.retention import prune

    store, settings = _reading(records_url)
    r = prune(store, Pictures(settings.pictures_dir), settings, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    before = "nothing had to go" if r.cutoff_ms is None else f"rows before {_when(r.cutoff_ms)}"
    click.echo(f"{store.shown_url}: {verb} {r.frames} frame rows, {r.parts} part rows, "
               f"{r.pictures} pictures ({r.freed_bytes / 1e6:.1f} MB), {r.rollup_rows} rollup "
               f"rows ({before} UTC)")


@click.command()
@click.option("--line", "lines", multiple=True, help="Line to record (repeatable; default "
              "RLR_LINES).")
@click.option("--migrate", "migrate_", is_flag=True, default=None,
              help="Upgrade an old schema at start instead of refusing [RLR_RECORDS_MIGRATE].")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Prometheus port, 0 = off [RLR_RECORDER_METRICS_PORT].")
@_url
@redis_options
def recorder(lines, migrate_, metrics_port, records_url, redis_url, config_file) -> None:
    """Write every result and part verdict of the lines to the records database.

    An empty database is created; one at an older schema is refused (one line: run `rlrctl
    records migrate`) unless --migrate is given."""
    from daemon.records.metrics import RecorderMetrics
    from daemon.records.recorder import Recorder

    settings = settings_from(config_file, redis_url, lines=lines_value(lines),
                             records_url=records_url or None, records_migrate=migrate_ or None,
                             recorder_metrics_port=metrics_port)

    logs.configure(settings.log_format, settings.log_level, recorder=settings.recorder_consumer)
    log = logs.get("daemon.records")
    store = Store.open(settings)
    revision = store.require_schema(settings.records_migrate)
    rec = Recorder(connect(settings), store, settings.lines, settings)
    # a taken port fails now, before anything is read
    RecorderMetrics(rec).serve(settings.recorder_metrics_port, settings.recorder_metrics_host)
    if settings.recorder_metrics_port:
        log.info("metrics_serving", port=settings.recorder_metrics_port)

    def on_signal(signum, frame) -> None:
        if rec.stop.is_set():  # second signal: leave the batch in flight pending
            sys.exit(1)
        log.info("recorder_stopping", signal=signal.Signals(signum).name)
        rec.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("recorder_started", database=store.shown_url, schema=revision,
             lines=settings.lines, group=settings.records_group)
    try:
        rec.run()
    finally:
        store.close()
        log.info("recorder_stopped", **rec.stats.__dict__)
