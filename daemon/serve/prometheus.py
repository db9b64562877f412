"""Prometheus metrics of a worker (its own registry, so several workers fit in one process).

The names are part of the product: dashboards and alert rules use them (docs/operations.md:
Worker liveness and metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from daemon.errors import SettingsError

_LAT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.frames_in = Counter("rlr_frames_in", "Frames read from the stream", ["line"],
                                 registry=r)
        self.frames_done = Counter("rlr_frames_done", "Frames with a published result",
                                   ["line"], registry=r)
        self.frames_replayed = Counter("rlr_frames_replayed", "Frames whose result already "
                                       "existed (redeliveries)", ["line"], registry=r)
        self.frames_skipped = Counter("rlr_frames_skipped", "Stale frames skipped under "
                                      "backlog", ["line"], registry=r)
        self.frames_dead = Counter("rlr_frames_dead_lettered", "Frames sent to the dead-letter "
                                   "stream", ["line", "reason"], registry=r)
        self.alerts = Counter("rlr_alerts", "Alerts raised", ["line"], registry=r)
        self.parts = Counter("rlr_parts", "Part verdicts emitted", ["line", "verdict", "outcome"],
                             registry=r)
        self.part_views = Counter("rlr_part_views_not_joined", "Views of a part not joined to "
                                  "it: late (the part was decided) or duplicate (it had the view)",
                                  ["line", "why"], registry=r)
        self.part_time = Histogram("rlr_part_seconds", "First capture of a part to its verdict",
                                   buckets=_LAT, registry=r)
        self.batch_size = Histogram("rlr_batch_size", "Frames per inference batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.queue_wait = Histogram("rlr_queue_wait_seconds", "Stream entry to batch start",
                                    buckets=_LAT, registry=r)
        self.inference = Histogram("rlr_inference_seconds", "Model time per batch",
                                   buckets=_LAT, registry=r)
        self.latency = Histogram("rlr_end_to_end_latency_seconds", "Capture to result "
                                 "published", buckets=_LAT, registry=r)
        self.pending = Gauge("rlr_pending_frames", "Frames not yet acknowledged by the group "
                             "(backlog)", ["line"], registry=r)
        self.model = Gauge("rlr_model_info", "Model version served (value 1)", ["version"],
                           registry=r)
        self.up = Gauge("rlr_worker_ready", "1 while the worker is serving", registry=r)
        self.health_events = Counter("rlr_camera_health_events", "Camera health conditions "
                                     "raised / cleared", ["line", "kind", "state"], registry=r)
        self.camera_unhealthy = Gauge("rlr_camera_unhealthy", "1 while a camera condition is "
                                      "raised (as this worker judges it)",
                                      ["line", "camera", "kind"], registry=r)

    def show_models(self, versions: list[str], serving: bool) -> None:
        """`rlr_model_info` for exactly `versions`; `rlr_worker_ready` 1 while serving."""
        self.up.set(1 if serving else 0)
        shown = getattr(self, "_shown", set())
        for version in shown - set(versions):
            self.model.remove(version)
        for version in versions:
            self.model.labels(version).set(1)
        self._shown = set(versions)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` (0: not at all); a port already taken is a SettingsError."""
        if not port:
            return
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): another "
                "process (a second worker on this host?) uses it; give each worker its own "
                "RLR_METRICS_PORT (or --metrics-port), or 0 to turn metrics off") from None
