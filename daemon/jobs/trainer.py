"""`rlrctl trainer`: runs training jobs from `rlr:{jobs}`, one at a time, on this machine.

For each job: check the data, train (progress, ETA and a heartbeat in the job record), then
calibrate thresholds on the held-out normals, evaluate on the test split when there is one,
save the artifact under the work directory, register it, optionally deploy it as a canary.

Shutdown (SIGTERM / SIGINT): a job still training finishes its current epoch and goes back
on the queue (state `queued`, `requeues` + 1) for the next free trainer, rather than being
failed: stopping a trainer for maintenance should not cost anyone their job. Its checkpoint
stays in this trainer's work directory, so a trainer restarted on the same directory resumes
it from that epoch (another machine starts it afresh). A job already past training
(calibrating, evaluating, registering) is finished first. A second signal stops at once and
requeues the same way. A trainer killed without warning (SIGKILL, OOM, power loss) stops
heartbeating, and the reaper in every `rlrctl trainer` and `rlrctl jobs list` marks its job
failed after `RLR_JOB_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import redis

from daemon import logs
from daemon.errors import JobCancelled, SettingsError, TrainerStopping
from daemon.jobs import queue as jobs
from daemon.jobs.runner import execute
from daemon.jobs.settings import TrainerSettings
from daemon.supervisor import Supervisor
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away
from daemon.wire.groups import run_sync
from daemon.wire.text import entry_field, text
from rlr.errors import RLRError


class Trainer:
    """Reads jobs from the `rlr-trainers` group and runs them. `run()` until `stop()`;
    `run_until_idle()` for tests."""

    def __init__(self, client: redis.Redis, settings: TrainerSettings,
                 workdir: str | Path | None = None, *, name: str | None = None,
                 device: str | None = None) -> None:
        if settings.job_timeout_s <= 2 * settings.heartbeat_s:
            raise SettingsError(f"RLR_JOB_TIMEOUT_S={settings.job_timeout_s} must be more than "
                                f"twice RLR_HEARTBEAT_S={settings.heartbeat_s}, or healthy "
                                "training jobs are reaped as dead")
        self.client, self.settings = client, settings
        self.name = name or settings.consumer_name
        self.workdir = Path(workdir or settings.trainer_workdir)
        self.device = device or settings.device
        self.timeout_s = settings.job_timeout_s
        self.beat_s = settings.heartbeat_s
        self.reap_every_s = max(self.beat_s, min(30.0, self.timeout_s / 4))
        self.current: str | None = None
        self.jobs_done = 0
        self._stopping = False
        self._signals = 0
        self._lost = False  # the current job is no longer ours (reaped or changed by hand)
        self._interruptible = False  # a second stop signal may abort the job right now
        self._pulse_stop = threading.Event()
        self._last_reap = 0.0
        self.log = logs.get("rlr.trainer").bind(trainer=self.name)
        self.group = jobs.job_group(self.name)
        self.supervisor = Supervisor(f"trainer {self.name}",
                                     max_failures=settings.task_max_failures,
                                     window_s=settings.task_failure_window_s,
                                     on_fatal=lambda exc: self.stop())

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """First call: finish the current epoch, requeue the job, exit. Second: at once.
        Safe in a signal handler."""
        self._signals += 1
        self._stopping = True
        if self._signals > 1 and self._interruptible:
            self._interruptible = False
            raise TrainerStopping("second stop signal")

    def run(self, max_jobs: int | None = None, until_idle: bool = False) -> int:
        """Take and run jobs until stopped (or `max_jobs` done, or the queue is empty when
        `until_idle`); returns how many jobs were run."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        run_sync(self.client, self.group.ensure())
        pulse = self.supervisor.thread("pulse", self._pulse, self._pulse_stop)
        self.log.info("trainer_started", workdir=str(self.workdir.resolve()),
                      device=self.device, timeout_s=self.timeout_s)
        done = threading.Event()
        try:
            self.supervisor.call_forever(
                "jobs", lambda: self._take_jobs(max_jobs, until_idle, done), done)
        finally:
            self._pulse_stop.set()
            pulse.join(timeout=5)
            with contextlib.suppress(redis.RedisError):
                self.client.delete(keys.trainer(self.name))
            self.log.info("trainer_stopped", jobs=self.jobs_done)
        if self.supervisor.fatal is not None:
            raise self.supervisor.fatal
        return self.jobs_done

    def _take_jobs(self, max_jobs: int | None, until_idle: bool, done: threading.Event) -> None:
        """The trainer's main loop (supervised: a failure is logged and the loop restarted)."""
        backoff = Backoff(0.2, 5.0)
        self._recover_own()
        while not self._stopping and (max_jobs is None or self.jobs_done < max_jobs):
            try:
                entry = self._next_entry()
                backoff.reset()
            except Exception as exc:
                if not away(exc):
                    raise
                self.log.warning("redis_unavailable", error=str(exc))
                backoff.sleep()
                continue
            self.supervisor.beat("jobs")
            if entry is None:
                if until_idle:
                    break
                continue
            self.run_job(*entry)
        done.set()

    def run_until_idle(self, max_jobs: int | None = None) -> int:
        return self.run(max_jobs=max_jobs, until_idle=True)

    def _next_entry(self) -> tuple[str, str] | None:
        """(stream entry id, job id) of the next job for us, or None after a block timeout."""
        if time.monotonic() - self._last_reap > self.reap_every_s:
            self._last_reap = time.monotonic()
            for job_id in jobs.reap_stale(self.client, self.timeout_s, reaper=self.name):
                self.log.warning("job_reaped", job=job_id, timeout_s=self.timeout_s)
            orphan = self._claim_orphan()
            if orphan is not None:
                return orphan
        for d in run_sync(self.client, self.group.read(1, self.settings.block_ms)):
            return d.entry_id, _job_id(d.fields)
        return None

    def _recover_own(self) -> None:
        """Entries delivered to this trainer's name before (a restart under a fixed
        RLR_CONSUMER): a job still running under our name was interrupted: fail it."""
        own = run_sync(self.client, self.group.pending_own(100))
        self._ack(*(d.entry_id for d in own.trimmed))
        for d in own.deliveries:
            job_id = _job_id(d.fields)
            jobs.transition(self.client, job_id, ["running"],
                            {"state": "failed", "phase": "failed",
                             "error": f"trainer {self.name} restarted while running this "
                             f"job; resubmit with `rlrctl jobs retry {job_id}`"},
                            guard={"trainer": self.name}, stamp=["finished_at"])
            if self.client.hget(keys.job(job_id), "state") == b"queued":
                self.run_job(d.entry_id, job_id)
            else:
                self._ack(d.entry_id)

    def _claim_orphan(self) -> tuple[str, str] | None:
        """A queued job whose entry went to a trainer that died before starting it. Not
        XAUTOCLAIM: a running job's entry stays pending (and idle) for as long as it trains."""
        idle_ms = int(self.timeout_s * 1000)
        for p in run_sync(self.client, self.group.pending_idle(keys.JOBS, idle_ms, 50)):
            entry_id = text(p["message_id"])
            got = self.client.xrange(keys.JOBS, entry_id, entry_id)
            state = self.client.hget(keys.job(_job_id(got[0][1])), "state") if got else None
            if state is None or state.decode() in jobs.TERMINAL:
                self._ack(entry_id)
            elif state == b"queued":
                for d in run_sync(self.client, self.group.claim(keys.JOBS, [entry_id], idle_ms)):
                    return d.entry_id, _job_id(d.fields)
        return None

    def _ack(self, *entry_ids: str) -> None:
        if entry_ids:
            self.client.xack(keys.JOBS, keys.JOBS_GROUP, *entry_ids)

    def _pulse(self) -> None:
        """Background: the job's heartbeat, this trainer's presence key, the reaper."""
        while not self._pulse_stop.is_set():
            try:
                job_id = self.current
                if job_id is not None and not jobs.transition(
                        self.client, job_id, ["running"], guard={"trainer": self.name},
                        stamp=["heartbeat_at"]) and self.current == job_id:
                    self._lost = True
                self.client.set(keys.trainer(self.name), json.dumps({
                    "name": self.name, "host": socket.gethostname(), "pid": os.getpid(),
                    "device": self.device, "job": self.current, "jobs_done": self.jobs_done,
                    "workdir": str(self.workdir.resolve()),
                    "tasks": self.supervisor.snapshot(),
                    "ready": not self.supervisor.down()}),
                    ex=max(int(3 * self.beat_s), 5))
            except Exception as exc:
                if not away(exc):
                    raise
                self.log.warning("heartbeat_failed", error=str(exc))
            self.supervisor.beat("pulse")
            self._pulse_stop.wait(self.beat_s)

    # ------------------------------------------------------------------ one job

    def run_job(self, entry_id: str, job_id: str) -> str:
        """Run one job from its stream entry; returns its final state. Never raises for a
        job's own failure (the job is marked failed); acks the entry at the end."""
        log = self.log.bind(job=job_id)
        self._lost = False
        if not jobs.transition(self.client, job_id, ["queued"],
                               {"state": "running", "trainer": self.name, "stream_id": entry_id,
                                "phase": "starting", "cancel_requested": "", "error": ""},
                               stamp=["started_at", "heartbeat_at"]):
            state = self.client.hget(keys.job(job_id), "state")
            log.info("job_skipped", state=None if state is None else state.decode())
            self._ack(entry_id)
            return "skipped" if state is None else state.decode()
        self.current = job_id
        jobs.log_line(self.client, job_id, f"started on trainer {self.name} "
                      f"({socket.gethostname()}, device {self.device})")
        log.info("job_started")
        t0 = time.monotonic()
        try:
            self._interruptible = True
            try:
                values = execute(self, job_id)
            finally:
                self._interruptible = False
            state = self._finish(job_id, "succeeded", values)
        except JobCancelled as exc:
            state = self._finish(job_id, "cancelled", {"error": str(exc)})
        except TrainerStopping:
            state = self._requeue(job_id, entry_id)
        except Exception as exc:
            message = str(exc) if isinstance(exc, RLRError) else f"{type(exc).__name__}: {exc}"
            log.error("job_error", error=message, traceback=traceback.format_exc())
            state = self._finish(job_id, "failed", {"error": message})
        finally:
            self.current = None
            self.jobs_done += 1
            try:
                self._ack(entry_id)
            except redis.RedisError as exc:
                log.warning("ack_failed", error=str(exc))
        log.info("job_finished", state=state, seconds=round(time.monotonic() - t0, 1))
        return state

    def _finish(self, job_id: str, state: str, values: dict[str, Any]) -> str:
        done = jobs.transition(self.client, job_id, ["running"],
                               {**values, "state": state, "phase": state, "eta_s": ""},
                               guard={"trainer": self.name}, stamp=["finished_at"])
        if not done:  # reaped or edited while we ran: leave the record as it is
            current = self.client.hget(keys.job(job_id), "state")
            self.log.warning("job_taken_away", job=job_id, wanted=state,
                             state=None if current is None else current.decode())
            return "lost"
        detail = values.get("error") or (f"version {values['version']}"
                                         if values.get("version") else "")
        jobs.log_line(self.client, job_id, f"{state}" + (f": {detail}" if detail else ""))
        return state

    def _requeue(self, job_id: str, entry_id: str) -> str:
        requeues = int(self.client.hget(keys.job(job_id), "requeues") or 0) + 1
        why = f"trainer {self.name} stopped (SIGTERM); requeued"
        if not jobs.transition(self.client, job_id, ["running"],
                               {"state": "queued", "phase": "queued", "requeues": requeues,
                                "trainer": "", "eta_s": "", "cancel_requested": ""},
                               guard={"trainer": self.name}):
            return "lost"
        self.client.xadd(keys.JOBS, {"job_id": job_id}, maxlen=jobs.JOBS_MAXLEN, approximate=True)
        jobs.log_line(self.client, job_id, why)
        self.log.info("job_requeued", job=job_id, requeues=requeues)
        return "queued"

    # ------------------------------------------------------------------ used by the runner

    def past_point_of_no_return(self) -> None:
        """The job is about to register / deploy: a stop signal no longer interrupts it."""
        self._interruptible = False

    def check_in(self, job_id: str, stopping: bool = True) -> None:
        """Between epochs and steps: raise if the job was cancelled or taken away, or (with
        `stopping`) this trainer is stopping."""
        state, trainer, cancel_by = (
            None if v is None else v.decode()
            for v in self.client.hmget(keys.job(job_id), "state", "trainer", "cancel_requested"))
        if self._lost or state != "running" or trainer != self.name:
            raise JobCancelled(f"job taken away from trainer {self.name} (now {state}); "
                               "it was probably reaped as stale")
        if cancel_by:
            raise JobCancelled(f"cancelled by {cancel_by}")
        if stopping and self._stopping:
            raise TrainerStopping()


def _job_id(fields) -> str:
    return entry_field(fields, "job_id") or ""
