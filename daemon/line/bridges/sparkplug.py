"""Sparkplug B on MQTT (`rlrctl bridge mqtt --format sparkplug`): the bridge is one edge node
(`RLR_SPARKPLUG_GROUP` / `RLR_SPARKPLUG_NODE`), each camera one device, fed by the line state of
`linestate` (consumer group `rlr-bridge-sparkplug`). Also run by `rlrctl bridge sparkplug`.

Topics `spBv1.0/<group>/<type>/<node>[/<device>]`: NBIRTH on every (re)connect (with each
line's last part verdict as node metrics `Part/<line>/...`), then a DBIRTH with every metric of
each camera, DDATA with the metrics that changed, NDATA with a line's part metrics per verdict,
NDEATH as the MQTT will (and on a clean stop). Every message carries `seq` (0-255, NBIRTH is
0); NBIRTH and NDEATH carry the same `bdSeq`, one per MQTT session. A host that sends NCMD
`Node Control/Rebirth` gets the births again; a host that was away gets the current state from
them.

Payloads are the Sparkplug B protobuf (`org.eclipse.tahu.protobuf.Payload`), built here from
its field numbers (the subset of scalar metrics this bridge sends).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from daemon import logs
from daemon.errors import SettingsError
from daemon.line.bridges.base import LINE, BridgeSpec, Option, afeed_forever, run_line_bridge
from daemon.line.bridges.linestate import CameraState, LineFeed, Listener, PartState
from daemon.line.settings import PlcBridgeSettings
from daemon.wire.schema import Alert

log = logs.get(__name__)

NAMESPACE = "spBv1.0"
# Sparkplug B data types (the ones used here) and the Metric field holding each
UINT64, DOUBLE, BOOLEAN, STRING, DATETIME = 8, 10, 11, 12, 13
_VALUE_FIELD = {UINT64: "long_value", DOUBLE: "double_value", BOOLEAN: "boolean_value",
                STRING: "string_value", DATETIME: "long_value"}

# Device metrics: name, data type, value from the camera state
RESULT_METRICS: tuple[tuple[str, int, Callable[[CameraState], object]], ...] = (
    ("Inspection/LastScore", DOUBLE, lambda c: float(c.score or 0.0)),
    ("Inspection/Threshold", DOUBLE, lambda c: float(c.threshold or 0.0)),
    ("Inspection/Verdict", STRING, lambda c: c.verdict),
    ("Inspection/IsAnomaly", BOOLEAN, lambda c: bool(c.is_anomaly)),
    ("Inspection/FrameId", STRING, lambda c: c.frame_id),
    ("Inspection/CaptureTime", DATETIME, lambda c: int(c.capture_ts * 1000)),
    ("Inspection/ModelVersion", STRING, lambda c: c.model_version),
    ("Inspection/Frames", UINT64, lambda c: c.frames),
)
ALERT_METRICS: tuple[tuple[str, int, Callable[[CameraState], object]], ...] = (
    ("Alerts/Count", UINT64, lambda c: c.alerts),
)
HEALTH_METRICS: tuple[tuple[str, int, Callable[[CameraState], object]], ...] = (
    ("Health/Raised", STRING, lambda c: ",".join(c.health)),
    ("Health/Healthy", BOOLEAN, lambda c: not c.health),
)
# Node metrics of a line's last part verdict, named `Part/<line>/<name>`
PART_METRICS: tuple[tuple[str, int, Callable[[PartState], object]], ...] = (
    ("PartId", STRING, lambda s: s.last.part_id if s.last else ""),
    ("Verdict", STRING, lambda s: s.verdict),
    ("Outcome", STRING, lambda s: s.outcome),
    ("TotalMs", DOUBLE, lambda s: float(s.last.total_ms) if s.last else 0.0),
    ("Recipe", STRING, lambda s: s.last.recipe if s.last else ""),
    ("Time", DATETIME, lambda s: int(s.last.ts * 1000) if s.last else 0),
    ("Count", UINT64, lambda s: s.count),
)
REBIRTH = "Node Control/Rebirth"


def _payload_class():
    """The Sparkplug B `Payload` message (proto2), from the field numbers of sparkplug_b.proto."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="rlr_sparkplug_b.proto",
                                             package="org.eclipse.tahu.protobuf",
                                             syntax="proto2")
    metric = fdp.message_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in (("name", 1, f.TYPE_STRING), ("alias", 2, f.TYPE_UINT64),
                               ("timestamp", 3, f.TYPE_UINT64), ("datatype", 4, f.TYPE_UINT32),
                               ("is_historical", 5, f.TYPE_BOOL),
                               ("is_transient", 6, f.TYPE_BOOL), ("is_null", 7, f.TYPE_BOOL)):
        metric.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    for name, number, kind in (("int_value", 10, f.TYPE_UINT32),
                               ("long_value", 11, f.TYPE_UINT64),
                               ("float_value", 12, f.TYPE_FLOAT),
                               ("double_value", 13, f.TYPE_DOUBLE),
                               ("boolean_value", 14, f.TYPE_BOOL),
                               ("string_value", 15, f.TYPE_STRING),
                               ("bytes_value", 16, f.TYPE_BYTES)):
        metric.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL,
                         oneof_index=0)
    payload = fdp.message_type.add(name="Payload")
    for name, number, kind in (("timestamp", 1, f.TYPE_UINT64), ("seq", 3, f.TYPE_UINT64),
                               ("uuid", 4, f.TYPE_STRING), ("body", 5, f.TYPE_BYTES)):
        payload.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    payload.field.add(name="metrics", number=2, type=f.TYPE_MESSAGE, label=f.LABEL_REPEATED,
                      type_name=".org.eclipse.tahu.protobuf.Metric")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


Payload = _payload_class()


def _now_ms() -> int:
    return int(time.time() * 1000)


def encode(metrics: Sequence[tuple[str, int, object]], seq: int | None,
           ts_ms: int | None = None) -> bytes:
    p = Payload(timestamp=ts_ms or _now_ms())
    if seq is not None:
        p.seq = seq
    for name, dtype, value in metrics:
        m = p.metrics.add(name=name, datatype=dtype, timestamp=p.timestamp)
        setattr(m, _VALUE_FIELD[dtype], value)
    return p.SerializeToString()


def check_id(value: str, what: str) -> str:
    if not value or any(c in value for c in "+#/"):
        raise SettingsError(f"{what} {value!r} is not a Sparkplug id: use a non-empty name "
                            "without '+', '#' or '/'")
    return value


class SparkplugEdge(Listener):
    """One edge node on the broker; publishes from the event loop only (seq order)."""

    def __init__(self, settings: PlcBridgeSettings, lines: Sequence[str]) -> None:
        self.group = check_id(settings.sparkplug_group, "RLR_SPARKPLUG_GROUP")
        self.node = check_id(settings.sparkplug_node or
                             (lines[0] if len(lines) == 1 else "rlr"), "RLR_SPARKPLUG_NODE")
        self.lines = list(lines)
        self.multi_line = len(lines) > 1
        url = urlsplit(settings.mqtt_url)
        tls = url.scheme == "mqtts"
        self.host, self.port = url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"rlr-sparkplug-{self.node}")
        if tls:
            self.client.tls_set()
        username = settings.mqtt_username or url.username
        if username:
            self.client.username_pw_set(username, settings.mqtt_password.get_secret_value()
                                        if settings.mqtt_password else url.password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect, self.client.on_disconnect = self._on_connect, self._on_disconnect
        self.client.on_message = self._on_message
        self.feed: LineFeed | None = None
        self.seq, self.bd_seq = 0, 0
        self.born: set[tuple[str, str]] = set()
        self.connected = False
        self.rebirth = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._set_will()

    def topic(self, kind: str, device: str | None = None) -> str:
        return "/".join([NAMESPACE, self.group, kind, self.node, *([device] if device else [])])

    def device(self, cam: CameraState) -> str:
        name = f"{cam.line}.{cam.camera}" if self.multi_line else cam.camera
        return name.replace("/", "_").replace("+", "_").replace("#", "_")

    def _set_will(self) -> None:
        self.client.will_set(self.topic("NDEATH"), encode([("bdSeq", UINT64, self.bd_seq)], None),
                             qos=1)

    # ------------------------------------------------------------------ paho thread
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", broker=f"{self.host}:{self.port}",
                      reason=str(reason_code))
            return
        client.subscribe(self.topic("NCMD"), qos=0)
        log.info("sparkplug_connected", broker=f"{self.host}:{self.port}", node=self.node,
                 bd_seq=self.bd_seq)
        self._loop.call_soon_threadsafe(self.rebirth.set)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._loop.call_soon_threadsafe(self._lost)
        log.warning("sparkplug_disconnected", reason=str(reason_code))

    def _lost(self) -> None:
        # The broker publishes this session's will; the next session gets a new bdSeq.
        if self.connected:
            self.connected = False
            self.bd_seq = (self.bd_seq + 1) % 256
            self._set_will()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            p = Payload.FromString(msg.payload)
        except Exception:  # an unreadable command costs nothing
            log.warning("sparkplug_bad_command", topic=msg.topic)
            return
        if any(m.name == REBIRTH and m.boolean_value for m in p.metrics):
            log.info("sparkplug_rebirth_requested")
            self._loop.call_soon_threadsafe(self.rebirth.set)

    # ------------------------------------------------------------------ event loop
    def _publish(self, topic: str, metrics, ts_ms: int | None = None) -> None:
        if not self.connected:
            return  # the births after the reconnect carry the state
        payload = encode(metrics, self.seq, ts_ms)
        self.seq = (self.seq + 1) % 256
        self.client.publish(topic, payload, qos=0)

    def births(self) -> None:
        """NBIRTH (seq 0) and a DBIRTH for every known camera."""
        self.rebirth.clear()
        self.connected, self.seq = True, 0
        parts = [m for line in self.lines for m in self._part_metrics(line)]
        self._publish(self.topic("NBIRTH"), [("bdSeq", UINT64, self.bd_seq),
                                             (REBIRTH, BOOLEAN, False), *parts])
        self.born.clear()
        for cam in (self.feed.cameras.values() if self.feed else []):
            self._birth(cam)

    def _birth(self, cam: CameraState) -> None:
        metrics = [(n, t, get(cam)) for n, t, get in
                   (*RESULT_METRICS, *ALERT_METRICS, *HEALTH_METRICS)]
        self._publish(self.topic("DBIRTH", self.device(cam)), metrics)
        self.born.add((cam.line, cam.camera))

    def _data(self, cam: CameraState, defs, ts_ms: int | None = None) -> None:
        if (cam.line, cam.camera) not in self.born:
            self._birth(cam)  # carries every metric
            return
        self._publish(self.topic("DDATA", self.device(cam)),
                      [(n, t, get(cam)) for n, t, get in defs], ts_ms)

    def _part_metrics(self, line: str) -> list[tuple[str, int, object]]:
        state = self.feed.parts[line] if self.feed else PartState(line)
        return [(f"Part/{line}/{n}", t, get(state)) for n, t, get in PART_METRICS]

    def result(self, cam: CameraState, fresh: bool) -> None:
        self._data(cam, RESULT_METRICS)

    def part(self, state: PartState, fresh: bool) -> None:
        self._publish(self.topic("NDATA"), self._part_metrics(state.line))

    def alert(self, cam: CameraState, alert: Alert) -> None:
        self._data(cam, ALERT_METRICS)

    def health(self, cam: CameraState) -> None:
        self._data(cam, HEALTH_METRICS)

    def close(self) -> None:
        if self.connected:
            info = self.client.publish(self.topic("NDEATH"),
                                       encode([("bdSeq", UINT64, self.bd_seq)], None), qos=1)
            info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()


async def serve(settings: PlcBridgeSettings, client, lines: Sequence[str],
                stop: asyncio.Event) -> None:
    """Publish the line state as Sparkplug B until `stop` is set."""
    edge = SparkplugEdge(settings, lines)
    feed = LineFeed(client, settings, "sparkplug", lines, edge, hold_alerts=False)
    edge.feed = feed
    edge.start()

    async def births() -> None:
        while not stop.is_set():
            await edge.rebirth.wait()
            edge.births()

    task = asyncio.create_task(births())
    try:
        await afeed_forever(feed, stop.is_set, settings.block_ms)
    finally:
        task.cancel()
        edge.close()
        log.info("sparkplug_stopped", node=edge.node)


def run(settings: PlcBridgeSettings) -> None:
    """Run the Sparkplug B edge node until SIGTERM / Ctrl-C."""
    logs.configure(settings.log_format, settings.log_level, bridge="sparkplug")
    check_id(settings.sparkplug_group, "RLR_SPARKPLUG_GROUP")
    run_line_bridge(settings, "sparkplug",
                    lambda client, stop: serve(settings, client, settings.lines, stop))


BRIDGE = BridgeSpec(
    name="sparkplug",
    help="Publish the line state as a Sparkplug B edge node (= bridge mqtt --format sparkplug).",
    run=run,
    options=(
        LINE,
        Option("--mqtt-url", "mqtt_url", "mqtt://host:port or mqtts://host:port (default "
               "RLR_MQTT_URL).", setting="mqtt_url"),
    ),
)
