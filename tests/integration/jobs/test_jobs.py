"""Training jobs end to end: `rlrctl train --submit` on one side, a real `rlrctl trainer`
process on the other, the job record and the registry in between.

The trainer is started once for the module (torch takes a while to import); the tests that
need none (the `jobs list` reaper) come first, the one that stops it (SIGTERM) last.
"""

from __future__ import annotations

import contextlib
import json
import signal
import uuid

import pytest
import redis
from click.testing import CliRunner

from daemon.cli import main
from daemon.jobs import queue as jobs
from daemon.models.registry import Registry, RegistryError
from daemon.wire import keys
from rlr.artifact import update_manifest_bytes
from tests.integration.procs import Proc, daemon_env, wait_for

BY = "tester@ci"
TIMEOUT_S = 10  # RLR_JOB_TIMEOUT_S of the test trainers


@pytest.fixture
def job_ids(rclient):
    """Ids of the jobs a test created; their records, logs, stream entries and registered
    versions are removed afterwards (the job queue is global)."""
    ids: list[str] = []
    yield ids
    reg = Registry(rclient)
    for job_id in ids:
        with contextlib.suppress(jobs.JobError):
            jobs.cancel(rclient, job_id, BY)
        version = rclient.hget(keys.job(job_id), "version")
        if version:
            for line, _ in reg.usage(version.decode()):
                rclient.delete(keys.alias(line), keys.rollouts(line))
            with contextlib.suppress(RegistryError):
                reg.delete(version.decode())
        rclient.delete(keys.job(job_id), keys.job_log(job_id))
        rclient.zrem(keys.JOB_INDEX, job_id)
        rclient.srem(keys.JOBS_ACTIVE, job_id)
    mine = {i.encode() for i in ids}
    stale = [eid for eid, f in rclient.xrange(keys.JOBS) if f.get(b"job_id") in mine]
    if stale:
        rclient.xack(keys.JOBS, keys.JOBS_GROUP, *stale)
        rclient.xdel(keys.JOBS, *stale)


@pytest.fixture
def versions(rclient, line):
    """Versions a test registered itself; deleted after the test line's rollout is."""
    ids: list[str] = []
    yield ids
    rclient.delete(keys.alias(line), keys.rollouts(line))
    for vid in ids:
        with contextlib.suppress(RegistryError):
            Registry(rclient).delete(vid)


def _start_trainer(redis_url: str, tmp, name: str, workdir) -> Proc:
    env = daemon_env(redis_url, "jobs", job_timeout_s=TIMEOUT_S, device="cpu")
    return Proc(["trainer", "--workdir", str(workdir), "--name", name], env,
                tmp / f"{name}.log")


@pytest.fixture(scope="module")
def trainer(redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainer")
    name = f"trainer-{uuid.uuid4().hex[:6]}"
    proc = _start_trainer(redis_url, tmp, name, tmp / "work")
    client = redis.Redis.from_url(redis_url)
    wait_for(lambda: client.exists(keys.trainer(name)), 120, "trainer presence", (proc,))
    proc.name, proc.workdir = name, tmp / "work"
    yield proc
    proc.stop()
    client.close()


def _submit(redis_url: str, *args: str) -> str:
    res = CliRunner().invoke(main, ["train", "--submit", "--preset", "tiny", "--quiet", *args],
                             env={"RLR_REDIS_URL": redis_url})
    assert res.exit_code == 0, res.output
    job_id = res.stdout.strip()
    assert job_id.startswith("j"), res.output
    return job_id


def _job(client, job_id: str) -> jobs.Job:
    return jobs.get_job(client, job_id)


def _cli(redis_url: str, *args: str):
    res = CliRunner().invoke(main, list(args), env={"RLR_REDIS_URL": redis_url,
                                                    "RLR_JOB_TIMEOUT_S": str(TIMEOUT_S)})
    assert res.exit_code == 0, res.output
    return res.stdout


def _fake_running(client, job_ids: list[str], trainer: str, silent_s: float) -> str:
    """A running job whose trainer's last heartbeat was `silent_s` ago."""
    job_id = jobs.new_job_id()
    job_ids.append(job_id)
    now = jobs.server_now(client)
    spec = jobs.JobSpec(data="/data/x", preset="tiny")
    client.hset(keys.job(job_id), mapping={
        "state": "running", "spec": spec.to_json(), "submitted_by": BY,
        "submitted_at": now - silent_s - 60, "trainer": trainer, "phase": "training",
        "started_at": now - silent_s - 30, "heartbeat_at": f"{now - silent_s:.3f}"})
    client.zadd(keys.JOB_INDEX, {job_id: now})
    client.sadd(keys.JOBS_ACTIVE, job_id)
    return job_id


# ----------------------------------------------------------------------------- no trainer


def test_jobs_list_reaps_a_running_job_whose_trainer_went_silent(redis_url, rclient, job_ids):
    dead = _fake_running(rclient, job_ids, "ghost-trainer", silent_s=3600)
    alive = _fake_running(rclient, job_ids, "busy-trainer", silent_s=1)
    out = _cli(redis_url, "jobs", "list", "-n", "200")
    row = next(line for line in out.splitlines() if line.startswith(dead))
    assert "failed" in row
    job = _job(rclient, dead)
    assert job.state == "failed" and job.finished_at is not None
    assert "trainer ghost-trainer stopped heartbeating at" in job.error
    assert f"rlrctl jobs retry {dead}" in job.error
    assert _job(rclient, alive).state == "running"  # a fresh heartbeat is left alone
    assert rclient.sismember(keys.JOBS_ACTIVE, alive)
    assert not rclient.sismember(keys.JOBS_ACTIVE, dead)


def test_canary_deploy_needs_a_production_model_on_the_line(redis_url, line, tmp_path):
    res = CliRunner().invoke(main, ["train", "--submit", "--data", str(tmp_path), "--preset",
                                    "tiny", "--deploy-line", line, "--canary-percent", "10"],
                             env={"RLR_REDIS_URL": redis_url})
    assert res.exit_code == 2 and f"line {line} has no production model" in res.output


# ----------------------------------------------------------------------------- with a trainer


def test_job_trains_calibrates_registers_and_deploys_as_canary(
        trainer, redis_url, rclient, line, job_ids, versions, synthetic_root, tiny_artifact):
    reg = Registry(rclient)
    data = update_manifest_bytes(tiny_artifact.read_bytes(),
                                 metrics={"test": uuid.uuid4().hex})[0]
    production = reg.register(data, BY).id
    versions.append(production)
    reg.deploy(line, production, by=BY)

    job_id = _submit(redis_url, "--data", str(synthetic_root), "--epochs", "2", "--far", "0.1",
                     "--deploy-line", line, "--canary-cameras", "cam1,cam2")
    job_ids.append(job_id)
    done = wait_for(lambda: (j := _job(rclient, job_id)).finished and j, 300,
                    f"job {job_id} finished", (trainer,))
    assert done.state == "succeeded", done.error
    assert (done.epoch, done.epochs, done.trainer) == (2, 2, trainer.name)
    assert done.loss is not None and done.finished_at >= done.started_at

    version = reg.get(done.version)
    assert version.source_job == job_id and version.preset == "tiny"
    assert version.class_names == ["fabric", "tile", "washer"]
    assert version.calibrated == "yes"  # thresholds from the held-out normals at far 0.1
    rollout = reg.rollout(line)
    assert rollout.canary == done.version and rollout.canary_cameras == ["cam1", "cam2"]
    assert rollout.production == production
    assert done.deployed == f"canary on {line}"
    assert done.metrics["calibration"]["far"] == 0.1
    assert 0.0 <= done.metrics["test"]["image_auroc"] <= 1.0

    logs_out = _cli(redis_url, "jobs", "logs", job_id)
    assert _cli(redis_url, "jobs", "logs", job_id, "--follow") == logs_out  # ends: job is done
    for expected in ("submitted by", "checking folder data", "epoch 1/2", "epoch 2/2",
                     f"registered version {done.version}", "succeeded"):
        assert expected in logs_out
    shown = _cli(redis_url, "jobs", "show", job_id)
    assert "succeeded" in shown and done.version in shown and "calibrated" in shown
    as_json = json.loads(_cli(redis_url, "jobs", "show", job_id, "--json"))
    assert as_json["version"] == done.version and as_json["spec"]["epochs"] == 2


def test_cancelled_job_stops_and_the_trainer_takes_the_next_one(
        trainer, redis_url, rclient, job_ids, synthetic_root, tmp_path):
    job_id = _submit(redis_url, "--data", str(synthetic_root), "--epochs", "500")
    job_ids.append(job_id)
    wait_for(lambda: (_job(rclient, job_id).epoch or 0) >= 1, 300, "first epoch", (trainer,))
    assert _job(rclient, job_id).eta_s > 0
    assert "cancel requested" in _cli(redis_url, "jobs", "cancel", job_id)
    done = wait_for(lambda: (j := _job(rclient, job_id)).finished and j, 120,
                    "cancelled job", (trainer,))
    assert done.state == "cancelled" and "cancelled by" in done.error
    assert done.epoch < 500 and not done.version

    # The same trainer process goes on with the next job (this one fails fast on its path).
    missing = tmp_path / "not-there"
    next_id = _submit(redis_url, "--data", str(missing), "--epochs", "2")
    job_ids.append(next_id)
    failed = wait_for(lambda: (j := _job(rclient, next_id)).finished and j, 120,
                      "next job", (trainer,))
    assert failed.state == "failed" and failed.trainer == trainer.name and trainer.alive()


def test_bad_data_path_fails_fast_with_a_clear_error(trainer, redis_url, rclient, job_ids,
                                                     tmp_path):
    missing = tmp_path / "no-such-data"
    job_id = _submit(redis_url, "--data", str(missing), "--epochs", "2")
    job_ids.append(job_id)
    done = wait_for(lambda: (j := _job(rclient, job_id)).finished and j, 120, "failed job",
                    (trainer,))
    assert done.state == "failed"
    assert f"on trainer {trainer.name}" in done.error
    assert str(missing) in done.error and "does not exist" in done.error
    assert done.finished_at - done.started_at < 15  # before any backbone work
    assert done.epoch is None and not done.version
    assert "failed" in _cli(redis_url, "jobs", "logs", job_id)
    # Resubmitting copies the spec into a new queued job.
    retry_id = _cli(redis_url, "jobs", "retry", job_id).strip()
    job_ids.append(retry_id)
    assert retry_id != job_id and _job(rclient, retry_id).spec == done.spec


def test_trainer_reaps_a_stale_running_job(trainer, rclient, job_ids):
    job_id = _fake_running(rclient, job_ids, "crashed-trainer", silent_s=TIMEOUT_S + 5)
    done = wait_for(lambda: (j := _job(rclient, job_id)).finished and j, 30, "reaped job",
                    (trainer,))
    assert done.state == "failed" and "crashed-trainer stopped heartbeating" in done.error
    assert f"noticed by {trainer.name}" in _cli_logs(rclient, job_id)


def _cli_logs(client, job_id: str) -> str:
    return "\n".join(f[b"line"].decode() for _, f in client.xrange(keys.job_log(job_id)))


def test_sigterm_requeues_the_job_and_a_restarted_trainer_resumes_it(
        trainer, redis_url, rclient, job_ids, synthetic_root, tmp_path):
    job_id = _submit(redis_url, "--data", str(synthetic_root), "--epochs", "500")
    job_ids.append(job_id)
    wait_for(lambda: (_job(rclient, job_id).epoch or 0) >= 2, 300, "two epochs", (trainer,))
    assert trainer.stop(signal.SIGTERM, timeout=120) == 0
    job = _job(rclient, job_id)
    assert job.state == "queued" and job.requeues == 1 and not job.trainer
    stopped_at = job.epoch
    assert "requeued" in _cli_logs(rclient, job_id)
    assert not rclient.exists(keys.trainer(trainer.name))

    # Same work directory: the checkpoint is there, so training goes on from that epoch.
    again = _start_trainer(redis_url, tmp_path, "trainer-again", trainer.workdir)
    try:
        wait_for(lambda: _job(rclient, job_id).state == "running" and
                 (_job(rclient, job_id).epoch or 0) > stopped_at, 300, "resumed epoch",
                 (again,))
        epochs_logged = [int(line.split("epoch ")[1].split("/")[0])
                         for line in _cli_logs(rclient, job_id).splitlines()
                         if " epoch " in line]
        resumed = epochs_logged[epochs_logged.index(stopped_at) + 1]
        assert resumed == stopped_at + 1  # not epoch 1 again
    finally:
        jobs.cancel(rclient, job_id, BY)
        wait_for(lambda: _job(rclient, job_id).finished, 120, "cancel after resume", (again,))
        again.stop()
