"""What a worker serves, and how it follows model rollouts without stopping.

`ServingSet` is an immutable snapshot: per line the rollout (production / canary / shadow)
and the loaded models. `ModelWatcher` polls on its own (supervised) thread: it wakes on a
rollout notification (pub/sub, another thread) or every `RLR_ROLLOUT_POLL_S`, and when a line's
rollout changed it fetches the new versions from the registry, verifies (sha256), loads and
warms them up off the inference path, then hands a new snapshot to the worker, which swaps it
in between batches. A version that fails any step is refused on this worker (reported in the
heartbeat) and the previous snapshot keeps serving. Versions no longer referenced are released.

A rollout record that vanished (a Redis restart without persistence) or is corrupt does not
stop a line: the worker keeps serving the revision it has and says so in its heartbeat
(`rollout_warnings`) until a new `rlrctl deploy`.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
import torch

from daemon import logs
from daemon.models.registry import NOTIFY_CHANNEL, Registry
from daemon.serve.served_model import EngineChoice, ServedModel, pick_device
from daemon.wire.clients import away
from rlr.artifact import load_artifact_bytes

log = logs.get("rlr.serving")


@dataclass(frozen=True)
class ServingSet:
    static: ServedModel | None  # RLR_MODEL: serves lines that have no rollout
    rollouts: dict = field(default_factory=dict)  # line -> Rollout
    models: dict = field(default_factory=dict)  # version id -> ServedModel

    def model_for(self, line: str, camera: str) -> ServedModel | None:
        rollout = self.rollouts.get(line)
        if rollout is not None and rollout.production is not None:
            return self.models.get(rollout.route(camera))
        # a line without a rollout: RLR_MODEL, else the worker's main model
        return self.static or self.primary

    def shadow_for(self, line: str) -> ServedModel | None:
        rollout = self.rollouts.get(line)
        return None if rollout is None or rollout.shadow is None else \
            self.models.get(rollout.shadow)

    @property
    def primary(self) -> ServedModel | None:
        """The served model that sets the decode size and names the worker's model in health."""
        for rollout in self.rollouts.values():
            if rollout.production in self.models:
                return self.models[rollout.production]
        return self.static

    def versions(self) -> list[str]:
        out = sorted(self.models)
        if self.static is not None:
            out.append(self.static.version)
        return out

    def manifests(self) -> dict[str, dict]:
        """Version -> manifest of every served model in this snapshot."""
        out = {v: e.manifest for v, e in self.models.items()}
        if self.static is not None:
            out[self.static.version] = self.static.manifest
        return out

    def revisions(self) -> dict[str, int]:
        return {line: r.revision for line, r in self.rollouts.items()}


class ModelWatcher:
    """Follows the lines' rollouts; calls `publish(new_set)` when a new snapshot is ready.
    `poll` and `listen` are loops for two threads (the worker supervises them) until `stop`."""

    def __init__(self, client: redis.Redis, lines: list[str], initial: ServingSet,
                 publish: Callable[[ServingSet], None], device: str, choice: EngineChoice,
                 poll_s: float) -> None:
        self.client = client
        self.registry = Registry(client)
        self.lines = lines
        self.current = initial
        self.publish = publish
        self.device = pick_device(device)
        self.choice = choice
        self.poll_s = poll_s
        self.errors: dict[str, str] = {}  # version -> why it was refused here
        self.warnings: dict[str, str] = {}  # line -> why its rollout record is not followed
        self._refused: dict[str, object] = {}  # line -> the rollout refused (not retried)
        self.stopped = threading.Event()
        self._wake = threading.Event()
        self.beat: Callable[[str], None] = lambda name: None  # progress report (supervisor)

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def poll(self) -> None:
        """Re-check the rollouts on every wake-up and every `poll_s`, until stopped. Redis
        being away is waited out here; any other error ends the loop (and is supervised)."""
        while not self.stopped.is_set():
            try:
                self.refresh()
            except Exception as exc:
                if not away(exc):
                    raise
                log.warning("rollout_check_failed", error=str(exc))
            self.beat("rollouts")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def listen(self) -> None:
        """Pub/sub wake-ups; the poll covers messages missed while disconnected."""
        while not self.stopped.is_set():
            try:
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(NOTIFY_CHANNEL)
                while not self.stopped.is_set():
                    msg = pubsub.get_message(timeout=1.0)
                    self.beat("rollout_notify")
                    if msg and msg.get("data", b"").decode(errors="replace") in self.lines:
                        self._wake.set()
            except Exception as exc:
                if not away(exc):
                    raise
                self.stopped.wait(1.0)

    def refresh(self) -> ServingSet | None:
        """Apply changed rollouts; returns the new snapshot, or None when nothing changed.

        Per line: a new revision is taken only when every version it names loaded here;
        otherwise the line keeps its current rollout and that revision is not retried.
        """
        models = dict(self.current.models)
        rollouts = {}
        for line in self.lines:
            latest = self.registry.rollout(line)
            current = self.current.rollouts.get(line)
            if latest.corrupt or latest.production is None:
                self._note(line, latest, current)
                if current is not None:
                    rollouts[line] = current  # keep serving what this worker has
                continue  # never had one: RLR_MODEL serves the line
            self.warnings.pop(line, None)
            if current == latest:
                rollouts[line] = current
                continue
            if self._refused.get(line) == latest or not self._load_all(latest, models):
                self._refused[line] = latest
                if current is not None:
                    rollouts[line] = current
                continue
            rollouts[line] = latest
        if rollouts == self.current.rollouts:
            return None
        needed = set().union(*(r.versions() for r in rollouts.values())) if rollouts else set()
        released = sorted(set(models) - needed)
        new = ServingSet(self.current.static, rollouts,
                         {v: e for v, e in models.items() if v in needed})
        self.current = new
        self.publish(new)
        log.info("rollout_applied", revisions=new.revisions(), loaded=sorted(new.models),
                 released=released)
        if released:
            _release()
        return new

    def _note(self, line: str, latest, current) -> None:
        if current is None and not latest.corrupt:
            return
        why = (f"rollout record corrupt ({latest.corrupt})" if latest.corrupt
               else "rollout record missing (did Redis restart without persistence?)")
        note = (f"{why}; keeping revision {current.revision} ({current.production}) until "
                "the next `rlrctl deploy`" if current is not None
                else f"{why}; repair it with `rlrctl deploy MODEL --line {line}`")
        if self.warnings.get(line) != note:
            self.warnings[line] = note
            log.warning("rollout_record_unusable", line=line, note=note)

    def _load_all(self, rollout, models: dict) -> bool:
        for version in sorted(rollout.versions() - set(models)):
            served = self._load(version)
            if served is None:
                log.error("rollout_refused", line=rollout.line, revision=rollout.revision,
                          version=version, error=self.errors[version],
                          note="this worker keeps serving the previous models")
                return False
            models[version] = served
        return True

    def _load(self, version: str) -> ServedModel | None:
        t0 = time.perf_counter()
        try:
            data = self.registry.fetch(version)  # verifies the sha256 of the bytes
            model, manifest = load_artifact_bytes(data, device=self.device,
                                                  source=f"model version {version}")
            served = ServedModel(model, manifest, self.device, self.choice, version=version)
            served.warm_up()
        except Exception as exc:
            if away(exc):
                raise
            self.errors[version] = f"{type(exc).__name__}: {exc}"
            return None
        self.errors.pop(version, None)
        log.info("model_version_loaded", version=version, device=str(self.device),
                 engine=served.engine_name, measured=served.measured or None,
                 seconds=round(time.perf_counter() - t0, 2))
        return served


def _release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.empty_cache()
