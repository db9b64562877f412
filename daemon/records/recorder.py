"""`rlrctl recorder`: every result (and part verdict) of the lines, written to the records.

It reads `rlr:results:{line}` and, on lines that have them, `rlr:parts:{line}` and the
recipe log `rlr:recipe:log:{line}` (every recipe switch: the audit trail), in its own
consumer group (`rlr-recorder`), writes what it read in one transaction per batch and
acknowledges the entries only after the commit. A recorder killed anywhere re-reads what it
had not acknowledged (its own pending entries at start, a dead recorder's after
RLR_RECORDS_CLAIM_IDLE_MS), and the tables' natural keys turn a second write into nothing: at
least once from Redis plus idempotent writes is exactly once in the database.

A database that goes away is waited for with backoff, the batch held (nothing acknowledged,
nothing read further: the stream keeps the entries), counted in `db_outages` and shown as
state `degraded` in the recorder's presence hash `rlr:recorders:{name}`. Entries the stream
lost before they were recorded are an error in the log and counted in `trimmed_unrecorded`.

Before a batch is written, the pictures of its rejected frames and of a sample of passes are
kept under RLR_RECORDS_DIR/pictures (`keeper`); a folder that cannot take them makes the
recorder degraded too (the `problem` field says why) while rows go on being written. Every
RLR_RECORDS_PRUNE_EVERY_S the retention runs (`retention.prune`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from daemon import logs
from daemon.errors import RecordsUnavailable
from daemon.records.keeper import PictureKeeper
from daemon.records.pictures import Pictures
from daemon.records.retention import prune
from daemon.records.rows import Unreadable, frame_row, part_row, recipe_row
from daemon.records.settings import RecordsSettings
from daemon.records.store import Store, Written, now_ms
from daemon.records.watch import trim_check
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away, is_cluster
from daemon.wire.groups import Cmd, ConsumerGroup, Delivery, one, run_sync

log = logs.get(__name__)

PRESENCE_TTL_S = 30
_CHECK_EVERY_S = 5.0
_ROW = {"results": frame_row, "parts": part_row, "recipes": recipe_row}


def presence_key(consumer: str) -> str:
    return f"{keys.PREFIX}:recorders:{consumer}"


@dataclass
class RecorderStats:
    state: str = "starting"  # ok | degraded (database away) | stopped
    frames: int = 0  # frame results written (new rows)
    parts: int = 0  # part verdicts written (new rows)
    recipes: int = 0  # recipe switches written (new rows)
    duplicates: int = 0  # entries already in the database (written before, acked after)
    unreadable: int = 0  # entries that are not results / verdicts (logged, acknowledged)
    db_outages: int = 0  # times the database went away
    db_retries: int = 0  # batch writes retried while it was away
    trimmed_unrecorded: int = 0  # entries the stream lost before they were recorded
    backlog: int = 0  # entries of the streams not yet read (last check)
    pictures: int = 0  # frames whose picture was kept
    pictures_missing: int = 0  # frames to keep that the frames stream no longer held
    pictures_skipped: int = 0  # frames to keep while the pictures folder could not be written
    pruned_rows: int = 0  # rows deleted by the retention
    pruned_pictures: int = 0  # pictures deleted by the retention
    problem: str = ""  # why the state is degraded
    last_write: float = 0.0  # time.time() of the last batch committed (0: none yet)


class Recorder:
    """Reads the lines' streams in the recorder group and writes them to `store`."""

    def __init__(self, client, store: Store, lines: Sequence[str],
                 settings: RecordsSettings | None = None) -> None:
        self.client, self.store, self.lines = client, store, list(lines)
        self.settings = settings or RecordsSettings()
        self.stats = RecorderStats()
        self.stop = threading.Event()
        # stream key -> (results | parts | recipes, line)
        self._kind: dict[str, tuple[str, str]] = {}
        self.group = self._group()
        self._checked = 0.0
        self._lost_seen: dict[str, int] = {}  # stream key -> loss already counted
        self._backoff = Backoff(0.2, 10.0)
        self._db_away = ""
        self.pictures = Pictures(self.settings.pictures_dir)
        self.keeper = PictureKeeper(client, self.pictures, self.settings.records_keep_pass,
                                    self.stats)
        self._pruned_at: float | None = None  # monotonic time of the last retention run

    @property
    def db_away(self) -> str:
        """Why the database is being waited for ("" while it answers)."""
        return self._db_away

    # ------------------------------------------------------------------ streams and group

    def _group(self) -> ConsumerGroup:
        for line in self.lines:
            self._kind[keys.results(line)] = ("results", line)
        self._find_parts_streams()
        return ConsumerGroup(self.settings.records_group, self.settings.recorder_consumer,
                             {key: key for key in self._kind}, start_id="0",
                             cluster=is_cluster(self.client))

    def _find_parts_streams(self) -> bool:
        """Join the parts streams and recipe logs that exist now (never creating one); whether
        any is new."""
        new = False
        for line in self.lines:
            for kind, key in (("parts", keys.parts(line)), ("recipes", keys.recipe_log(line))):
                if key not in self._kind and self._redis(lambda key=key: one(Cmd("exists",
                                                                                  (key,)))):
                    self._kind[key] = (kind, line)
                    new = True
        return new

    def _redis(self, op):
        """Run `op`, waiting out a Redis that is away (until stopped)."""
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                return run_sync(self.client, op() if callable(op) else op)
            except Exception as exc:
                if not away(exc) or self.stop.is_set():
                    raise
                log.warning("redis_unavailable", error=str(exc))
                self.stop.wait(backoff.next())

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Record until `stop` is set (SIGTERM): the batch in flight is written and acked."""
        try:
            self.start()
            while not self.stop.is_set():
                self.step(self.settings.records_block_ms)
        finally:
            self.stats.state = "stopped"
            self._publish_presence()

    def start(self) -> None:
        """Create the group, then finish this consumer's own unacknowledged entries."""
        self._redis(self.group.ensure)
        while not self.stop.is_set():
            claimed = self._redis(lambda: self.group.pending_own(self.settings.records_batch))
            self._lost(claimed.trimmed)
            if not claimed.deliveries:
                break
            self.record(claimed.deliveries)
        self._set_state()
        self._publish_presence()

    def _set_state(self) -> None:
        problems = [p for p in (self._db_away, self.keeper.error) if p]
        self.stats.state = "degraded" if problems else "ok"
        self.stats.problem = "; ".join(problems)

    def step(self, block_ms: int | None) -> int:
        """Read one batch (waiting up to `block_ms`) and record it; entries recorded."""
        self._every_few_seconds()
        batch = self._redis(lambda: self.group.read(self.settings.records_batch, block_ms))
        if batch:
            self.record(batch)
        return len(batch)

    def run_until_idle(self) -> int:
        """Record everything there is now, then return (tests, benchmarks); entries read."""
        self.start()
        total = 0
        while n := self.step(None):
            total += n
        return total

    # ------------------------------------------------------------------ recording

    def record(self, batch: Sequence[Delivery]) -> None:
        """Write `batch` (waiting for the database as long as it takes), then ack it."""
        rows: dict[str, list[dict]] = {"results": [], "parts": [], "recipes": []}
        keep: dict[str, list[tuple[dict, object]]] = {}  # line -> rows whose pictures to keep
        recorded = now_ms()
        for d in batch:
            kind, line = self._kind[d.stream]
            try:
                row = _ROW[kind](line, d.entry_id, d.fields, recorded)
            except Unreadable as exc:
                self.stats.unreadable += 1
                log.error("entry_unreadable", stream=d.stream, entry=d.entry_id,
                          reason=str(exc))
                continue
            rows[kind].append(row)
            if kind == "results" and self.keeper.wanted(row):
                keep.setdefault(line, []).append((row, d.fields))
        for line, items in keep.items():
            self.keeper.keep(line, items)
        self._set_state()
        new = self._write(rows["results"], rows["parts"], rows["recipes"])
        self.stats.frames += new.frames
        self.stats.parts += new.parts
        self.stats.recipes += new.recipes
        self.stats.duplicates += sum(map(len, rows.values())) - sum(new)
        # ack only after the commit: a recorder killed in between writes the batch again,
        # and the natural keys make that second write a no-op
        self._redis(lambda: self.group.ack(batch))

    def _write(self, frames: list[dict], parts: list[dict], recipes: list[dict]) -> Written:
        outage = False
        while True:
            try:
                written = self.store.write_batch(frames, parts, recipes)
            except RecordsUnavailable as exc:
                if not outage:
                    outage = True
                    self.stats.db_outages += 1
                    self._db_away = str(exc)
                    self._set_state()
                    log.error("records_database_away", error=str(exc),
                              held=len(frames) + len(parts))
                self.stats.db_retries += 1
                self._every_few_seconds()
                # a stop request does not drop the batch: it stays pending in Redis
                if self.stop.wait(self._backoff.next()):
                    raise
                continue
            if outage:
                log.info("records_database_back", retries=self.stats.db_retries)
                self._db_away = ""
                self._set_state()
            self._backoff.reset()
            self.stats.last_write = time.time()
            return written

    # ------------------------------------------------------------------ watching

    def _every_few_seconds(self) -> None:
        now = time.monotonic()
        if now - self._checked < _CHECK_EVERY_S:
            return
        self._checked = now
        if self._find_parts_streams():
            self.group = self._group()
            self._redis(self.group.ensure)
        self._check_trim()
        self._claim_stale()
        self._retention(now)
        self._publish_presence()

    def _retention(self, now: float) -> None:
        """Apply the retention every RLR_RECORDS_PRUNE_EVERY_S (the first time at the first
        check after start); a failure is logged and tried again next time."""
        if self._db_away or (self._pruned_at is not None and
                             now - self._pruned_at < self.settings.records_prune_every_s):
            return
        self._pruned_at = now
        try:
            report = prune(self.store, self.pictures, self.settings)
        except Exception as exc:
            log.error("records_retention_failed", error=f"{type(exc).__name__}: {exc}")
            return
        self.stats.pruned_rows += report.rows
        self.stats.pruned_pictures += report.pictures
        if report.rows or report.rollup_rows:
            log.info("records_pruned", **report._asdict())

    def _check_trim(self) -> None:
        backlog = 0
        for key in self._kind:
            try:
                state = run_sync(self.client, trim_check(key, self.settings.records_group))
            except Exception as exc:
                log.warning("trim_check_failed", stream=key, error=str(exc))
                continue
            # the same loss shows at every check until the group reads past it: count it once
            new = max(state.lost - self._lost_seen.get(key, 0), 0)
            self._lost_seen[key] = state.lost
            if new:
                self.stats.trimmed_unrecorded += new
                log.error("entries_trimmed_unrecorded", stream=key, lost=new,
                          fix="the recorder fell behind the stream's MAXLEN: keep the "
                              "database up, or raise the stream's length")
            if state.backlog is not None:
                backlog += state.backlog
                if state.length >= 100 and state.backlog >= 0.8 * state.length:
                    log.warning("recorder_behind_stream", stream=key, backlog=state.backlog,
                                length=state.length)
        self.stats.backlog = backlog

    def _claim_stale(self) -> None:
        """Entries another recorder (another name) took and never acknowledged."""
        if self.stats.state == "degraded":
            return
        claimed = self._redis(lambda: self.group.claim_stale(
            self.settings.records_claim_idle_ms, self.settings.records_batch))
        self._lost(claimed.trimmed)
        if claimed.deliveries:
            self.record(claimed.deliveries)

    def _lost(self, trimmed: Sequence[Delivery]) -> None:
        if not trimmed:
            return
        self.stats.trimmed_unrecorded += len(trimmed)
        log.error("entries_trimmed_unrecorded", lost=len(trimmed),
                  first=trimmed[0].entry_id, fix="pending entries left the stream before "
                  "they were recorded")
        self._redis(lambda: self.group.ack(trimmed))

    def _publish_presence(self) -> None:
        fields = {k: str(v) for k, v in asdict(self.stats).items()}
        fields.update(ts=repr(time.time()), lines=",".join(self.lines),
                      database=self.store.shown_url)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(presence_key(self.settings.recorder_consumer), mapping=fields)
            pipe.expire(presence_key(self.settings.recorder_consumer), PRESENCE_TTL_S)
            pipe.execute()
        except Exception as exc:
            if not away(exc):
                raise
