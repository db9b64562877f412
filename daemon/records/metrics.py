"""Prometheus metrics of the recorder (`rlrctl recorder --metrics-port`), in a registry of its
own, read from the recorder's `RecorderStats` at each scrape: the counters the recorder keeps
anyway are not counted twice, and a scrape sees the same numbers as the presence hash.

The names are part of the product (dashboards, alert rules): docs/records.md, Metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from daemon.errors import SettingsError

STATES = ("starting", "ok", "degraded", "waiting", "stopped")


def shown_state(recorder) -> str:
    """The state as the metrics show it: `waiting` while the database is away (the batch held,
    waited for with backoff; the presence hash says `degraded`), `degraded` when the pictures
    folder cannot be written."""
    return "waiting" if recorder.db_away else recorder.stats.state


class RecorderCollector:
    """Reads `recorder.stats` (and the time it started) at each scrape."""

    def __init__(self, recorder) -> None:
        self.recorder = recorder
        self.started = time.time()

    def _counter(self, name: str, doc: str, values: dict[str, float] | float,
                 label: str = "") -> CounterMetricFamily:
        if not isinstance(values, dict):
            return CounterMetricFamily(name, doc, value=values)
        family = CounterMetricFamily(name, doc, labels=[label])
        for key, value in values.items():
            family.add_metric([key], value)
        return family

    def collect(self) -> Iterator[Metric]:
        s = self.recorder.stats
        yield self._counter("rlr_recorder_rows_written", "New rows written (duplicates of a "
                            "redelivered batch not included)",
                            {"frames": s.frames, "parts": s.parts, "recipes": s.recipes}, "kind")
        yield self._counter("rlr_recorder_duplicates", "Entries already recorded (a batch "
                            "written again after a restart)", s.duplicates)
        yield self._counter("rlr_recorder_unreadable_entries", "Stream entries that are not "
                            "results, verdicts or recipe switches (logged, acknowledged)",
                            s.unreadable)
        yield self._counter("rlr_recorder_pictures", "Frames whose pictures were kept, skipped "
                            "(folder not writable) or missing (trimmed from the frames stream)",
                            {"kept": s.pictures, "skipped": s.pictures_skipped,
                             "missing": s.pictures_missing}, "result")
        yield self._counter("rlr_recorder_db_outages", "Times the records database went away",
                            s.db_outages)
        yield self._counter("rlr_recorder_db_outage_waits", "Batch writes retried (after a "
                            "backoff wait) while the database was away", s.db_retries)
        yield self._counter("rlr_recorder_entries_lost", "Entries trimmed from a stream before "
                            "they were recorded", s.trimmed_unrecorded)
        yield self._counter("rlr_recorder_pruned", "Rows and pictures deleted by the retention",
                            {"rows": s.pruned_rows, "pictures": s.pruned_pictures}, "what")
        state = GaugeMetricFamily("rlr_recorder_state", "1 for the recorder's state (ok, "
                                  "degraded: pictures cannot be written, waiting: database "
                                  "away), 0 for the others", labels=["state"])
        now = shown_state(self.recorder)
        for name in STATES:
            state.add_metric([name], 1.0 if name == now else 0.0)
        yield state
        yield GaugeMetricFamily("rlr_recorder_lag_entries", "Entries of the recorded streams "
                                "not yet read by the recorder (last check, every few seconds)",
                                value=s.backlog)
        yield GaugeMetricFamily("rlr_recorder_last_write_age_seconds", "Seconds since the last "
                                "batch was committed (since the start when none was yet)",
                                value=time.time() - (s.last_write or self.started))


class RecorderMetrics:
    """The recorder's registry; `serve` puts /metrics on a port."""

    def __init__(self, recorder) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(RecorderCollector(recorder))

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` (0: not at all); a port already taken is a SettingsError."""
        if not port:
            return
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SettingsError(
                f"cannot serve the recorder's metrics on {host}:{port} ({exc.strerror or exc}):"
                " another process uses it; set another RLR_RECORDER_METRICS_PORT (or "
                "--metrics-port), or 0 to turn metrics off") from None
