"""What the console's pages show and do, as plain data read from Redis (synchronous client):
line status, dead letters, jobs, alerts and their evidence, rollouts with score
distributions, and the actions an operator may take. No HTML here (see `pages`)."""

from __future__ import annotations

import io
import json
import re
import time

import numpy as np
import redis
from PIL import Image

from daemon.errors import BadRequest, JobError, RegistryError
from daemon.jobs import queue as jobs
from daemon.models import status as line_status
from daemon.models.registry import Registry
from daemon.recipes.recipe import Activation
from daemon.recipes.store import RecipeStore, registry_for
from daemon.wire import keys
from daemon.wire.schema import Alert, DeadLetter, Result, alert_evidence
from daemon.wire.text import text

_OPERATOR = re.compile(r"[\w .@-]{1,64}")


def operator(name: object) -> str:
    """The name an action is recorded under: `console:<name>` (checked: letters, digits,
    space, `_ . @ -`, at most 64)."""
    value = str(name or "").strip()
    if not _OPERATOR.fullmatch(value):
        raise ValueError("give your name (1-64 letters, digits, spaces, '_', '.', '@' or '-') "
                         "so the history records who did it")
    return f"console:{value}"


# ----------------------------------------------------------------------------- status


def status(client: redis.Redis, lines: list[str], group: str) -> dict:
    """Per line: rollout, queue, workers (heartbeat, device, loaded and refused versions),
    skipped and dead-lettered counts by reason, the newest dead letters; and the jobs."""
    rows = line_status.collect(client, Registry(client), lines, group, history=0)
    for row in rows:
        stats = row["stats"]
        row["dead_by_reason"] = {k.split(":", 1)[1]: v for k, v in stats.items()
                                 if k.startswith("dead_lettered:")}
        row["skipped"] = stats.get("skipped", 0)
        row["dead_recent"] = dead_letters(client, row["line"], 20)
    return {"lines": rows, "jobs": [job_json(j) for j in jobs.list_jobs(client, 30)],
            "trainers": jobs.trainers(client), "at": time.time()}


def dead_letters(client: redis.Redis, line: str, count: int) -> list[dict]:
    out = []
    for eid, fields in client.xrevrange(keys.dlq(line), count=count):
        try:
            d = DeadLetter.from_fields(fields)
        except Exception:
            out.append({"id": text(eid), "reason": "unreadable", "detail": "", "original": {}})
            continue
        original = {k: (f"<{len(v)} bytes>" if k == "data" else v[:200])
                    for k, v in d.original.items()}
        out.append({"id": text(eid), "reason": d.reason, "detail": d.detail, "kind": d.kind,
                    "worker": d.worker, "ts": d.ts, "deliveries": d.deliveries,
                    "original": original})
    return out


def job_json(j: jobs.Job) -> dict:
    return {"id": j.id, "state": j.state, "phase": j.phase, "epoch": j.epoch,
            "epochs": j.epochs, "loss": j.loss, "val_loss": j.val_loss, "eta_s": j.eta_s,
            "by": j.submitted_by, "submitted_at": j.submitted_at, "trainer": j.trainer,
            "version": j.version, "error": j.error, "cancel_requested": j.cancel_requested,
            "finished": j.finished}


def job_log(client: redis.Redis, job_id: str, count: int = 200) -> list[str]:
    entries = client.xrevrange(keys.job_log(job_id), count=count)
    return [text(f.get(b"line", b"")) for _, f in reversed(entries)]


# ----------------------------------------------------------------------------- alerts
def alert_json(line: str, aid: str, fields, ack: dict | None = None) -> dict | None:
    """An alert entry as the page shows it (no pictures: those are fetched by URL)."""
    try:
        a = Alert.from_fields(fields)
    except Exception:
        return None
    ids = fields.get(b"evidence", fields.get("evidence"))
    try:
        n_evidence = len(json.loads(ids)) if ids else 0
    except ValueError:
        n_evidence = 0
    return {"line": line, "id": aid, "camera": a.camera, "ts": a.raised_ts, "rule": a.rule,
            "frame_ids": a.frame_ids, "scores": a.scores, "model": a.model_version,
            "threshold": a.threshold, "class": a.product_class,
            "health": list(a.camera_health), "evidence": n_evidence,
            "has_mask": [fields.get(f"evidence:{i}:mask".encode()) is not None
                         for i in range(n_evidence)],
            "ack": ack}



def alerts(client: redis.Redis, line: str, count: int = 50) -> list[dict]:
    entries = client.xrevrange(keys.alerts(line), count=count)
    # Acknowledgements are kept by the alert's own id, whoever made them (console or PLC).
    ids = [text(f.get(b"alert_id", b"")) or text(e) for e, f in entries]
    acks = client.hmget(keys.alert_acks(line), ids) if entries else []
    out = []
    for (aid, fields), ack in zip(entries, acks, strict=True):
        try:
            ack_json = json.loads(ack) if ack else None
        except ValueError:
            ack_json = None
        a = alert_json(line, text(aid), fields, ack_json)
        if a is not None:
            out.append(a)
    return out


def evidence(client: redis.Redis, line: str, alert_id: str, index: int,
             kind: str) -> bytes | None:
    """The alert's `index`-th picture (JPEG) or its heat-map overlay (PNG), or None."""
    got = client.xrange(keys.alerts(line), alert_id, alert_id, count=1)
    if not got:
        return None
    kept = alert_evidence(got[0][1])
    if not 0 <= index < len(kept):
        return None
    _, image, mask = kept[index]
    if kind == "image":
        return image
    return None if mask is None else overlay(mask)


def overlay(mask_png: bytes) -> bytes:
    """A mask PNG (255 = anomalous) as a translucent red PNG to lay over the picture."""
    m = np.asarray(Image.open(io.BytesIO(mask_png)).convert("L")) > 127
    rgba = np.zeros((*m.shape, 4), np.uint8)
    rgba[m] = (255, 32, 32, 150)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def acknowledge(client: redis.Redis, line: str, alert_id: str, by: str) -> dict:
    got = client.xrange(keys.alerts(line), alert_id, alert_id, count=1)
    if not got:
        raise BadRequest(f"no alert {alert_id} on line {line}")
    ack = {"ts": time.time(), "by": by, "via": "console", "comment": ""}
    own_id = text(got[0][1].get(b"alert_id", b"")) or alert_id
    client.hset(keys.alert_acks(line), own_id, json.dumps(ack))
    return ack


# ----------------------------------------------------------------------------- recipes


def activation_json(act: Activation | None) -> dict | None:
    if act is None:
        return None
    return {"name": act.recipe.name, "revision": act.revision, "label": act.label,
            "since": act.since, "by": act.by, "via": act.via,
            "previous": act.previous.label if act.previous is not None else None,
            "recipe": act.recipe.to_json()}


def recipes(client: redis.Redis, line: str) -> dict:
    """The line's active recipe, every recipe to switch to, and the recent switches."""
    store = RecipeStore(client)
    return {"line": line, "active": activation_json(store.active(line)),
            "recipes": store.list(), "history": store.history(line, 20)}


def switch_recipe(client: redis.Redis, line: str, name: str, by: str) -> dict:
    """Activate `name` on the line (via the console); RecipeError (one line) when refused."""
    store = RecipeStore(client)
    act = store.activate(line, name, by=by, via="console", registry=registry_for(client, line))
    return activation_json(act)


# ----------------------------------------------------------------------------- rollouts


def rollout(client: redis.Redis, line: str, sample: int = 2000) -> dict:
    """The line's rollout, its versions with metrics and thresholds, its history, and the
    recent score distribution of each version (results and the shadow's stream)."""
    reg = Registry(client)
    ro = reg.rollout(line)
    versions = {v.id: v for v in reg.list()}
    scores: dict[str, list[float]] = {}
    for key, role in ((keys.results(line), None), (keys.shadow(line), "shadow")):
        for _, fields in client.xrevrange(key, count=sample):
            try:
                res = Result.from_fields(fields)
            except Exception:
                continue
            scores.setdefault(role or res.model_version, []).append(res.score)
    roles = [("production", ro.production), ("canary", ro.canary), ("shadow", ro.shadow)]
    rows = []
    for role, vid in roles:
        if vid is None:
            continue
        v = versions.get(vid)
        rows.append({"role": role, "version": vid,
                     "metrics": v.metrics if v else {}, "thresholds": v.thresholds if v else {},
                     "created_by": v.created_by if v else "", "missing": v is None,
                     "scores": scores.get("shadow" if role == "shadow" else vid, [])})
    return {"line": line, "rollout": ro.to_json(), "rows": rows,
            "history": reg.history(line, 20), "canary_scope": ro.describe_canary()}


def rollout_action(client: redis.Redis, line: str, action: str, by: str) -> dict:
    reg = Registry(client)
    why = "from the console"
    if action == "promote":
        ro = reg.promote(line, by=by, why=why)
    elif action == "rollback":
        ro = reg.rollback(line, by=by, why=why)
    elif action in ("undeploy_canary", "undeploy_shadow"):
        ro = reg.clear(line, action.split("_", 1)[1], by=by, why=why)
    else:
        raise RegistryError(f"unknown action {action!r}: use promote, rollback, "
                            "undeploy_canary or undeploy_shadow")
    return ro.to_json()


def job_action(client: redis.Redis, job_id: str, action: str, by: str) -> str:
    if action == "cancel":
        return jobs.cancel(client, job_id, by)
    if action == "retry":
        return f"resubmitted as {jobs.resubmit(client, job_id, by)}"
    raise JobError(f"unknown job action {action!r}: use cancel or retry")


def histogram(values: list[float], lo: float, hi: float, bins: int = 30) -> list[float]:
    """Shares of `values` in `bins` equal bins over [lo, hi] (for the side-by-side plot)."""
    if not values or hi <= lo:
        return [0.0] * bins
    counts, _ = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    return [float(c) / len(values) for c in counts]
