"""Frames in work are refreshed (their idle time reset) while the worker holds them."""

from __future__ import annotations

import time

from daemon.serve.inflight import refresh_interval_s
from daemon.serve.served_model import ServedModel
from daemon.serve.worker import Worker
from tests.unit.daemon.serve.helpers import HIGH, Recording, frame, results_of, run, settings


def test_the_refresh_comes_well_before_the_claim():
    assert refresh_interval_s(30_000) == 7.5
    assert refresh_interval_s(100) == 0.025


def test_a_batch_slower_than_the_claim_idle_time_is_refreshed_while_held(engines):
    class Slow(ServedModel):
        def infer(self, images):
            time.sleep(0.5)  # five times RLR_CLAIM_IDLE_MS
            return super().infer(images)

    good = engines(default=HIGH)
    streams = Recording()
    for i in range(4):
        streams.add("line1", frame(i))
    run(Worker(settings(claim_idle_ms=100), Slow(good.model, good.manifest, good.device),
               streams))
    assert len(results_of(streams)) == 4 and streams.pending == {}
    assert streams.touched >= 4 * 4  # every held frame, several times over the batch
