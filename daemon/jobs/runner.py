"""What a trainer does for one job: check data, train, calibrate, evaluate, save, register,
deploy. The job record is updated along the way (phase, epoch, loss, ETA).

The runner knows its trainer only as a `TrainerHost` (a Protocol), so it does not import the
trainer that imports it.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any, Protocol

import redis

from daemon.errors import JobError
from daemon.jobs import queue as jobs
from daemon.jobs.spec import JobSpec
from daemon.models.registry import Registry
from daemon.wire import keys
from rlr.errors import RLRError


class TrainerHost(Protocol):
    """What a job needs from the trainer running it."""

    client: redis.Redis
    name: str
    device: str
    workdir: Path
    log: Any

    def check_in(self, job_id: str, stopping: bool = True) -> None:
        """Raise to stop the job (cancelled, taken away, or the trainer is stopping)."""

    def past_point_of_no_return(self) -> None:
        """From now on the job has effects outside the machine: finish it."""


def execute(trainer: TrainerHost, job_id: str) -> dict[str, Any]:
    """Run job `job_id` (already marked running by `trainer`); returns the fields of the
    succeeded record. Raises on failure, `JobCancelled` / `TrainerStopping` to stop."""
    from rlr.artifact import save_artifact
    from rlr.calibrate import calibrate_model, validation_normals
    from rlr.device import resolve_device
    from rlr.pipeline import train_on_checked

    client = trainer.client
    job = jobs.get_job(client, job_id)
    if job.spec is None:
        raise JobError(f"job {job_id} has no readable spec; resubmit it")
    spec = job.spec
    cfg = spec.validate().config()
    job_dir = trainer.workdir / "jobs" / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    say = _Reporter(trainer, job_id)

    say.phase("checking data", f"checking {spec.dataset} data at {spec.data or '(package)'}")
    dataset = _load_data(trainer, spec, cfg)
    dev = resolve_device(trainer.device)
    say.log(f"{len(dataset.train)} training images in {len(dataset.class_names)} classes "
            f"({', '.join(dataset.class_names)}); device {dev}")
    trainer.check_in(job_id)

    say.phase("features", "computing backbone features")
    trained = train_on_checked(
        cfg, dataset, device=str(dev), cache_dir=trainer.workdir / "cache",
        checkpoint=job_dir / "train.ckpt", resume=True, progress=False,
        on_epoch=say.epoch_callback(cfg))
    res = trained.result
    say.log(f"trained: best epoch {res.best_epoch}/{res.epochs_run}, validation loss "
            f"{res.best_val_loss:.4f}, {res.seconds:.0f} s")
    # Trained: a stop signal now lets the job finish (the rest takes seconds to minutes).
    trainer.check_in(job_id, stopping=False)

    say.phase("calibrating", f"calibrating thresholds at a false-alarm rate of {spec.far:g}")
    thresholds, metrics = None, {}
    normals = validation_normals(dataset, cfg.train.__dict__)
    if normals:
        cal = calibrate_model(trained.model, normals, spec.far, cfg.train.batch_size, dev)
        for w in cal.warnings:
            say.log(f"warning: {w}")
        thresholds, metrics = cal.thresholds, cal.manifest_fields()["metrics"]
    else:
        say.log("warning: no held-out normal images; the model is registered uncalibrated")
    if dataset.test:
        say.phase("evaluating", f"evaluating on {len(dataset.test)} test images")
        metrics["test"] = _evaluate(trained.model, dataset, cfg.train.batch_size, dev,
                                    thresholds)
    trainer.check_in(job_id, stopping=False)

    path = job_dir / "model.rlr"
    training = {**trained.training_summary(),
                "job": {"id": job_id, "submitted_by": job.submitted_by, "trainer": trainer.name,
                        "spec": spec.to_json()}}
    manifest = save_artifact(path, trained.model.cpu(), trained.class_names,
                             thresholds=thresholds, training=training, metrics=metrics)
    say.log(f"wrote {path} (sha256 {manifest['sha256'][:16]})")

    # From here on the job has effects outside this machine: no more cancelling.
    trainer.past_point_of_no_return()
    say.phase("registering", "registering the model version")
    registry = Registry(client)
    version = registry.register_file(path, created_by=job.submitted_by or trainer.name,
                                     source_job=job_id, note=f"job {job_id}: {spec.describe()}")
    out: dict[str, Any] = {"version": version.id, "artifact": str(path.resolve()),
                           "metrics": jobs.plain_json(_summary(res, metrics))}
    client.hset(keys.job(job_id), mapping={"version": version.id})
    say.log(f"registered version {version.id}")
    if spec.deploy_line:
        say.phase("deploying", f"deploying {version.id} as canary on {spec.deploy_line}")
        try:
            registry.deploy(spec.deploy_line, version.id, mode="canary",
                            cameras=list(spec.canary_cameras) if spec.canary_cameras else None,
                            percent=spec.canary_percent, by=job.submitted_by or trainer.name,
                            why=f"training job {job_id}")
        except Exception as exc:
            raise JobError(f"version {version.id} is registered, but deploying it as canary on "
                           f"{spec.deploy_line} failed: {exc}; deploy it by hand") from exc
        out["deployed"] = f"canary on {spec.deploy_line}"
        say.log(f"deployed {version.id} as canary on {spec.deploy_line}")
    return out


def _load_data(trainer: TrainerHost, spec: JobSpec, cfg):
    """Load and open every image before training: a bad path or file fails the job in
    seconds, with the trainer named (the path is the trainer machine's)."""
    from rlr.pipeline import load_training_data

    try:
        dataset = load_training_data(spec.run(), cfg, progress=False)
    except RLRError as exc:
        raise JobError(f"on trainer {trainer.name} ({socket.gethostname()}): {exc}") from None
    return dataset


def _evaluate(model, dataset, batch_size: int, dev, thresholds) -> dict[str, Any]:
    from rlr.evaluate import evaluate

    report = evaluate(model, dataset, batch_size, dev, progress=False, pixel=True,
                      thresholds=thresholds)
    return {"mean": report.mean, "per_class": report.per_class}


def _summary(res, metrics: dict[str, Any]) -> dict[str, Any]:
    """What `rlrctl jobs show` prints: the training outcome, calibration, test metrics."""
    out: dict[str, Any] = {"training": {
        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
        "best_val_loss": res.best_val_loss, "seconds": round(res.seconds, 1),
        "stopped_early": res.stopped_early, "out_of_time": res.out_of_time}}
    cal = metrics.get("calibration")
    if cal:
        out["calibration"] = {"far": cal["far"], "observed_far": cal["observed_far"]}
    test = (metrics.get("test") or {}).get("mean")
    if test:
        out["test"] = test
    return out


class _Reporter:
    """Writes a job's phase, progress and log lines to its record."""

    def __init__(self, trainer: TrainerHost, job_id: str) -> None:
        self.trainer, self.client, self.job_id = trainer, trainer.client, job_id
        self.log_ = trainer.log.bind(job=job_id)

    def log(self, text: str) -> None:
        jobs.log_line(self.client, self.job_id, text)

    def phase(self, name: str, text: str) -> None:
        self.client.hset(keys.job(self.job_id), "phase", name)
        self.log(text)
        self.log_.info("job_phase", phase=name)

    def epoch_callback(self, cfg):
        epochs, budget = cfg.train.epochs, cfg.train.max_seconds

        def on_epoch(record: dict[str, float]) -> None:
            epoch, spent = int(record["epoch"]), float(record["seconds"])
            eta = spent / epoch * (epochs - epoch)
            if budget:
                eta = min(eta, max(budget - spent, 0.0))
            loss, val = record["train_loss"], record.get("val_loss")
            self.client.hset(keys.job(self.job_id), mapping={
                "phase": "training", "epoch": epoch, "epochs": epochs, "loss": f"{loss:.6g}",
                "val_loss": "" if val is None or not math.isfinite(val) else f"{val:.6g}",
                "eta_s": f"{eta:.1f}"})
            self.log(f"epoch {epoch}/{epochs} loss {loss:.4f}"
                     + ("" if val is None else f" val {val:.4f}") + f" eta {eta:.0f} s")
            self.log_.info("job_epoch", epoch=epoch, epochs=epochs, loss=round(loss, 5),
                           val_loss=None if val is None else round(val, 5), eta_s=round(eta))
            self.trainer.check_in(self.job_id)  # raise to stop: cancel, stop signal, reaped

        return on_epoch
