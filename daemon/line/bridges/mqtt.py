"""`rlrctl bridge mqtt`: every alert as JSON to `RLR_MQTT_TOPIC` on an MQTT broker, camera
health events to `RLR_MQTT_HEALTH_TOPIC`, part verdicts to `RLR_MQTT_PARTS_TOPIC`
(`--format sparkplug` runs the `sparkplug` bridge instead). `MqttSink` returns once the broker
confirmed a message at `RLR_MQTT_QOS`; the alert feed (`alertfeed`) does the retries and dead
letters."""

from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from daemon import logs
from daemon.errors import DeliveryError, SettingsError
from daemon.line.bridges.alertfeed import AlertFeed
from daemon.line.bridges.base import BridgeSpec, Option, serve_until_signal
from daemon.line.settings import AlertBridgeSettings
from daemon.wire.clients import connect_ready
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, HealthEvent

log = logs.get(__name__)


def check_topic_template(template: str, setting: str = "RLR_MQTT_TOPIC",
                         camera: bool = True) -> None:
    try:
        template.format(line="line", **({"camera": "camera"} if camera else {}))
    except (KeyError, IndexError, ValueError) as exc:
        fields, example = ("{line} and {camera}", "rlr/{line}/alerts/{camera}") if camera \
            else ("{line}", "rlr/{line}/parts")
        raise SettingsError(f"{setting}={template!r} is not a valid topic template ({exc}); "
                            f"use the fields {fields}, e.g. {example}") from None


def mqtt_topic(template: str, alert: Alert | HealthEvent | PartVerdict) -> str:
    """The topic of a message; `DeliveryError` (permanent: dead-lettered) when a name puts an
    MQTT wildcard in it."""
    topic = template.format(line=alert.line, camera=getattr(alert, "camera", ""))
    if not topic or any(c in topic for c in "+#\0"):
        raise DeliveryError("bad_topic", f"topic {topic!r} is empty or holds an MQTT wildcard; "
                            "fix RLR_MQTT_TOPIC or the camera name", permanent=True)
    return topic


class MqttSink:
    """Publishes `Alert.to_json()` to `settings.mqtt_topic` (not retained); paho reconnects."""

    kind = "mqtt"

    def __init__(self, settings: AlertBridgeSettings, client_id: str | None = None,
                 timeout_s: float = 5.0) -> None:
        check_topic_template(settings.mqtt_topic)
        check_topic_template(settings.mqtt_health_topic, "RLR_MQTT_HEALTH_TOPIC")
        check_topic_template(settings.mqtt_parts_topic, "RLR_MQTT_PARTS_TOPIC", camera=False)
        self.health_template = settings.mqtt_health_topic
        self.parts_template = settings.mqtt_parts_topic
        url = urlsplit(settings.mqtt_url)
        tls = url.scheme == "mqtts"
        self.host, self.port = url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883)
        self.where = f"{url.scheme}://{self.host}:{self.port}"
        self.template, self.qos, self.timeout_s = settings.mqtt_topic, settings.mqtt_qos, timeout_s
        self._connected = threading.Event()
        self._started = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"rlr-bridge-{settings.consumer_name}")
        if tls:
            self.client.tls_set()
        username = settings.mqtt_username or url.username
        password = (settings.mqtt_password.get_secret_value() if settings.mqtt_password
                    else url.password)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self, wait_s: float = 0.0) -> bool:
        """Connect in the background (paho retries forever); True once connected."""
        if not self._started:
            self._started = True
            self.client.connect_async(self.host, self.port, keepalive=30)
            self.client.loop_start()
        return self._connected.wait(wait_s)

    def deliver(self, alert: Alert) -> None:
        self._publish(mqtt_topic(self.template, alert), alert.to_json())

    def deliver_health(self, event: HealthEvent) -> None:
        self._publish(mqtt_topic(self.health_template, event), event.to_json())

    def deliver_part(self, part: PartVerdict) -> None:
        self._publish(mqtt_topic(self.parts_template, part), part.to_json())

    def _publish(self, topic: str, payload: dict) -> None:
        # Publishing while disconnected would queue the message inside paho and send it on
        # reconnect, on top of our own retry: wait for the connection instead.
        if not self.start(self.timeout_s):
            raise DeliveryError("mqtt_unavailable", f"no connection to {self.where}")
        info = self.client.publish(topic, json.dumps(payload), qos=self.qos, retain=False)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError("mqtt_publish_failed", f"{topic}: {exc}") from None
        if not info.is_published():
            raise DeliveryError("mqtt_timeout", f"{topic}: broker {self.where} did not confirm "
                                f"within {self.timeout_s}s (QoS {self.qos})")

    def close(self) -> None:
        if self._started:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("mqtt_connect_refused", broker=self.where, reason=str(reason_code))
            return
        self._connected.set()
        log.info("mqtt_connected", broker=self.where)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        log.warning("mqtt_disconnected", broker=self.where, reason=str(reason_code))


def run(settings: AlertBridgeSettings, fmt: str = "json") -> None:
    """Deliver alerts to the broker until SIGTERM / Ctrl-C."""
    logs.configure(settings.log_format, settings.log_level, bridge="mqtt")
    client = connect_ready(settings)
    sink = MqttSink(settings)
    if not sink.start(wait_s=5.0):
        log.warning("mqtt_not_connected_yet", broker=sink.where,
                    hint="alerts wait and retry until the broker answers")
    serve_until_signal(AlertFeed(client, settings, sink), client.close)


BRIDGE = BridgeSpec(
    name="mqtt",
    help="""Publish every alert as JSON to RLR_MQTT_TOPIC on the MQTT broker (or, with --format
    sparkplug, the line state as Sparkplug B).""",
    run=run,
    options=(
        Option("--line", "lines", "Line to follow (repeatable; default RLR_LINES).",
               setting="lines", multiple=True),
        Option("--mqtt-url", "mqtt_url", "mqtt://host:port or mqtts://host:port (default "
               "RLR_MQTT_URL).", setting="mqtt_url"),
        Option("--format", "fmt", "json: every alert to RLR_MQTT_TOPIC; sparkplug: the line "
               "state as a Sparkplug B edge node, one device per camera.", kind="choice",
               choices=("json", "sparkplug"), default="json", runs={"sparkplug": "sparkplug"}),
    ),
)
