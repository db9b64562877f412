"""Where alert bridges deliver: an MQTT broker or an HTTP webhook. A sink returns once the
receiver confirmed an alert and raises `DeliveryError` otherwise (`permanent` when retrying
cannot help); the bridge loop (`daemon.line.bridge`) does the retries and dead letters."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.error
import urllib.request
from typing import Protocol
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from daemon import logs
from daemon.errors import DeliveryError, SettingsError
from daemon.line.settings import AlertBridgeSettings
from daemon.wire.schema import Alert, HealthEvent

log = logs.get(__name__)
_EXCERPT = 300


class Sink(Protocol):
    kind: str

    def deliver(self, alert: Alert) -> None:
        """Return once the receiver confirmed the alert; raise `DeliveryError` otherwise."""

    def deliver_health(self, event: HealthEvent) -> None:
        """The same for a camera health event (raised or cleared)."""

    def close(self) -> None: ...


# ----------------------------------------------------------------------------- MQTT


def check_topic_template(template: str) -> None:
    try:
        template.format(line="line", camera="camera")
    except (KeyError, IndexError, ValueError) as exc:
        raise SettingsError(f"RLR_MQTT_TOPIC={template!r} is not a valid topic template ({exc}); "
                            "use the fields {line} and {camera}, e.g. rlr/{line}/alerts/{camera}"
                            ) from None


def mqtt_topic(template: str, alert: Alert | HealthEvent) -> str:
    topic = template.format(line=alert.line, camera=alert.camera)
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
        check_topic_template(settings.mqtt_health_topic)
        self.health_template = settings.mqtt_health_topic
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


# ----------------------------------------------------------------------------- webhook


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET without the body: a 200 there is no delivery.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class WebhookSink:
    """POSTs `Alert.to_json()` with an `Idempotency-Key: <alert_id>` header."""

    kind = "webhook"
    RETRY_STATUS = frozenset({408, 429})  # plus every 5xx

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        self._opener = urllib.request.build_opener(_NoRedirect)

    def deliver(self, alert: Alert) -> None:
        self._post(alert.to_json(), alert.alert_id)

    def deliver_health(self, event: HealthEvent) -> None:
        """The event's JSON (`"type": "camera_health"`) to the same URL."""
        self._post(event.to_json(), f"health-{event.line}-{event.camera}-{event.kind}-"
                                    f"{event.state}-{event.ts!r}")

    def _post(self, payload: dict, idempotency_key: str) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), method="POST",
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key,
                     "User-Agent": "rlr-bridge"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(_EXCERPT).decode(errors="replace")
            detail = f"HTTP {status} from {self.url}: {' '.join(body.split()) or '(no body)'}"
            if status >= 500 or status in self.RETRY_STATUS:
                raise DeliveryError(f"http_{status}", detail) from None
            if 300 <= status < 400:
                detail += (f" (redirect to {exc.headers.get('Location')}; point RLR_WEBHOOK_URL "
                           "at the final URL)")
            raise DeliveryError("rejected", detail, permanent=True) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused,
            # DNS, timeout, connection dropped mid-response: all worth another try
            reason = getattr(exc, "reason", exc)
            raise DeliveryError("network", f"{self.url}: {reason}") from None

    def close(self) -> None:
        pass
