"""A line under test for the fault-injection suite: a private Redis (embedded, own port), a real
worker process, frames pushed with known ids, and a ledger that says, for every frame sent,
whether it got exactly one result, a dead letter with a reason, or nothing."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from daemon.line.embedded import EmbeddedRedis
from daemon.line.producer import push_images
from daemon.wire import heartbeat, keys
from daemon.wire.schema import DeadLetter, Result
from tests.integration.procs import Proc, daemon_env, wait_for

# Fast timings, so faults play out in seconds: a frame idle 1.5 s is taken over, a stalled
# loop or reader is reported after 5 s, Redis calls time out after 2 s.
CHAOS_SETTINGS = {"claim_idle_ms": 1500, "claim_interval_s": 0.3, "max_deliveries": 3,
                  "stall_s": 5, "heartbeat_s": 0.5, "heartbeat_ttl_s": 3,
                  "redis_timeout_s": 2, "block_ms": 200, "batch_size": 4}


@dataclass
class Figures:
    scenario: str
    sent: int = 0
    scored: int = 0
    dead: int = 0
    lost: int = 0
    twice: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    note: str = ""


class ChaosLine:
    """One scenario's Redis, worker and ledger. `url` may point through a proxy."""

    def __init__(self, tmp: Path, model: Path, *, aof: bool = True, workdir: Path | None = None,
                 maxmemory_mb: int = 512, fsync: str = "always") -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.line = f"c{uuid.uuid4().hex[:8]}"
        self.server = EmbeddedRedis(workdir or tmp / "redis", port=0, aof=aof,
                                    maxmemory_mb=maxmemory_mb, fsync=fsync).start()
        self.url = self.server.url
        self.client = redis.Redis.from_url(self.url, socket_timeout=5)
        self.sent: list[str] = []
        self.worker: Proc | None = None
        self.worker_name = "chaos-worker"

    # ------------------------------------------------------------------ processes

    def start_worker(self, url: str | None = None, model: Path | str | None = "default",
                     **settings) -> Proc:
        model_path = self.model if model == "default" else model
        env = daemon_env(url or self.url, self.line, consumer=self.worker_name,
                         model=model_path, **{**CHAOS_SETTINGS, **settings})
        self.worker = Proc(["worker"], env, self.tmp / f"{self.worker_name}.log")
        return self.worker

    def wait_status(self, *statuses: str, timeout: float = 90) -> dict:
        """The worker's heartbeat once its status is one of `statuses`."""
        def beat():
            b = self.heartbeat()
            return b if b is not None and b.get("status") in statuses else None
        return wait_for(beat, timeout, f"worker status in {statuses}",
                        (self.worker,) if self.worker else ())

    def heartbeat(self) -> dict | None:
        try:
            raw = self.client.get(keys.worker(self.worker_name))
        except redis.RedisError:
            return None
        return None if raw is None else json.loads(raw)

    def probe(self, live: bool = False) -> tuple[bool, str]:
        """What `rlrctl check --worker NAME` decides, right now (False when Redis is away)."""
        try:
            beats = heartbeat.read_heartbeats(self.client)
        except redis.RedisError as exc:
            return False, f"redis: {exc}"
        ok, _, verdict = heartbeat.check(beats, worker=self.worker_name, live=live)
        return ok, verdict

    def stop(self) -> None:
        if self.worker is not None and self.worker.alive():
            self.worker.stop()
        self.client.close()
        self.server.stop()

    # ------------------------------------------------------------------ frames

    def push(self, frames: list[bytes], camera: str = "cam") -> list[str]:
        ids = push_images(self.client, self.line, camera, frames, encoding="jpeg")
        self.sent += ids
        return ids

    def results(self) -> list[Result]:
        return [Result.from_fields(f) for _, f in self.client.xrange(keys.results(self.line))]

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_fields(f) for _, f in self.client.xrange(keys.dlq(self.line))]

    def pending(self) -> int:
        try:
            return int(self.client.xpending(keys.frames(self.line), "rlr-workers")["pending"])
        except redis.ResponseError:
            return 0

    def settled(self, ids: list[str] | None = None) -> bool:
        """Every frame of `ids` (default: all sent) has a result or a dead letter, and the
        group holds nothing pending."""
        want = set(self.sent if ids is None else ids)
        done = {r.frame_id for r in self.results()} | \
            {d.original.get("frame_id") for d in self.dead_letters()}
        return want <= done and self.pending() == 0

    def wait_settled(self, ids: list[str] | None = None, timeout: float = 60) -> None:
        wait_for(lambda: self.settled(ids), timeout, "every frame scored or dead-lettered",
                 (self.worker,) if self.worker else ())

    def figures(self, scenario: str, ids: list[str] | None = None, note: str = "") -> Figures:
        """Ledger of `ids` (default: all sent): scored once, dead-lettered, lost, twice."""
        want = list(self.sent if ids is None else ids)
        counts: dict[str, int] = {}
        for r in self.results():
            counts[r.frame_id] = counts.get(r.frame_id, 0) + 1
        dead = {d.original.get("frame_id"): d.reason for d in self.dead_letters()}
        fig = Figures(scenario, sent=len(want), note=note)
        for fid in want:
            if counts.get(fid):
                fig.scored += 1
                fig.twice += counts[fid] > 1
            elif fid in dead:
                fig.dead += 1
                fig.reasons[dead[fid]] = fig.reasons.get(dead[fid], 0) + 1
            else:
                fig.lost += 1
        return fig


def wait_until(pred, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
