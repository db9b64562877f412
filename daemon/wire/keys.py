"""Redis key names (DESIGN.md "Redis layout"). `{line}` is a Redis Cluster hash tag, so every
key of one line lives in one slot and the worker's Lua scripts may touch several of them."""

from __future__ import annotations

PREFIX = "rlr"


def frames(line: str) -> str:
    return f"{PREFIX}:frames:{{{line}}}"


def results(line: str) -> str:
    return f"{PREFIX}:results:{{{line}}}"


def alerts(line: str) -> str:
    return f"{PREFIX}:alerts:{{{line}}}"


def shadow(line: str) -> str:
    """Results of the line's shadow model (never alerts)."""
    return f"{PREFIX}:shadow:{{{line}}}"


def dlq(line: str) -> str:
    return f"{PREFIX}:dlq:{{{line}}}"


def seen(line: str, camera: str, frame_id: str) -> str:
    """Marks a frame whose result is published (idempotency; expires after `dedup_ttl_s`).

    Camera names and frame ids may hold ':', so the camera is length-prefixed: camera
    `camC:x` with frame `p1` and camera `camC` with frame `x:p1` get different keys."""
    return f"{PREFIX}:seen:{{{line}}}:{len(camera)}:{camera}:{frame_id}"


def alert_window(line: str, camera: str) -> str:
    """The camera's last n verdicts, for the k-of-n alert rule (a capped list)."""
    return f"{PREFIX}:alertwin:{{{line}}}:{camera}"


def alert_cooldown(line: str, camera: str) -> str:
    return f"{PREFIX}:alertcool:{{{line}}}:{camera}"


def health(line: str) -> str:
    """Stream of camera health events (raised / cleared), apart from defect alerts."""
    return f"{PREFIX}:health:{{{line}}}"


def camera_health(line: str) -> str:
    """Hash: camera -> JSON of its raised health conditions ({kind: {since, evidence}}),
    the line's current state; every raise and clear is one Lua step on it and the stream."""
    return f"{PREFIX}:camhealth:{{{line}}}"


def thumb(line: str, camera: str) -> str:
    """Hash of a camera's latest thumbnail (`frame_id`, `ts`, `image` JPEG), short TTL:
    written by the worker a few times a second at most, read by the console."""
    return f"{PREFIX}:thumb:{{{line}}}:{len(camera)}:{camera}"


def alert_acks(line: str) -> str:
    """Hash: alert id -> JSON {ts, by, via, comment}, written when someone acknowledges the
    alert: an operator in the console, a PLC / SCADA client through its bridge (the Modbus
    reset coil, the OPC UA Acknowledge method)."""
    return f"{PREFIX}:alertack:{{{line}}}"


def stats(line: str) -> str:
    """Hash of line counters that must survive worker restarts (skipped, dead-lettered)."""
    return f"{PREFIX}:stats:{{{line}}}"


# --- parts, triggers and recipes (daemon/serve/rules/parts.py, daemon/recipes/)


def parts(line: str) -> str:
    """Stream of part verdicts: one entry per part (pass / reject / incomplete)."""
    return f"{PREFIX}:parts:{{{line}}}"


def part_open(line: str, part_id: str) -> str:
    """Hash of a part being joined: view -> JSON of its result, plus `_`-prefixed fields (the
    first capture, the recipe, the deadline). Deleted in the step that emits the verdict."""
    return f"{PREFIX}:part:{{{line}}}:{len(part_id)}:{part_id}"


def parts_due(line: str) -> str:
    """Sorted set: the line's open parts (`part_open` member = part id), scored by deadline
    (ms since the epoch); a sweep emits `incomplete` for the ones past it."""
    return f"{PREFIX}:partsdue:{{{line}}}"


def part_done(line: str, part_id: str) -> str:
    """A decided part: '<verdict entry id> <first capture ms> <deadline ms>' (with a TTL). A
    view of the part arriving later is late, not a new part (see docs/parts.md)."""
    return f"{PREFIX}:partdone:{{{line}}}:{len(part_id)}:{part_id}"


def triggers(line: str) -> str:
    """Stream of part triggers (`part_id`, `ts`, `via`): written by the PLC bridges and
    `rlrctl trigger`, read by producers and cameras that take their part id from it."""
    return f"{PREFIX}:triggers:{{{line}}}"


def next_part(line: str) -> str:
    """String: the part id the PLC announced for the next trigger (Modbus / OPC UA write it;
    `rlrctl produce --part-from key` reads it)."""
    return f"{PREFIX}:nextpart:{{{line}}}"


RECIPES = f"{PREFIX}:recipes"
"""Hash: recipe name -> JSON of its latest revision (`daemon.recipes`)."""


def recipe_revisions(name: str) -> str:
    """Hash: revision number -> JSON of that revision of recipe `name` (never rewritten)."""
    return f"{PREFIX}:recipe:rev:{len(name)}:{name}"


def recipe_active(line: str) -> str:
    """Hash: the line's active recipe (`name`, `revision`, `since`, `by`, `via`, `recipe` JSON)."""
    return f"{PREFIX}:recipe:active:{{{line}}}"


def recipe_log(line: str) -> str:
    """Stream: every recipe switch of the line and every refused one (who, when, via what)."""
    return f"{PREFIX}:recipe:log:{{{line}}}"


RECIPE_CHANNEL = f"{PREFIX}:recipe"
"""Pub/sub channel announcing a switch (message: the line name); workers also poll."""


def worker(worker_id: str) -> str:
    return f"{PREFIX}:workers:{worker_id}"


WORKERS_PATTERN = f"{PREFIX}:workers:*"


# --- model registry and rollouts (daemon/models/registry.py)

MODELS = f"{PREFIX}:models"
"""Hash: model version id -> JSON record (what `Registry.list` reads)."""

ALIAS_PATTERN = f"{PREFIX}:alias:*"


def artifact(version_id: str) -> str:
    """Hash of one version's artifact bytes: field `n` = chunk count, `0`..`n-1` = chunks.
    `{version_id}` is a hash tag so the upload key below can be RENAMEd onto it."""
    return f"{PREFIX}:artifact:{{{version_id}}}"


def artifact_upload(version_id: str, token: str) -> str:
    """Staging key of an upload in progress (TTL); renamed onto `artifact()` when complete."""
    return f"{PREFIX}:artifact:{{{version_id}}}:upload:{token}"


def alias(line: str) -> str:
    """Hash: the line's Rollout JSON under `rollout`, plus `production` / `canary` / `shadow`
    / `revision` as plain fields for people reading it with HGETALL."""
    return f"{PREFIX}:alias:{{{line}}}"


def rollouts(line: str) -> str:
    """Stream: the line's rollout history (who, when, why, what), capped with MAXLEN ~."""
    return f"{PREFIX}:rollouts:{{{line}}}"


# --- training jobs (daemon/jobs/)

# Every job key carries the `{jobs}` hash tag: a submission updates several of them in one
# MULTI, which Redis Cluster allows only within one slot.
JOBS = f"{PREFIX}:{{jobs}}"
"""Stream of job submissions (field `job_id`), read by the `rlr-trainers` consumer group."""

JOBS_GROUP = "rlr-trainers"

JOB_INDEX = f"{PREFIX}:{{jobs}}:index"
"""Sorted set: every job id, scored by its submission time (what `rlrctl jobs list` reads)."""

JOBS_ACTIVE = f"{PREFIX}:{{jobs}}:active"
"""Set: ids of queued and running jobs (what the stale-job reaper looks at)."""


def job(job_id: str) -> str:
    """Hash: a job's state, spec (JSON), progress, heartbeat and outcome."""
    return f"{PREFIX}:job:{{jobs}}:{job_id}"


def job_log(job_id: str) -> str:
    """Stream of a job's log lines (field `line`), capped with MAXLEN ~."""
    return f"{PREFIX}:joblog:{{jobs}}:{job_id}"


def trainer(name: str) -> str:
    """A running trainer's presence (JSON: host, job, since), with a TTL."""
    return f"{PREFIX}:trainers:{name}"


TRAINERS_PATTERN = f"{PREFIX}:trainers:*"
