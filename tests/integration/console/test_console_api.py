"""The console's reads and actions against a real Redis, without a browser: the jobs page's
cancel / retry recorded with who did it, alert evidence served from the alert entry itself,
unknown things answered with clear errors, and the hub fanning one read out to every page."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from daemon.cli.settings import load_settings
from daemon.console.app import create_app
from daemon.jobs import queue as jobs
from daemon.jobs.spec import JobSpec
from daemon.wire import keys
from daemon.wire.codec import encode_image
from daemon.wire.schema import Alert, Result
from tests.integration.procs import wait_for

TOKEN = {"x-rlr-token": "t0k"}


@pytest.fixture
def web(redis_url, line):
    app = create_app(load_settings(redis_url=redis_url, lines=line, console_token="t0k"),
                     "127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def _png(size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), 255).save(buf, format="PNG")
    return buf.getvalue()


def test_cancel_and_retry_a_job_from_the_console_record_the_operator(web, rclient):
    job_id = jobs.submit(rclient, JobSpec(data="/nowhere", epochs=1), "test")
    try:
        r = web.post("/api/job", json={"job_id": job_id, "action": "cancel", "by": "ann"},
                     headers=TOKEN)
        assert r.status_code == 200 and r.json()["result"] == "cancelled"
        assert jobs.get_job(rclient, job_id).state == "cancelled"
        log = web.get(f"/api/joblog?job={job_id}").json()
        assert any("console:ann" in ln for ln in log)
        again = web.post("/api/job", json={"job_id": job_id, "action": "cancel", "by": "ann"},
                         headers=TOKEN)
        assert again.status_code == 400 and "already cancelled" in again.json()["error"]
        retry = web.post("/api/job", json={"job_id": job_id, "action": "retry", "by": "ann"},
                         headers=TOKEN)
        assert retry.status_code == 200 and "resubmitted as" in retry.json()["result"]
        new_id = retry.json()["result"].split()[-1]
        assert jobs.get_job(rclient, new_id).submitted_by == "console:ann"
        hub = web.app.state.console["hub"]
        wait_for(lambda: any(j["id"] == new_id for j in hub.status["jobs"]), 10,
                 "the new job in the pushed status")
    finally:
        for j in jobs.list_jobs(rclient, 50):
            if j.spec and j.spec.data == "/nowhere":
                if not j.finished:
                    jobs.cancel(rclient, j.id, "test")
                rclient.delete(keys.job(j.id), keys.job_log(j.id))
                rclient.zrem(keys.JOB_INDEX, j.id)
                rclient.srem(keys.JOBS_ACTIVE, j.id)


def test_alert_evidence_is_served_from_the_alert_and_acknowledged_once(web, rclient, line):
    jpeg = encode_image(np.zeros((16, 16, 3), "uint8"), "jpeg")[0]
    alert = Alert("", line, "cam1", time.time(), "2/3", ["f1", "f2"], [0.9, 0.8],
                  ["1-0", "2-0"], "m-x", 0.5, evidence=(("f1", jpeg, _png()), ("f2", jpeg, None)))
    aid = rclient.xadd(keys.alerts(line), alert.to_fields()).decode()
    listed = web.get(f"/api/alerts?line={line}").json()
    assert listed[0]["id"] == aid and listed[0]["evidence"] == 2
    assert listed[0]["has_mask"] == [True, False]
    image = web.get(f"/evidence?line={line}&alert={aid}&i=0&kind=image")
    assert image.status_code == 200 and image.content == jpeg
    mask = web.get(f"/evidence?line={line}&alert={aid}&i=0&kind=mask")
    assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
    assert web.get(f"/evidence?line={line}&alert={aid}&i=1&kind=mask").status_code == 404
    assert web.get(f"/evidence?line={line}&alert={aid}&i=9").status_code == 404
    assert web.get(f"/evidence?line={line}&alert=nonsense&i=0").status_code == 400
    assert web.get(f"/evidence?line=other&alert={aid}&i=0").status_code == 400
    ok = web.post("/api/ack", json={"line": line, "alert_id": aid, "by": "bo"}, headers=TOKEN)
    assert ok.status_code == 200 and ok.json()["result"]["by"] == "console:bo"
    assert web.get(f"/api/alerts?line={line}").json()[0]["ack"]["by"] == "console:bo"
    missing = web.post("/api/ack", json={"line": line, "alert_id": "1-1", "by": "bo"},
                       headers=TOKEN)
    assert missing.status_code == 400 and "no alert" in missing.json()["error"]


def test_unknown_actions_and_lines_get_clear_errors(web, line):
    r = web.post("/api/rollout", json={"line": line, "action": "explode", "by": "x"},
                 headers=TOKEN)
    assert r.status_code == 400 and "unknown action" in r.json()["error"]
    r = web.post("/api/rollout", json={"line": "elsewhere", "action": "promote", "by": "x"},
                 headers=TOKEN)
    assert r.status_code == 400 and "unknown line" in r.json()["error"]
    r = web.post("/api/rollout", json={"line": line, "action": "promote", "by": "x"},
                 headers=TOKEN)
    assert r.status_code == 400 and "no canary" in r.json()["error"]
    r = web.post("/api/rollout", content=b"{not json",
                 headers={**TOKEN, "content-type": "application/json"})
    assert r.status_code == 400


def test_results_reach_every_subscribed_page_from_one_read(web, rclient, line):
    hub = web.app.state.console["hub"]
    # an entry written before the hub has seeded goes into the snapshot, not into an event
    wait_for(lambda: hub.seeded, 10, "the hub to seed from the streams")
    pages = [hub.subscribe() for _ in range(3)]
    try:
        res = Result("f1", "cam9", 0.7, True, 0.5, "m-x", time.time(), 1.0, 2.0, 3.0, "w1")
        rclient.xadd(keys.results(line), res.to_fields())
        seen: list[list[dict]] = [[] for _ in pages]

        def drained() -> bool:
            for q, tiles in zip(pages, seen, strict=True):
                while not q.empty():
                    event = json.loads(q.get_nowait())
                    tiles += [t for t in event.get("tiles", []) if t["camera"] == "cam9"]
            return all(seen)

        wait_for(drained, 10, "cam9's tile on every page")
        tiles = [t[0] for t in seen]
        assert {t["rid"] for t in tiles} == {tiles[0]["rid"]}
        assert tiles[0]["anomalous"] is True and tiles[0]["scores"] == [[0.7, 0.5, 1]]
    finally:
        for q in pages:
            hub.unsubscribe(q)
