"""The console answers only its own Host names, compares tokens as bytes, and redirects only
to its own paths (DNS rebinding, a non-ASCII token, `//evil.example` after ?token=)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from starlette.testclient import TestClient

from daemon.cli.settings import load_settings
from daemon.console.app import create_app
from daemon.console.guard import allowed_hosts, host_name, local_path, same_token


def web(host: str = "127.0.0.1", token: str | None = "s3cret", base: str = "http://127.0.0.1",
        **kw) -> TestClient:
    app = create_app(load_settings(lines="l1", console_token=token, **kw), host)
    return TestClient(app, base_url=base, follow_redirects=False)


def test_a_foreign_host_name_gets_421_and_says_which_setting():
    r = web(base="http://attacker.example").get("/healthz")
    assert r.status_code == 421 and "RLR_CONSOLE_HOSTS" in r.text
    assert "attacker.example" in r.text
    for base in ("http://127.0.0.1:8780", "http://localhost", "http://[::1]:8780"):
        assert web(base=base).get("/healthz").status_code == 200, base


def test_the_host_list_is_a_setting_and_the_bind_address_is_on_it_by_default():
    assert web("0.0.0.0", base="http://0.0.0.0:8780").get(
        "/healthz", headers={"x-rlr-token": "s3cret"}).status_code == 200
    named = web(base="http://console.plant.local", console_hosts="console.plant.local")
    assert named.get("/healthz").status_code == 200
    assert web(base="http://any.example", console_hosts="*").get("/healthz").status_code == 200
    assert allowed_hosts("A.example, b.example", "127.0.0.1") == {"a.example", "b.example"}
    assert "10.0.0.5" in allowed_hosts(None, "10.0.0.5")
    assert host_name("[::1]:8780") == "::1" and host_name("") is None


@pytest.mark.parametrize("token", ["s3crét", "\u202e", "ü" * 6])
def test_a_non_ascii_token_is_refused_with_401_not_a_500(token):
    client = web("0.0.0.0", base="http://0.0.0.0")
    r = client.get("/healthz", headers={"x-rlr-token": token.encode("utf-8")})
    assert r.status_code == 401
    assert client.get("/healthz", params={"token": token}).status_code == 401
    assert not same_token(token, "s3cret")
    assert same_token("s3crét", "s3crét")


@pytest.mark.parametrize("path", ["//evil.example/..", "/\\evil.example", "///evil.example"])
def test_the_token_redirect_stays_on_this_console(path):
    client = web("0.0.0.0", base="http://0.0.0.0")
    r = client.get(path, params={"token": "s3cret"})
    where = r.headers["location"]
    assert r.status_code == 303 and where.startswith("/") and not where.startswith("//")
    assert "\\" not in where and not urlsplit(where).netloc


def test_local_paths():
    assert local_path("/alerts") == "/alerts"
    for bad in ("//evil.example", "/\\evil", "http://evil.example/", "https:evil", "",
                "/a\r\nLocation: x"):
        assert local_path(bad) == "/"
