"""The README's first command: `rlrctl demo` runs a whole line on an embedded Redis and stops."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.procs import ROOT

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_on_an_embedded_redis_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}  # no Redis given
    work = tmp_path / "demo"
    out = subprocess.run([sys.executable, "-m", "daemon.cli", "demo", "--workdir", str(work),
                          "--preset", "tiny", "--epochs", "2", "--seconds", "8", "--fps", "4"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "starting an embedded Redis" in out.stdout
    assert "scored" in out.stdout and "from 3 cameras" in out.stdout
    assert (work / "model.rlr").is_file()
    assert "the line console: http://127.0.0.1:" in out.stdout
    for name in ("worker", "camera-fabric", "camera-tile", "camera-washer", "console"):
        assert (work / "logs" / f"{name}.log").is_file()
    worker_log = (work / "logs" / "worker.log").read_text()
    assert '"worker_stopped"' in worker_log  # a graceful stop, not a kill
    left = subprocess.run(["pgrep", "-f", str(work / "redis")], capture_output=True)
    assert left.returncode == 1, "the embedded redis-server outlived the demo"
