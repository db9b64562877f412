"""Bad settings and a busy metrics port end a daemon command with one line that says what is
wrong and how to fix it (exit status 2), never a traceback, and before any model is loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def _rlrctl(*args: str, env: dict | None = None, timeout: float = 120):
    base = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=timeout)


def _one_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_binary_settings_file(tmp_path):
    bad = tmp_path / "settings.env"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    line = _one_line(_rlrctl("check", "--config", str(bad)))
    assert str(bad) in line and "not text" in line and "KEY=value" in line


def test_a_redis_url_that_cannot_be_parsed():
    line = _one_line(_rlrctl("check", env={"RLR_REDIS_URL": "redis://::::"}))
    assert "RLR_REDIS_URL" in line and "not a valid Redis URL" in line


def test_a_metrics_port_in_use_fails_before_the_model_is_loaded(redis_url, tiny_artifact,
                                                                tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        out = _rlrctl("worker", "--model", str(tiny_artifact), "--metrics-port", str(port),
                      env={"RLR_REDIS_URL": redis_url, "RLR_METRICS_HOST": "127.0.0.1",
                           "RLR_LINES": "errors-test", "RLR_LOG_FORMAT": "json"})
        seconds = time.monotonic() - t0
    lines = [ln for ln in out.stderr.strip().splitlines() if not ln.startswith("{")]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "RLR_METRICS_PORT" in lines[0]
    assert "model_loaded" not in out.stderr  # it failed first, not after a model load
    assert seconds < 60


def test_the_worker_waits_for_redis_as_long_as_redis_timeout_says(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as held:  # nothing answers Redis here
        port = held.getsockname()[1]
    t0 = time.monotonic()
    out = _rlrctl("worker", "--model", str(tmp_path / "never-loaded.rlr"),
                  env={"RLR_REDIS_URL": f"redis://127.0.0.1:{port}/0", "RLR_REDIS_TIMEOUT_S": "2",
                       "RLR_METRICS_PORT": "0", "RLR_LINES": "errors-test"})
    seconds = time.monotonic() - t0
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "RLR_REDIS_URL" in out.stderr
    assert seconds < 15  # was 30 s whatever RLR_REDIS_TIMEOUT_S said
