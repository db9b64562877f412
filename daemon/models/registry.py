"""Model registry and per-line rollouts, in Redis.

Any worker that reaches Redis can fetch any registered model: no shared file system.

Keys (`daemon.wire.keys`):
- `rlr:models` hash: version id -> JSON `ModelVersion` record (written last at registration,
  so a half-written upload is never listed).
- `rlr:artifact:{<id>}` hash: `n` = chunk count, `0`..`n-1` = the artifact bytes in chunks of
  `chunk_bytes`. An upload is written to `rlr:artifact:{<id>}:upload:<token>` (with a TTL, so
  an abandoned one expires) and RENAMEd into place once complete.
- `rlr:alias:{line}` hash: the `Rollout` JSON under `rollout`, plus `production`, `canary`,
  `shadow` and `revision` as plain fields for HGETALL readers.
- `rlr:rollouts:{line}` stream: the rollout history (ts, by, why, action, version, revision,
  rollout after the change), MAXLEN ~ 1000.
Every rollout change is one WATCH/MULTI transaction on the line's keys, and is announced on
the pub/sub channel `NOTIFY_CHANNEL` (message: the line name). Workers also poll the
revision, so a missed message only delays a reload. `Rollout` and its routing rule live in
`daemon.models.rollout` (pure), version records in `daemon.models.versions`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import uuid
from pathlib import Path

import redis

from daemon.errors import RegistryError
from daemon.models.rollout import Rollout, drop_alias, parse_rollout, stable_bucket
from daemon.models.versions import ModelVersion, parse_version, summary, who
from daemon.wire import keys
from daemon.wire.text import text

__all__ = ["NOTIFY_CHANNEL", "ModelVersion", "Registry", "RegistryError", "Rollout",
           "parse_rollout", "stable_bucket", "who"]

NOTIFY_CHANNEL = "rlr:rollout"
MODES = ("production", "canary", "shadow")
HISTORY_MAXLEN = 1000
UPLOAD_TTL_S = 3600
_ID = re.compile(r"^m-[0-9a-f]{12}$")
_LINE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Registry:
    """Model versions and rollouts in Redis, through a synchronous client (binary replies)."""

    def __init__(self, client: redis.Redis, chunk_bytes: int = 4 * 1024 * 1024) -> None:
        if chunk_bytes < 1024:
            raise ValueError(f"chunk_bytes {chunk_bytes} is too small; use at least 1024")
        self.r = client
        self.chunk_bytes = chunk_bytes

    # ------------------------------------------------------------------ versions

    def register(self, data: bytes, created_by: str, source_job: str | None = None,
                 note: str = "") -> ModelVersion:
        """Verify and store an artifact; the same artifact always gets the same id."""
        from rlr.artifact import load_artifact_bytes
        from rlr.errors import RLRError

        try:
            manifest = load_artifact_bytes(data, "cpu", source="the uploaded artifact").manifest
        except RLRError as exc:
            raise RegistryError(f"not registered: {exc}") from None
        vid = "m-" + manifest["sha256"][:12]
        existing = self._record(vid)
        if existing is not None and existing.corrupt:  # registering again repairs it
            self.r.hdel(keys.MODELS, vid)
            existing = None
        if existing is not None and self.r.hexists(keys.artifact(vid), "n"):
            return existing
        blob = hashlib.sha256(data).hexdigest()
        self._store(vid, data)
        version = ModelVersion(
            id=vid, sha256=manifest["sha256"], size_bytes=len(data), created_at=time.time(),
            created_by=created_by, source_job=source_job, note=note, blob_sha256=blob,
            **summary(manifest))
        record = json.dumps(version.to_json(), sort_keys=True)
        if not self.r.hsetnx(keys.MODELS, vid, record):  # registered meanwhile, or re-stored
            return existing or self.get(vid)
        return version

    def register_file(self, path: str | os.PathLike[str], created_by: str,
                      source_job: str | None = None, note: str = "") -> ModelVersion:
        path = Path(path)
        if not path.is_file():
            raise RegistryError(f"model artifact {path} does not exist or is not a file; "
                                "give the .rlr file that `rlrctl train` wrote")
        return self.register(path.read_bytes(), created_by, source_job, note)

    def get(self, version_id: str) -> ModelVersion:
        version = self._record(version_id)
        if version is None:
            raise RegistryError(f"unknown model version {version_id}; `rlrctl models` lists them")
        if version.corrupt:
            raise RegistryError(f"the record of {version_id} is corrupt ({version.corrupt}); "
                                "register its .rlr file again to repair it")
        return version

    def resolve(self, ref: str) -> ModelVersion:
        """A version from its id or an unambiguous prefix of it (with or without `m-`); one
        whose record is corrupt comes back marked so (to be shown or deleted)."""
        if _ID.match(ref):
            found = self._record(ref)
            return found if found is not None else self.get(ref)  # get: "unknown ..."
        prefix = ref if ref.startswith("m-") else f"m-{ref}"
        found = [v for v in self.list() if v.id.startswith(prefix)] if len(prefix) > 3 else []
        if len(found) == 1:
            return found[0]
        if found:
            raise RegistryError(f"{ref} matches {len(found)} versions "
                                f"({', '.join(v.id for v in found)}); give more of the id")
        raise RegistryError(f"unknown model version {ref}; `rlrctl models` lists them")

    def list(self) -> list[ModelVersion]:
        """Every registered version, newest first."""
        versions = [parse_version(text(vid), raw)
                    for vid, raw in self.r.hgetall(keys.MODELS).items()]
        return sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True)

    def fetch(self, version_id: str) -> bytes:
        """The artifact's bytes, checked against the sha256 recorded at registration."""
        version = self.get(version_id)
        key = keys.artifact(version_id)
        n = self.r.hget(key, "n")
        if n is None:
            raise RegistryError(f"the artifact of {version_id} is missing from Redis (was the "
                                "server flushed?); register the .rlr file again")
        parts = self.r.hmget(key, [str(i) for i in range(int(n))])
        missing = [i for i, p in enumerate(parts) if p is None]
        if missing:
            raise RegistryError(f"the artifact of {version_id} lacks chunk(s) {missing}; it was "
                                "damaged in Redis: delete the version and register the file again")
        data = b"".join(parts)
        actual = hashlib.sha256(data).hexdigest()
        if actual != version.blob_sha256 or len(data) != version.size_bytes:
            raise RegistryError(
                f"the artifact of {version_id} fails its sha256 check ({actual[:16]} != "
                f"{version.blob_sha256[:16]}, {len(data)} bytes): it was damaged in Redis; "
                "delete the version and register the file again")
        return data

    def delete(self, version_id: str) -> None:
        """Remove a version no line uses (as production, previous, canary or shadow); a
        version whose record is corrupt can be removed too."""
        if self._record(version_id) is None:
            self.get(version_id)  # says it is unknown
        users = [f"{line} ({alias})" for line, alias in self.usage(version_id)]
        if users:
            raise RegistryError(f"{version_id} is in use on {', '.join(users)}; deploy another "
                                "version or `rlrctl undeploy` it first")
        self.r.hdel(keys.MODELS, version_id)
        self.r.delete(keys.artifact(version_id))

    def usage(self, version_id: str) -> list[tuple[str, str]]:
        """(line, alias) pairs that reference `version_id`."""
        out = []
        for line, ro in sorted(self.rollouts().items()):
            for alias in ("production", "canary", "shadow", "previous"):
                if getattr(ro, alias) == version_id:
                    out.append((line, alias))
        return out

    def _record(self, version_id: str) -> ModelVersion | None:
        raw = self.r.hget(keys.MODELS, version_id) if _ID.match(version_id) else None
        return None if raw is None else parse_version(version_id, raw)

    def _store(self, vid: str, data: bytes) -> None:
        staging = keys.artifact_upload(vid, uuid.uuid4().hex[:12])
        try:
            chunks = range(0, max(len(data), 1), self.chunk_bytes)
            for i, start in enumerate(chunks):
                pipe = self.r.pipeline(transaction=False)
                pipe.hset(staging, str(i), data[start : start + self.chunk_bytes])
                pipe.expire(staging, UPLOAD_TTL_S)
                pipe.execute()
            self.r.hset(staging, "n", len(chunks))
            self.r.rename(staging, keys.artifact(vid))
        except BaseException:
            self.r.delete(staging)
            raise

    # ------------------------------------------------------------------ rollouts

    def rollout(self, line: str) -> Rollout:
        """The line's rollout; an unreadable record comes back with `corrupt` set (and its
        plain `revision` field, if readable) rather than as an error, so the CLI can show
        and repair it and workers keep serving."""
        raw, revision = self.r.hmget(keys.alias(line), "rollout", "revision")
        return parse_rollout(line, raw, revision)

    def last_good_rollout(self, line: str) -> Rollout | None:
        """The newest readable rollout in the line's history (to repair a corrupt record)."""
        for entry in self.history(line, HISTORY_MAXLEN):
            try:
                return Rollout.from_json({**entry["rollout"], "line": line, "corrupt": None})
            except ValueError:
                continue
        return None

    def rollouts(self) -> dict[str, Rollout]:
        """Every line that has a rollout."""
        lines = {text(k).split("{", 1)[1].rsplit("}", 1)[0]
                 for k in self.r.scan_iter(match=keys.ALIAS_PATTERN, count=500)}
        return {line: self.rollout(line) for line in sorted(lines)}

    def deploy(self, line: str, version_id: str, *, mode: str = "production",
               cameras: list[str] | None = None, percent: float | None = None, by: str,
               why: str = "") -> Rollout:
        """Make `version_id` the line's production, canary or shadow model."""
        if mode not in MODES:
            raise RegistryError(f"deploy mode {mode!r} unknown; use one of {', '.join(MODES)}")
        self.get(version_id)
        if mode != "canary" and (cameras or percent is not None):
            raise RegistryError("--cameras / --percent only go with --canary")
        if mode == "canary":
            cameras, percent = _canary_scope(cameras, percent)

        def change(ro: Rollout) -> Rollout:
            if mode == "production":
                if ro.production == version_id:
                    raise RegistryError(f"{version_id} is already production on line {line}")
                return drop_alias(dataclasses.replace(ro, production=version_id,
                                                 previous=ro.production or ro.previous),
                             version_id)
            if ro.production == version_id:
                raise RegistryError(f"{version_id} is production on line {line}; a {mode} must "
                                    "be another version")
            if mode == "shadow":
                return dataclasses.replace(ro, shadow=version_id)
            if ro.production is None:
                raise RegistryError(f"line {line} has no production model for the other "
                                    "cameras; deploy one first: rlrctl deploy MODEL --line "
                                    f"{line}")
            return dataclasses.replace(ro, canary=version_id, canary_cameras=cameras,
                                       canary_percent=percent)

        action = "deploy" if mode == "production" else f"deploy_{mode}"
        return self._update(line, change, action, version_id, by, why)

    def promote(self, line: str, *, by: str, why: str = "") -> Rollout:
        """Canary → production (the old production becomes `previous`); the canary ends."""
        promoted: list[str] = []

        def change(ro: Rollout) -> Rollout:
            if ro.canary is None:
                raise RegistryError(f"line {line} has no canary to promote; deploy one with "
                                    f"rlrctl deploy MODEL --line {line} --canary --percent 10")
            promoted.append(ro.canary)
            return drop_alias(dataclasses.replace(ro, production=ro.canary,
                                             previous=ro.production or ro.previous),
                         ro.canary)

        return self._update(line, change, "promote", lambda: promoted[-1], by, why)

    def rollback(self, line: str, *, by: str, why: str = "") -> Rollout:
        """Production ← previous; the rolled-back version becomes `previous`."""
        restored: list[str] = []

        def change(ro: Rollout) -> Rollout:
            if ro.previous is None:
                raise RegistryError(f"line {line} has no previous production to roll back to; "
                                    "deploy a version instead")
            restored.append(ro.previous)
            return drop_alias(dataclasses.replace(ro, production=ro.previous,
                                             previous=ro.production), ro.previous)

        return self._update(line, change, "rollback", lambda: restored[-1], by, why)

    def clear(self, line: str, alias: str, *, by: str, why: str = "") -> Rollout:
        """End the line's canary or shadow."""
        if alias not in ("canary", "shadow"):
            raise RegistryError(f"cannot clear {alias!r}: only canary and shadow can be "
                                "removed; change production with deploy or rollback")
        cleared: list[str] = []

        def change(ro: Rollout) -> Rollout:
            if getattr(ro, alias) is None:
                raise RegistryError(f"line {line} has no {alias}")
            cleared.append(getattr(ro, alias))
            if alias == "shadow":
                return dataclasses.replace(ro, shadow=None)
            return dataclasses.replace(ro, canary=None, canary_cameras=[], canary_percent=0.0)

        return self._update(line, change, f"clear_{alias}", lambda: cleared[-1], by, why)

    def history(self, line: str, count: int = 50) -> list[dict]:
        """The line's rollout changes, newest first (unreadable entries are passed over)."""
        out = []
        for entry_id, fields in self.r.xrevrange(keys.rollouts(line), count=count):
            f = {text(k): text(v) for k, v in fields.items()}
            try:
                rollout = json.loads(f.get("rollout") or "{}")
                out.append({"id": text(entry_id), "ts": float(f.get("ts", 0)),
                            "by": f.get("by", ""), "why": f.get("why", ""),
                            "action": f.get("action", ""), "version": f.get("version") or None,
                            "revision": int(f.get("revision", 0)),
                            "rollout": rollout if isinstance(rollout, dict) else {}})
            except ValueError:
                continue
        return out

    def _update(self, line: str, change, action: str, version, by: str, why: str) -> Rollout:
        """Apply `change` to the line's rollout atomically (optimistic WATCH/MULTI), record
        it in the history and announce it."""
        if not _LINE.match(line):
            raise RegistryError(f"{line!r} is not a valid line name: use 1-64 letters, digits, "
                                "'_', '.' or '-'")
        key = keys.alias(line)
        with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    old = parse_rollout(line, *pipe.hmget(key, "rollout", "revision"))
                    what_done = action
                    if old.corrupt:
                        # Repair: start from the newest readable state in the history.
                        good = self.last_good_rollout(line) or Rollout(line)
                        old = dataclasses.replace(good, revision=max(good.revision,
                                                                     old.revision))
                        what_done = f"{action} (repaired a corrupt record)"
                    new = dataclasses.replace(change(old), line=line, revision=old.revision + 1,
                                              updated_at=time.time(), updated_by=by, corrupt=None)
                    what = version() if callable(version) else version
                    pipe.multi()
                    _write_rollout(pipe, key, new)
                    pipe.xadd(keys.rollouts(line), {
                        "ts": repr(new.updated_at), "by": by, "why": why, "action": what_done,
                        "version": what or "", "revision": new.revision,
                        "rollout": json.dumps(new.to_json(), sort_keys=True)},
                        maxlen=HISTORY_MAXLEN, approximate=True)
                    pipe.execute()
                    # After the transaction: Redis Cluster refuses PUBLISH inside one. Workers
                    # also poll revisions, so a lost announcement only delays the swap.
                    self.r.publish(NOTIFY_CHANNEL, line)
                    return new
                except redis.WatchError:
                    continue


def _write_rollout(pipe, key: str, ro: Rollout) -> None:
    plain = {"production": ro.production, "canary": ro.canary, "shadow": ro.shadow}
    pipe.hset(key, mapping={"rollout": json.dumps(ro.to_json(), sort_keys=True),
                            "revision": ro.revision,
                            **{k: v for k, v in plain.items() if v is not None}})
    gone = [k for k, v in plain.items() if v is None]
    if gone:
        pipe.hdel(key, *gone)


def _canary_scope(cameras: list[str] | None, percent: float | None) -> tuple[list[str], float]:
    if (not cameras) == (percent is None):
        raise RegistryError("a canary needs exactly one of: a camera list (--cameras a,b) or a "
                            "share of cameras (--percent 10)")
    if cameras:
        names = [c.strip() for c in cameras]
        if any(not c for c in names):
            raise RegistryError(f"empty camera name in {cameras}; give names like cam1,cam2")
        return sorted(set(names)), 0.0
    if not 0.0 < float(percent) <= 100.0:
        raise RegistryError(f"canary percent {percent} must be in (0, 100], e.g. 10")
    return [], float(percent)
