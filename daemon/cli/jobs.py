"""`rlrctl trainer` (run training jobs), `rlrctl jobs ...` (watch and manage them) and the
`rlrctl train --submit` path."""

from __future__ import annotations

import json
import signal
import sys

import click
import redis
from click.core import ParameterSource

from daemon import logs
from daemon.cli.options import connect, redis_options, settings_from
from daemon.jobs import queue as jobs
from daemon.jobs.settings import TrainerSettings
from daemon.jobs.spec import JobSpec
from daemon.models.versions import who
from daemon.wire import keys

# Options of `rlrctl train` that only mean something on this machine.
_LOCAL_ONLY = ("out", "cache_dir", "checkpoint", "resume", "device")


def _split(values) -> tuple[str, ...] | None:
    if values is None:
        return None
    items = values if isinstance(values, (list, tuple)) else [values]
    out = tuple(c.strip() for item in items for c in item.split(",") if c.strip())
    return out or None


# ----------------------------------------------------------------------------- train --submit


def submit_training(ctx: click.Context) -> None:
    """`rlrctl train --submit`: build a JobSpec from train's options, queue it, print its id."""
    p = ctx.params
    local = [f"--{name.replace('_', '-')}" for name in _LOCAL_ONLY
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)]
    if local:
        raise click.UsageError(f"{', '.join(local)}: not with --submit; the trainer decides "
                               "where artifacts, checkpoints and caches go and which device "
                               "trains (rlrctl trainer --workdir / --device), and registers "
                               "the model (rlrctl models)")
    spec = JobSpec(
        data=p["data_root"], dataset=p["kind"], classes=_split(p["classes"]),
        preset=p["preset_name"], epochs=p["epochs"], max_minutes=p["max_minutes"],
        batch_size=p["batch_size"], lr=p["lr"], image_size=p["image_size"],
        backbone_weights=p["backbone_weights"], seed=p["seed"],
        far=0.005 if p["far"] is None else p["far"], deploy_line=p["deploy_line"],
        canary_cameras=_split(p["canary_cameras"]), canary_percent=p["canary_percent"])
    spec.validate()
    settings = settings_from(p["config_file"], p["redis_url"])
    client = connect(settings)
    job_id = jobs.submit(client, spec, who())
    click.echo(job_id)
    if not p["quiet"]:
        click.echo(f"queued: {spec.describe()}", err=True)
        click.echo(f"follow it with: rlrctl jobs logs {job_id} --follow", err=True)
        if not jobs.trainers(client):
            click.secho("warning: no trainer is running; the job waits until `rlrctl trainer` "
                        "starts on a training machine", fg="yellow", err=True)


# ----------------------------------------------------------------------------- trainer


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Artifacts, checkpoints and feature cache [RLR_TRAINER_WORKDIR].")
@click.option("--device", help="auto, cpu, cuda, cuda:N [RLR_DEVICE].")
@click.option("--name", "consumer", help="Trainer name [RLR_CONSUMER, default host-pid].")
@click.option("--once", is_flag=True, help="Exit when no job is waiting (cron, CI).")
@redis_options
def trainer(workdir, device, consumer, once, redis_url, config_file) -> None:
    """Run training jobs from the queue, one at a time, until SIGTERM / Ctrl-C.

    Run one per training machine. The first SIGTERM finishes the current epoch and puts the
    job back on the queue (a trainer restarted with the same --workdir resumes it from its
    checkpoint); a second one stops at once, requeueing the same way.
    """
    from daemon.jobs.trainer import Trainer

    settings = settings_from(config_file, redis_url, trainer_workdir=workdir, device=device,
                             consumer=consumer)
    logs.configure(settings.log_format, settings.log_level, trainer=settings.consumer_name)
    client = connect(settings)
    t = Trainer(client, settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: t.stop())
    t.run(until_idle=once)


# ----------------------------------------------------------------------------- jobs


def _settings_client(config_file, redis_url) -> tuple[TrainerSettings, redis.Redis]:
    settings = settings_from(config_file, redis_url)
    return settings, connect(settings)


@click.group("jobs", invoke_without_command=True)
@click.pass_context
def jobs_group(ctx) -> None:
    """Training jobs: list (default), show, logs, cancel, retry."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@jobs_group.command("list")
@click.option("--limit", "-n", default=20, show_default=True, help="How many jobs to show.")
@click.option("--state", "states", multiple=True, type=click.Choice(jobs.STATES),
              help="Only jobs in this state (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per job.")
@redis_options
def list_cmd(limit=20, states=(), as_json=False, redis_url=None, config_file=None) -> None:
    """The newest jobs, newest first (stale running jobs are marked failed first)."""
    settings, client = _settings_client(config_file, redis_url)
    jobs.reap_stale(client, settings.job_timeout_s, reaper="rlrctl jobs list")
    found = jobs.list_jobs(client, limit, states or None)
    if as_json:
        for job in found:
            click.echo(json.dumps(_as_dict(job)))
        return
    if not found:
        click.echo("no jobs; submit one with: rlrctl train --submit --data DIR ...")
    else:
        click.echo(f"{'job':<25} {'state':<10} {'progress':<28} {'by':<12} {'submitted':<19} "
                   "outcome")
        for job in found:
            click.echo(f"{job.id:<25} {job.state:<10} {_progress(job):<28} "
                       f"{job.submitted_by[:12]:<12} {jobs.when(job.submitted_at):<19} "
                       f"{_outcome(job)}")
    alive = jobs.trainers(client)
    if alive:
        click.echo("trainers: " + ", ".join(
            f"{t['name']} ({'running ' + t['job'] if t.get('job') else 'idle'})" for t in alive))
    elif any(j.state == "queued" for j in found):
        click.secho("no trainer is running: queued jobs wait until `rlrctl trainer` starts",
                    fg="yellow")


@jobs_group.command("show")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@redis_options
def show(job_id, as_json, redis_url, config_file) -> None:
    """Everything about one job: spec, progress, heartbeat, outcome, metrics."""
    settings, client = _settings_client(config_file, redis_url)
    jobs.reap_stale(client, settings.job_timeout_s, reaper="rlrctl jobs show")
    job = jobs.get_job(client, job_id)
    if as_json:
        click.echo(json.dumps(_as_dict(job), indent=2))
        return
    rows = [("job", job.id), ("state", job.state), ("phase", job.phase or "-"),
            ("spec", job.spec.describe() if job.spec else job.raw.get("spec", "-")),
            ("submitted", f"{jobs.when(job.submitted_at)} by {job.submitted_by or '?'}"),
            ("trainer", job.trainer or "-"), ("started", jobs.when(job.started_at)),
            ("heartbeat", jobs.when(job.heartbeat_at)), ("finished", jobs.when(job.finished_at)),
            ("progress", _progress(job))]
    if job.requeues:
        rows.append(("requeued", f"{job.requeues} time(s)"))
    if job.cancel_requested and not job.finished:
        rows.append(("cancel", f"requested by {job.cancel_requested}"))
    rows += [("version", job.version or "-"), ("deployed", job.deployed or "-")]
    if job.error:
        rows.append(("error", job.error))
    rows += _metric_rows(job.metrics)
    for k, v in rows:
        click.echo(f"{k:<12} {v}")


@jobs_group.command("logs")
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job finishes.")
@redis_options
def logs_cmd(job_id, follow, redis_url, config_file) -> None:
    """A job's log lines (data checks, epochs, calibration, registration, errors)."""
    settings, client = _settings_client(config_file, redis_url)
    jobs.get_job(client, job_id)  # a clear error for an unknown id
    last = "0"
    try:
        while True:
            reply = client.xread({keys.job_log(job_id): last}, count=500,
                                 block=settings.block_ms if follow else None)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    click.echo(fields.get(b"line", b"").decode(errors="replace"))
            if not follow:
                if not reply:
                    break
                continue
            if not reply:
                jobs.reap_stale(client, settings.job_timeout_s, reaper="rlrctl jobs logs")
                job = jobs.get_job(client, job_id)
                if job.finished and not client.xread({keys.job_log(job_id): last}, count=1):
                    break
    except KeyboardInterrupt:
        pass
    sys.stdout.flush()


@jobs_group.command("cancel")
@click.argument("job_id")
@redis_options
def cancel(job_id, redis_url, config_file) -> None:
    """Cancel a queued job, or stop a running one after its current epoch."""
    _, client = _settings_client(config_file, redis_url)
    outcome = jobs.cancel(client, job_id, who())
    if outcome == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: cancel requested; its trainer stops after the current epoch "
                   f"(rlrctl jobs show {job_id})")


@jobs_group.command("retry")
@click.argument("job_id")
@redis_options
def retry(job_id, redis_url, config_file) -> None:
    """Submit a failed or cancelled job's spec again as a new job; prints the new id."""
    _, client = _settings_client(config_file, redis_url)
    click.echo(jobs.resubmit(client, job_id, who()))


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = []
    t = metrics.get("training")
    if t:
        rows.append(("training", f"best epoch {t['best_epoch']}/{t['epochs_run']}, validation "
                     f"loss {t['best_val_loss']:.4f}, {_duration(t['seconds'])}"
                     + (" (stopped early)" if t.get("stopped_early") else "")
                     + (" (time budget reached)" if t.get("out_of_time") else "")))
    cal = metrics.get("calibration")
    if cal:
        observed = ", ".join(f"{k} {v:.1%}" for k, v in cal["observed_far"].items())
        rows.append(("calibrated", f"false-alarm rate {cal['far']:g} (on held-out normals: "
                     f"{observed})"))
    test = metrics.get("test")
    if test:
        rows.append(("test", "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}"
                                       for k, v in test.items())))
    return rows


def _progress(job: jobs.Job) -> str:
    if job.state == "queued":
        return "waiting" + (f" (requeued {job.requeues}x)" if job.requeues else "")
    if job.epoch is None:
        return job.phase or "-"
    text = f"{job.epoch}/{job.epochs or '?'} loss {job.loss:.4g}" if job.loss is not None else \
        f"{job.epoch}/{job.epochs or '?'}"
    if job.state == "running":
        if job.phase != "training":
            return f"{job.phase} (after {job.epoch} epochs)"
        if job.eta_s is not None:
            text += f" eta {_duration(job.eta_s)}"
    return text


def _outcome(job: jobs.Job) -> str:
    if job.version:
        return job.version + (f" ({job.deployed})" if job.deployed else "")
    if job.error:
        return job.error if len(job.error) <= 60 else job.error[:57] + "..."
    if job.cancel_requested and not job.finished:
        return f"cancel requested by {job.cancel_requested}"
    if job.state == "running":
        return f"on {job.trainer}"
    return ""


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds}s"
    if seconds < 5400:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _as_dict(job: jobs.Job) -> dict:
    d = {k: v for k, v in job.__dict__.items() if k not in ("raw", "spec")}
    d["spec"] = json.loads(job.spec.to_json()) if job.spec else None
    return d
