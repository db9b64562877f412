"""The README's first command: `rlrctl demo` runs a whole line on an embedded Redis and stops."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.integration.procs import ROOT

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_an_embedded_redis_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}  # no Redis given
    work = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--workdir", str(work),
                          "--preset", "tiny", "--epochs", "2", "--seconds", "12", "--fps", "4"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "starting an embedded Redis" in out.stdout
    assert "scored" in out.stdout and "from 2 cameras" in out.stdout
    assert (work / "model.rlr").is_file()
    assert "the line console: http://127.0.0.1:" in out.stdout
    # three products, one recipe each, a changeover between them; parts of three views
    for product in ("FAB-100", "TIL-200", "WSH-008"):
        assert f"changeover to {product}" in out.stdout
    parts = re.search(r"(\d+) parts: (\d+) pass, (\d+) reject, (\d+) incomplete", out.stdout)
    assert parts and int(parts[1]) > 0 and int(parts[2]) + int(parts[3]) + int(parts[4]) == \
        int(parts[1])
    # the yield table, read back from the SQLite records
    table = out.stdout.split("Yield from the records")[1]
    assert "parts" in table and "rejects" in table and "demo" in table
    assert (work / "records").is_dir()
    for name in ("worker", "recorder", "camera-cam-1-fabric", "camera-cam-2-washer", "console"):
        assert (work / "logs" / f"{name}.log").is_file()
    worker_log = (work / "logs" / "worker.log").read_text()
    assert '"worker_stopped"' in worker_log  # a graceful stop, not a kill
    left = subprocess.run(["pgrep", "-f", str(work / "redis")], capture_output=True)
    assert left.returncode == 1, "the embedded redis-server outlived the demo"
