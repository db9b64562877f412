"""`rlrctl bridge webhook`: POST every alert (and camera health event and part verdict) as JSON,
with an `Idempotency-Key` header, to `RLR_WEBHOOK_URL`. `WebhookSink` returns once the receiver
answered 2xx and raises `DeliveryError` otherwise (permanent for a 4xx other than 408 / 429, or
a redirect); the alert feed (`alertfeed`) does the retries and dead letters."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from urllib.parse import quote

from daemon import logs
from daemon.errors import DeliveryError, SettingsError
from daemon.line.bridges.alertfeed import AlertFeed
from daemon.line.bridges.base import BridgeSpec, Option, serve_until_signal
from daemon.line.settings import AlertBridgeSettings
from daemon.wire.clients import connect_ready
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, HealthEvent

_EXCERPT = 300


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

    def deliver_part(self, part: PartVerdict) -> None:
        """The verdict's JSON (`"type": "part"`) to the same URL; one key per verdict (the
        part id percent-encoded: a header is ASCII, a part id need not be)."""
        self._post(part.to_json(), f"part-{quote(part.line, safe='')}-"
                                   f"{quote(part.part_id, safe='')}-{part.ts!r}")

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


def run(settings: AlertBridgeSettings) -> None:
    """Deliver alerts to the webhook until SIGTERM / Ctrl-C."""
    if settings.webhook_url is None:
        raise SettingsError("no webhook URL: set RLR_WEBHOOK_URL or pass --url "
                            "(e.g. https://scada.example/rlr/alerts)")
    logs.configure(settings.log_format, settings.log_level, bridge="webhook")
    client = connect_ready(settings)
    sink = WebhookSink(settings.webhook_url, settings.webhook_timeout_s)
    serve_until_signal(AlertFeed(client, settings, sink), client.close)


BRIDGE = BridgeSpec(
    name="webhook",
    help="POST every alert as JSON (with an Idempotency-Key header) to the webhook URL.",
    run=run,
    options=(
        Option("--line", "lines", "Line to follow (repeatable; default RLR_LINES).",
               setting="lines", multiple=True),
        Option("--url", "webhook_url", "http(s) URL to POST to (default RLR_WEBHOOK_URL).",
               setting="webhook_url"),
    ),
)
