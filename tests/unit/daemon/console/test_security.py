"""The console's gates, without Redis: a bind beyond loopback needs the token and then every
request carries it; actions need the token in a same-origin JSON POST; pages escape what came
from streams; every response carries a strict Content Security Policy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from daemon.cli.settings import load_settings
from daemon.console import pages, views
from daemon.console.app import create_app
from daemon.errors import ConsoleError

XSS = "<img src=x onerror=alert(1)>"


def app(host: str, token: str | None):
    return create_app(load_settings(lines="l1", console_token=token), host)


def local(app, **kw) -> TestClient:
    """A client that asks for the console by a name it answers (`daemon.console.guard`)."""
    return TestClient(app, base_url="http://127.0.0.1", **kw)


def test_a_bind_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(ConsoleError, match="RLR_CONSOLE_TOKEN"):
        app("0.0.0.0", None)
    app("127.0.0.1", None)  # loopback: reading needs no login


def test_beyond_loopback_every_request_needs_the_token():
    web = local(app("0.0.0.0", "s3cret"), follow_redirects=False)
    assert web.get("/healthz").status_code == 401
    assert web.get("/static/console.js").status_code == 401
    assert web.get("/healthz", headers={"x-rlr-token": "wrong"}).status_code == 401
    assert web.get("/healthz", headers={"x-rlr-token": "s3cret"}).status_code == 200
    # opened once with ?token=, the browser keeps an HTTP-only same-site cookie
    r = web.get("/healthz?token=s3cret")
    assert r.status_code == 303 and r.headers["location"] == "/healthz"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    assert web.get("/healthz").status_code == 200


def test_on_loopback_reading_is_open_and_responses_carry_a_strict_policy():
    r = local(app("127.0.0.1", None)).get("/healthz")
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("headers,body,why", [
    ({}, {"line": "l1", "action": "promote", "by": "ann"}, "token"),
    ({"x-rlr-token": "nope"}, {"line": "l1", "action": "promote", "by": "ann"}, "token"),
    ({"x-rlr-token": "s3cret", "origin": "http://evil.example"},
     {"line": "l1", "action": "promote", "by": "ann"}, "cross-site"),
    ({"x-rlr-token": "s3cret", "sec-fetch-site": "cross-site"},
     {"line": "l1", "action": "promote", "by": "ann"}, "cross-site"),
])
def test_actions_are_refused_before_touching_anything(headers, body, why):
    r = local(app("127.0.0.1", "s3cret")).post("/api/rollout", json=body, headers=headers)
    assert r.status_code == 403 and why in r.json()["error"]


def test_actions_are_off_without_a_token_configured():
    r = local(app("127.0.0.1", None)).post(
        "/api/ack", json={"line": "l1", "alert_id": "1-0", "by": "ann"},
        headers={"x-rlr-token": ""})
    assert r.status_code == 403 and "RLR_CONSOLE_TOKEN" in r.json()["error"]


def test_a_form_post_is_not_an_action():
    r = local(app("127.0.0.1", "s3cret")).post(
        "/api/rollout", data={"line": "l1", "action": "promote"},
        headers={"x-rlr-token": "s3cret"})
    assert r.status_code == 403 and "JSON" in r.json()["error"]


def test_the_operator_name_is_checked_and_recorded_as_console():
    assert views.operator(" ann ") == "console:ann"
    for bad in ("", XSS, "a" * 65, None):
        with pytest.raises(ValueError, match="name"):
            views.operator(bad)


def test_the_models_page_escapes_names_from_redis():
    view = {"line": "l1", "rollout": {"revision": 3, "canary": XSS, "previous": None},
            "canary_scope": f"{XSS} (cameras {XSS})",
            "rows": [{"role": "canary", "version": XSS, "metrics": {XSS: 0.5},
                      "thresholds": {XSS: 0.2}, "created_by": XSS, "missing": False,
                      "scores": [0.1, 0.3, 0.2]}],
            "history": [{"ts": 1.0, "action": XSS, "version": XSS, "by": XSS, "why": XSS}]}
    html = pages.models_page(["l1"], [view])
    assert XSS not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.count("<img") == 0


def test_a_mask_becomes_a_translucent_red_overlay_where_it_is_set():
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    over = np.asarray(Image.open(io.BytesIO(views.overlay(buf.getvalue()))))
    assert over.shape == (8, 8, 4)
    alpha = over[..., 3].astype(int)
    assert (alpha[2:4, 2:4] > 0).all() and alpha.sum() == 4 * alpha[2, 2]
    assert tuple(over[2, 2, :3]) == (255, 32, 32)


@pytest.mark.parametrize("headers,body,why", [
    ({}, {"name": "bracket-a"}, "token"),
    ({"x-rlr-token": "nope"}, {"name": "bracket-a"}, "token"),
    ({"x-rlr-token": "s3cret", "origin": "http://evil.example"}, {"name": "bracket-a"},
     "cross-site"),
])
def test_a_recipe_switch_is_an_action_refused_before_touching_anything(headers, body, why):
    web = TestClient(app("127.0.0.1", "s3cret"), base_url="http://127.0.0.1")
    r = web.post("/api/lines/l1/recipe", json=body, headers=headers)
    assert r.status_code == 403 and why in r.json()["error"]
    form = TestClient(app("127.0.0.1", "s3cret"), base_url="http://127.0.0.1").post(
        "/api/lines/l1/recipe", data={"name": "bracket-a"}, headers={"x-rlr-token": "s3cret"})
    assert form.status_code == 403 and "JSON" in form.json()["error"]


def test_the_recipe_of_a_line_the_console_does_not_show_is_a_clear_error():
    web = TestClient(app("127.0.0.1", "s3cret"), base_url="http://127.0.0.1")
    assert "unknown line 'l9'" in web.get("/api/lines/l9/recipe").text
    r = web.post("/api/lines/l9/recipe", json={"name": "x"}, headers={"x-rlr-token": "s3cret"})
    assert r.status_code == 400
