"""Training jobs on Redis: submission, job records, cancellation, the stale-job reaper.

A job is a hash `rlr:job:{jobs}:<id>` (state, spec JSON, progress, outcome) plus one entry on the
`rlr:{jobs}` stream that trainers (`rlrctl trainer`, `daemon.jobs.trainer.Trainer`) read through
the `rlr-trainers` consumer group, one job at a time. States:

    queued -> running -> succeeded | failed | cancelled
    queued -> cancelled                      (cancelled before a trainer took it)
    running -> queued                        (its trainer got SIGTERM: requeued)

Every state change is a compare-and-set in one Lua script on the job's hash, so a trainer, a
`cancel` and the stale-job reaper never overwrite each other. Times are Redis server time
(`TIME`), so trainers with skewed clocks are not reaped by mistake.
"""

from __future__ import annotations

import datetime
import json
import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from daemon.errors import JobError
from daemon.jobs.spec import JobSpec
from daemon.models.registry import Registry
from daemon.wire import keys
from daemon.wire.groups import ConsumerGroup
from daemon.wire.heartbeat import read_presence
from daemon.wire.text import text

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")
JOBS_MAXLEN = 10_000  # cap of the submissions stream (MAXLEN ~)
JOBLOG_MAXLEN = 2_000  # log lines kept per job


# ----------------------------------------------------------------------------- records


@dataclass
class Job:
    """A job record as read from `rlr:job:{jobs}:<id>` (numbers parsed, missing ones None)."""

    id: str
    state: str
    spec: JobSpec | None
    submitted_by: str = ""
    submitted_at: float | None = None
    trainer: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    heartbeat_at: float | None = None
    phase: str = ""
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    eta_s: float | None = None
    version: str = ""
    deployed: str = ""
    error: str = ""
    cancel_requested: str = ""
    requeues: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_hash(cls, job_id: str, h: Mapping[bytes | str, bytes | str]) -> Job:
        t = {text(k): text(v) for k, v in h.items()}

        def num(name: str, kind=float):
            try:
                return kind(float(t[name])) if t.get(name) not in (None, "") else None
            except ValueError:
                return None

        try:
            spec = JobSpec.from_json(t["spec"]) if t.get("spec") else None
        except (ValueError, TypeError, JobError):
            spec = None
        try:
            metrics = json.loads(t["metrics"]) if t.get("metrics") else {}
        except ValueError:
            metrics = {}
        return cls(
            id=job_id, state=t.get("state", "?"), spec=spec,
            submitted_by=t.get("submitted_by", ""), submitted_at=num("submitted_at"),
            trainer=t.get("trainer", ""), started_at=num("started_at"),
            finished_at=num("finished_at"), heartbeat_at=num("heartbeat_at"),
            phase=t.get("phase", ""), epoch=num("epoch", int), epochs=num("epochs", int),
            loss=num("loss"), val_loss=num("val_loss"), eta_s=num("eta_s"),
            version=t.get("version", ""), deployed=t.get("deployed", ""),
            error=t.get("error", ""), cancel_requested=t.get("cancel_requested", ""),
            requeues=num("requeues", int) or 0, metrics=metrics, raw=t,
        )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL


def new_job_id() -> str:
    """Sortable and unique: `j<UTC yyyymmdd-HHMMSS>-<6 hex>`."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"j{stamp}-{secrets.token_hex(3)}"


def server_now(client: redis.Redis) -> float:
    secs, micros = client.time()
    return secs + micros / 1e6


def when(ts: float | None) -> str:
    """A timestamp for people: local time, seconds."""
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def plain_json(value: Any) -> str:
    """JSON with NaN / inf as null (job metrics can hold undefined AUROCs)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v
    return json.dumps(clean(value), default=str)


def job_group(consumer: str) -> ConsumerGroup:
    """The trainers' consumer group on the job stream, as `consumer` sees it. It reads from
    the start, so jobs submitted before any trainer ran are not lost."""
    return ConsumerGroup(keys.JOBS_GROUP, consumer, {keys.JOBS: "jobs"}, start_id="0")


# KEYS[1] job hash. ARGV[1] allowed current states (comma list); ARGV[2] g = guard count;
# ARGV[3 .. 2+2g] guard field/value pairs that must match; ARGV[3+2g] fields (comma list) to
# stamp with the server time; the rest: field/value pairs to set. Returns 1 if applied.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local ok = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then ok = true end end
if not ok then return 0 end
local g = tonumber(ARGV[2])
for i = 0, g - 1 do
  local have = redis.call('HGET', KEYS[1], ARGV[3 + 2 * i]) or ''
  if have ~= ARGV[4 + 2 * i] then return 0 end
end
local base = 3 + 2 * g
if ARGV[base] ~= '' then
  local t = redis.call('TIME')
  local now = string.format('%.3f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
  for f in string.gmatch(ARGV[base], '[^,]+') do redis.call('HSET', KEYS[1], f, now) end
end
for i = base + 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""


def transition(client: redis.Redis, job_id: str, allowed: Iterable[str],
               values: Mapping[str, Any] | None = None, *,
               guard: Mapping[str, str] | None = None, stamp: Sequence[str] = ()) -> bool:
    """Set `values` (and server-time `stamp` fields) on the job if its state is in `allowed`
    and every `guard` field has the given value; False (nothing written) otherwise."""
    guard = dict(guard or {})
    args: list[Any] = [",".join(allowed), len(guard)]
    for k, v in guard.items():
        args += [k, v]
    args.append(",".join(stamp))
    for k, v in (values or {}).items():
        args += [k, "" if v is None else str(v)]
    done = bool(client.register_script(_TRANSITION)(keys=[keys.job(job_id)], args=args))
    new_state = (values or {}).get("state")
    if done and new_state in TERMINAL:
        client.srem(keys.JOBS_ACTIVE, job_id)
    return done


def log_line(client: redis.Redis, job_id: str, text: str) -> None:
    """Append a line to the job's log stream (capped); shown by `rlrctl jobs logs`."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    client.xadd(keys.job_log(job_id), {"line": f"{stamp} {text}"}, maxlen=JOBLOG_MAXLEN,
                approximate=True)


# ----------------------------------------------------------------------------- operations


def submit(client: redis.Redis, spec: JobSpec, by: str) -> str:
    """Validate `spec`, record the job as queued and put it on `rlr:{jobs}`; returns its id."""
    spec.validate()
    if spec.deploy_line and Registry(client).rollout(spec.deploy_line).production is None:
        raise JobError(f"line {spec.deploy_line} has no production model, so the new model "
                       "cannot be its canary; deploy one first (rlrctl deploy MODEL --line "
                       f"{spec.deploy_line}) or submit without --deploy-line")
    job_id = new_job_id()
    cfg = spec.config()
    now = server_now(client)
    pipe = client.pipeline(transaction=True)
    pipe.hset(keys.job(job_id), mapping={
        "state": "queued", "spec": spec.to_json(), "submitted_by": by,
        "submitted_at": f"{now:.3f}", "epochs": cfg.train.epochs, "phase": "queued"})
    pipe.zadd(keys.JOB_INDEX, {job_id: now})
    pipe.sadd(keys.JOBS_ACTIVE, job_id)
    pipe.xadd(keys.JOBS, {"job_id": job_id}, maxlen=JOBS_MAXLEN, approximate=True)
    pipe.execute()
    log_line(client, job_id, f"submitted by {by}: {spec.describe()}")
    return job_id


def get_job(client: redis.Redis, job_id: str) -> Job:
    h = client.hgetall(keys.job(job_id))
    if not h:
        raise JobError(f"no job {job_id!r}; `rlrctl jobs list` shows the job ids")
    return Job.from_hash(job_id, h)


def list_jobs(client: redis.Redis, limit: int = 20, states: Iterable[str] | None = None
              ) -> list[Job]:
    """The newest `limit` jobs (optionally only in `states`), newest first."""
    wanted = set(states or ())
    out: list[Job] = []
    start, page = 0, max(limit, 50)
    while len(out) < limit:
        ids = [i.decode() for i in client.zrevrange(keys.JOB_INDEX, start, start + page - 1)]
        if not ids:
            break
        pipe = client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        for job_id, h in zip(ids, pipe.execute(), strict=True):
            if not h:
                client.zrem(keys.JOB_INDEX, job_id)  # its record was deleted by hand
                continue
            job = Job.from_hash(job_id, h)
            if not wanted or job.state in wanted:
                out.append(job)
        start += page
    return out[:limit]


def cancel(client: redis.Redis, job_id: str, by: str) -> str:
    """Cancel a queued job at once ("cancelled"), or ask a running one's trainer to stop after
    the current epoch ("cancelling"). Raises `JobError` for a finished job."""
    for _ in range(5):  # the state may change under us (a trainer takes the job): retry
        job = get_job(client, job_id)
        if job.state == "queued":
            if transition(client, job_id, ["queued"],
                          {"state": "cancelled", "phase": "cancelled",
                           "error": f"cancelled by {by} before it started"},
                          stamp=["finished_at"]):
                log_line(client, job_id, f"cancelled by {by} while queued")
                return "cancelled"
        elif job.state == "running":
            if transition(client, job_id, ["running"], {"cancel_requested": by}):
                log_line(client, job_id, f"cancel requested by {by}; the trainer stops after "
                         "the current epoch")
                return "cancelling"
        else:
            raise JobError(f"job {job_id} already {job.state}; nothing to cancel")
    raise JobError(f"job {job_id} keeps changing state; try again")


def resubmit(client: redis.Redis, job_id: str, by: str) -> str:
    """Submit a copy of job `job_id`'s spec as a new job; returns the new id."""
    job = get_job(client, job_id)
    if job.spec is None:
        raise JobError(f"job {job_id} has no readable spec; submit it again with rlrctl train "
                       "--submit")
    new_id = submit(client, job.spec, by)
    log_line(client, new_id, f"resubmission of job {job_id}")
    return new_id


def reap_stale(client: redis.Redis, timeout_s: float, reaper: str = "") -> list[str]:
    """Mark running jobs whose heartbeat is older than `timeout_s` as failed (their trainer
    died); returns their ids. Also drops finished jobs from the active set."""
    now = server_now(client)
    reaped = []
    for raw_id in client.smembers(keys.JOBS_ACTIVE):
        job_id = raw_id.decode()
        state, beat, trainer, stream_id = (
            None if v is None else v.decode()
            for v in client.hmget(keys.job(job_id), "state", "heartbeat_at", "trainer",
                                  "stream_id"))
        if state is None or state in TERMINAL:
            client.srem(keys.JOBS_ACTIVE, job_id)
            continue
        if state != "running":
            continue
        last = float(beat) if beat else 0.0
        if now - last <= timeout_s:
            continue
        msg = (f"trainer {trainer or '?'} stopped heartbeating at {when(last)} (silent for "
               f"{now - last:.0f} s, over RLR_JOB_TIMEOUT_S={timeout_s:g}); it was probably "
               f"killed or lost its machine. Resubmit with `rlrctl jobs retry {job_id}`")
        if transition(client, job_id, ["running"],
                      {"state": "failed", "phase": "failed", "error": msg},
                      guard={"heartbeat_at": beat or ""}, stamp=["finished_at"]):
            if stream_id:
                client.xack(keys.JOBS, keys.JOBS_GROUP, stream_id)
            log_line(client, job_id, f"failed: {msg}" + (f" (noticed by {reaper})"
                                                          if reaper else ""))
            reaped.append(job_id)
    return reaped


def trainers(client: redis.Redis) -> list[dict[str, Any]]:
    """Trainers alive now (their presence keys), sorted by name."""
    return read_presence(client, keys.TRAINERS_PATTERN, "name")

