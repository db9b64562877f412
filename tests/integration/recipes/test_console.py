"""The console's recipe switch against a real Redis: the line's recipe and the choices read
without a token; a switch needs the operator token, is recorded as via console with the
operator's name, and a refusal answers 409 with its one line while the old recipe stays."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from daemon.cli.settings import load_settings
from daemon.console.app import create_app
from tests.integration.recipes.conftest import BY, recipe

TOKEN = {"x-rlr-token": "t0k"}


@pytest.fixture
def web(redis_url, line):
    app = create_app(load_settings(redis_url=redis_url, lines=line, console_token="t0k"),
                     "127.0.0.1")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def test_switching_the_recipe_from_the_console(web, store, deployed, line, names):
    a, b, bad = names("tile"), names("washer"), names("bracket")
    for name, cls in ((a, "tile"), (b, "washer"), (bad, "bracket")):
        store.add(recipe(name, cls), BY)
    store.activate(line, a, by=BY, via="cli")
    url = f"/api/lines/{line}/recipe"
    got = web.get(url).json()
    assert got["active"]["label"] == f"{a}@1"
    assert {a, b, bad} <= {r["name"] for r in got["recipes"]}

    no_token = web.post(url, json={"name": b})
    assert no_token.status_code == 403 and "token" in no_token.json()["error"]
    assert store.active(line).label == f"{a}@1"

    ok = web.post(url, json={"name": b, "by": "ann"}, headers=TOKEN)
    assert ok.status_code == 200, ok.text
    assert ok.json()["result"]["label"] == f"{b}@1" and ok.json()["result"]["previous"] == \
        f"{a}@1"
    active = store.active(line)
    assert (active.label, active.via, active.by) == (f"{b}@1", "console", "console:ann")
    anonymous = web.post(url, json={"name": a}, headers=TOKEN)
    assert anonymous.status_code == 200 and store.active(line).by == "console"

    refused = web.post(url, json={"name": bad, "by": "ann"}, headers=TOKEN)
    assert refused.status_code == 409
    assert refused.json()["error"].endswith(f"the active recipe stays {a}@1")
    assert "names class 'bracket'" in refused.json()["error"]
    assert store.active(line).label == f"{a}@1"
    history = web.get(url).json()["history"]
    assert [(h["action"], h["via"]) for h in history[:3]] == [
        ("refused", "console"), ("activated", "console"), ("activated", "console")]
