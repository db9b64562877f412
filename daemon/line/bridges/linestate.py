"""The line state the PLC and SCADA bridges serve (`modbus`, `opcua`, `sparkplug`):
per camera the last result, counters, the alerts not yet acknowledged and the camera's raised
health conditions, and per line the last part verdict and a count of verdicts, fed from
`rlr:results:{line}`, `rlr:alerts:{line}`, `rlr:health:{line}` and `rlr:parts:{line}`.

Each bridge kind reads through its own consumer group (`rlr-bridge-modbus`, `rlr-bridge-opcua`,
`rlr-bridge-sparkplug`) on the four streams; on results and parts the group starts at the
stream's end and the start reads each camera's last values from the latest results and the
line's last part verdict (which the part count does not include). Results, part verdicts and
health events are acknowledged once applied: the state is "the latest", and a client that reconnects
reads it from the server. An alert is acknowledged only when the PLC or operator acknowledges
it (the Modbus reset coil, the OPC UA Acknowledge method): until then it stays pending in the
group, so a bridge that restarts (or another one of its kind that claims it, `claim_idle_ms`
after the first died) latches it again. Latched alerts are touched every `claim_interval_s` so
no live bridge's latch is taken away. Acknowledgements are recorded in the hash
`rlr:alertack:{line}` (alert id -> JSON). Sparkplug, which has no acknowledge, acks alerts
once counted (`hold_alerts=False`).
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon import logs
from daemon.errors import SettingsError
from daemon.line.bridges.base import group_name
from daemon.line.settings import PlcBridgeSettings
from daemon.wire import keys
from daemon.wire.clients import connect_ready, is_cluster
from daemon.wire.groups import ConsumerGroup, Delivery, run_async
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import SCHEMA_MAJOR, SCHEMA_VERSION, Alert, HealthEvent, Result
from daemon.wire.settings import GroupSettings
from daemon.wire.text import entry_field, text

log = logs.get(__name__)

# A result older than this when it reaches the bridge (a replay after a restart, a backlog)
# updates the state but pulses nothing: a reject signal for a part long gone is wrong.
PULSE_MAX_AGE_S = 2.0
_R, _A, _H, _P = "results:", "alerts:", "health:", "parts:"
_PENDING_READ = 1000  # latched alerts re-read per line at start
_SEED = 200  # latest results read per line at start, for each camera's last values


@dataclass
class CameraState:
    line: str
    camera: str
    score: float | None = None
    threshold: float | None = None
    is_anomaly: bool | None = None
    frame_id: str = ""
    capture_ts: float = 0.0
    model_version: str = ""
    frames: int = 0
    alerts: int = 0
    latched: dict[str, Alert] = field(default_factory=dict)  # alert id -> alert, oldest first
    health: tuple[str, ...] = ()  # raised health kinds

    @property
    def verdict(self) -> str:
        return "none" if self.is_anomaly is None else "anomalous" if self.is_anomaly else "normal"


@dataclass
class PartState:
    """A line's last part verdict. `count`: verdicts read since the bridge started (the one
    loaded at start, from before, is not counted); `entry_id`: the verdict's stream entry."""

    line: str
    last: PartVerdict | None = None
    count: int = 0
    entry_id: str = ""

    @property
    def verdict(self) -> str:
        return "none" if self.last is None else self.last.verdict

    @property
    def outcome(self) -> str:
        return "none" if self.last is None else self.last.outcome


async def _maybe(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


class Listener:
    """What a bridge does when the state changes (called on the event loop; a method may be
    a coroutine function, it is awaited before the next entry is applied)."""

    def result(self, cam: CameraState, fresh: bool) -> None: ...

    def alert(self, cam: CameraState, alert: Alert) -> None: ...

    def cleared(self, cam: CameraState, alert_ids: Sequence[str]) -> None: ...

    def health(self, cam: CameraState) -> None: ...

    def part(self, state: PartState, fresh: bool) -> None:
        """A part verdict (`fresh`: just decided, not replayed or loaded at start)."""


def parse_cameras(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


class LineFeed:
    """Keeps `cameras[(line, camera)]` current from the streams (asyncio Redis client)."""

    def __init__(self, client, settings: GroupSettings, kind: str, lines: Sequence[str],
                 listener: Listener, cameras: Sequence[tuple[str, str]] = (), *,
                 hold_alerts: bool = True) -> None:
        self.client, self.settings, self.kind = client, settings, kind
        # hold_alerts=False (Sparkplug, which has no acknowledge): an alert is acked in the
        # group once published, like a result.
        self.hold_alerts = hold_alerts
        self.lines, self.listener = list(lines), listener
        self.group = group_name(kind)
        streams = {}
        for name in self.lines:
            streams.update({keys.results(name): _R + name, keys.alerts(name): _A + name,
                            keys.health(name): _H + name, keys.parts(name): _P + name})
        # Start id "0": no alert raised before the first bridge came up is missed; results
        # older than PULSE_MAX_AGE_S only set the state.
        self.reader = ConsumerGroup(self.group, settings.consumer_name, streams,
                                    cluster=is_cluster(client))
        # The results and parts groups start at the end: a first start does not replay a
        # stream of up to RLR_RESULTS_MAXLEN results; `start()` reads the latest ones instead.
        tails = {keys.results(n): _R + n for n in self.lines}
        tails.update({keys.parts(n): _P + n for n in self.lines})
        self.results_start = ConsumerGroup(self.group, settings.consumer_name, tails,
                                           start_id="$", cluster=is_cluster(client))
        self.cameras: dict[tuple[str, str], CameraState] = {}
        self.parts = {name: PartState(name) for name in self.lines}
        # A fixed list of (line, camera) (the Modbus map): other cameras are skipped.
        self.fixed = bool(cameras)
        for name, cam in cameras:
            self.cameras[(name, cam)] = CameraState(name, cam)
        self._deliveries: dict[tuple[str, str], Delivery] = {}  # (line, alert id) -> entry
        self._next_claim = 0.0
        self._seeded = False
        self._skipped: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        """Create the groups, load the latest results and camera health, re-latch alerts
        still pending."""
        for key in await run_async(self.client, self.results_start.ensure()):
            log.info("group_created", key=key, group=self.group)
        for key in await run_async(self.client, self.reader.ensure()):
            log.info("group_created", key=key, group=self.group)
        if not self._seeded:
            for name in self.lines:
                recent = await self.client.xrevrange(keys.results(name), count=_SEED)
                for _, fields in reversed(recent):
                    try:
                        await self._on_result(name, Result.from_fields(fields), replay=True,
                                              seed=True)
                    except (KeyError, ValueError, TypeError):
                        continue
                await self._seed_part(name)
            self._seeded = True
        for name in self.lines:
            raw = await self.client.hgetall(keys.camera_health(name))
            for cam_name, value in (raw or {}).items():
                cam = self.camera(name, text(cam_name))
                if cam is not None:
                    try:
                        cam.health = tuple(sorted(json.loads(value)))
                    except (ValueError, TypeError):
                        cam.health = ()
        own = await run_async(self.client, self.reader.pending_own(_PENDING_READ))
        await self._apply(own.deliveries, replay=True)
        await run_async(self.client, self.reader.ack(own.trimmed))

    async def _seed_part(self, line: str) -> None:
        for entry_id, fields in await self.client.xrevrange(keys.parts(line), count=1):
            try:
                part = PartVerdict.from_fields(fields)
            except (KeyError, ValueError, TypeError):
                continue
            await self._on_part(line, part, text(entry_id), replay=True, seed=True)

    def camera(self, line: str, name: str) -> CameraState | None:
        cam = self.cameras.get((line, name))
        if cam is None and not self.fixed:
            cam = self.cameras[(line, name)] = CameraState(line, name)
        if cam is None and (line, name) not in self._skipped:
            self._skipped.add((line, name))
            log.warning("camera_not_mapped", line=line, camera=name,
                        hint="restart the bridge with the camera in --camera / RLR_PLC_CAMERAS")
        return cam

    # ------------------------------------------------------------------ one round
    async def step(self, block_ms: int) -> int:
        """One read of new entries (plus claims when due); how many were applied."""
        n = 0
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self.settings.claim_interval_s
            await run_async(self.client, self.reader.touch(list(self._deliveries.values())))
            claimed = await run_async(self.client, self.reader.claim_stale(
                self.settings.claim_idle_ms, 64))
            await run_async(self.client, self.reader.ack(claimed.trimmed))
            n += await self._apply(claimed.deliveries, replay=True)
        batch = await run_async(self.client, self.reader.read(256, block_ms))
        return n + await self._apply(batch, replay=False)

    async def _apply(self, batch: list[Delivery], replay: bool) -> int:
        done: list[Delivery] = []
        for d in batch:
            kind, line = d.stream.split(":", 1)
            version = (entry_field(d.fields, "v") or "").split(".")[0]
            try:
                if version.split(".")[0] != SCHEMA_MAJOR:
                    raise ValueError(f"schema v={version!r}, this bridge reads "
                                     f"v={SCHEMA_VERSION}")
                if kind + ":" == _A:
                    if await self._on_alert(line, Alert.from_fields(d.fields), d):
                        continue  # stays pending until acknowledged
                elif kind + ":" == _R:
                    await self._on_result(line, Result.from_fields(d.fields), replay)
                elif kind + ":" == _P:
                    await self._on_part(line, PartVerdict.from_fields(d.fields), d.entry_id,
                                        replay)
                else:
                    await self._on_health(line, HealthEvent.from_fields(d.fields))
            except (KeyError, ValueError, TypeError) as exc:
                # Skipped, not dead-lettered: the state is "the latest", the entry stays in
                # its stream and the alert bridges report malformed alerts.
                log.warning("entry_skipped", stream=d.stream, entry=d.entry_id,
                            error=f"{type(exc).__name__}: {exc}")
            done.append(d)
        if done:
            await run_async(self.client, self.reader.ack(done))
        return len(batch)

    async def _on_result(self, line: str, r: Result, replay: bool, seed: bool = False) -> None:
        cam = self.camera(line, r.camera)
        if cam is None or (r.frame_id, r.capture_ts) == (cam.frame_id, cam.capture_ts):
            return  # the group re-delivered what the start read as the latest
        cam.score, cam.threshold, cam.is_anomaly = r.score, r.threshold, r.is_anomaly
        cam.frame_id, cam.capture_ts, cam.model_version = r.frame_id, r.capture_ts, r.model_version
        cam.frames += 0 if seed else 1
        fresh = not replay and time.time() - r.capture_ts - r.latency_ms / 1000 \
            < PULSE_MAX_AGE_S
        await _maybe(self.listener.result(cam, fresh))

    async def _on_part(self, line: str, p: PartVerdict, entry_id: str, replay: bool,
                       seed: bool = False) -> None:
        state = self.parts[line]
        if entry_id == state.entry_id:
            return  # the group re-delivered what the start read as the latest
        state.last, state.entry_id = p, entry_id
        state.count += 0 if seed else 1
        fresh = not replay and time.time() - p.ts < PULSE_MAX_AGE_S
        await _maybe(self.listener.part(state, fresh))

    async def _on_alert(self, line: str, a: Alert, d: Delivery) -> bool:
        cam = self.camera(line, a.camera)
        if cam is None:
            return False
        if not self.hold_alerts:
            cam.alerts += 1
            await _maybe(self.listener.alert(cam, a))
            return False
        if a.alert_id not in cam.latched:
            cam.alerts += 1
            cam.latched[a.alert_id] = a
            await _maybe(self.listener.alert(cam, a))
        self._deliveries[(line, a.alert_id)] = d
        return True

    async def _on_health(self, line: str, e: HealthEvent) -> None:
        cam = self.camera(line, e.camera)
        if cam is None:
            return
        kinds = set(cam.health)
        (kinds.add if e.state == "raised" else kinds.discard)(e.kind)
        cam.health = tuple(sorted(kinds))
        await _maybe(self.listener.health(cam))

    # ------------------------------------------------------------------ acknowledge
    async def acknowledge(self, line: str, camera: str, alert_ids: Sequence[str] | None,
                          by: str, comment: str = "") -> list[str]:
        """Acknowledge latched alerts of a camera (all of them when `alert_ids` is None):
        record who and when, ack the stream entries, clear the latch; the ids cleared."""
        cam = self.cameras.get((line, camera))
        if cam is None:
            return []
        ids = [i for i in (cam.latched if alert_ids is None else alert_ids) if i in cam.latched]
        if not ids:
            return []
        record = json.dumps({"ts": time.time(), "by": by, "via": self.kind,
                             "comment": comment})
        await self.client.hset(keys.alert_acks(line), mapping=dict.fromkeys(ids, record))
        entries = [self._deliveries.pop((line, i)) for i in ids if (line, i) in self._deliveries]
        await run_async(self.client, self.reader.ack(entries))
        for i in ids:
            cam.latched.pop(i, None)
        log.info("alerts_acknowledged", line=line, camera=camera, alert_ids=ids, by=by)
        await _maybe(self.listener.cleared(cam, ids))
        return ids


def discover_cameras(client, lines: Sequence[str], recent: int = 500) -> list[tuple[str, str]]:
    """(line, camera) pairs seen in the last `recent` results or in the camera health hash,
    sorted (a synchronous client): the map when no camera list is given."""
    found: set[tuple[str, str]] = set()
    for name in lines:
        for _, fields in client.xrevrange(keys.results(name), count=recent):
            cam = entry_field(fields, "camera")
            if cam:
                found.add((name, cam))
        found |= {(name, text(c)) for c in client.hkeys(keys.camera_health(name))}
    return sorted(found)


def mapped_cameras(settings: PlcBridgeSettings, cameras: Sequence[str],
                   required: bool = True) -> list[tuple[str, str]]:
    """The (line, camera) pairs a bridge maps: `cameras` (the --camera options), else
    RLR_PLC_CAMERAS, on every line; else the cameras Redis has seen (`required`: none
    found is an error, for a map that must not move)."""
    names = list(cameras) or parse_cameras(settings.plc_cameras)
    if names:
        return [(line, cam) for line in settings.lines for cam in names]
    client = connect_ready(settings)
    try:
        found = discover_cameras(client, settings.lines)
    finally:
        client.close()
    if not found and required:
        raise SettingsError(f"no cameras known on line(s) {','.join(settings.lines)}: pass "
                            "--camera NAME (repeatable) or set RLR_PLC_CAMERAS=cam1,cam2")
    return found
