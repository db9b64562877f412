"""Real `rlrctl` processes for integration tests: spawn, wait, stop, read their streams."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from daemon.wire import keys
from daemon.wire.schema import DeadLetter, Result

ROOT = Path(__file__).resolve().parents[2]


def daemon_env(redis_url: str, line: str, **settings) -> dict[str, str]:
    """Environment for a daemon process: the test's Redis and line, fast test timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLR_")}
    env.update({"RLR_REDIS_URL": redis_url, "RLR_LINES": line, "RLR_LOG_FORMAT": "json",
                "RLR_METRICS_PORT": "0", "RLR_HEARTBEAT_S": "0.5", "RLR_HEARTBEAT_TTL_S": "3",
                "RLR_CLAIM_INTERVAL_S": "0.5", "RLR_CLAIM_IDLE_MS": "2000",
                "RLR_BATCH_WAIT_MS": "10", "RLR_BLOCK_MS": "200", "PYTHONUNBUFFERED": "1"})
    env.update({f"RLR_{k.upper()}": str(v) for k, v in settings.items() if v is not None})
    return env


class Proc:
    """A daemon subprocess whose stderr (JSON log lines) goes to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], env=env,
                                  cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            self.p.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.send(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait(10)
        self._log.close()
        return rc

    def events(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def start_worker(redis_url: str, line: str, model: Path, name: str, tmp: Path,
                 **settings) -> Proc:
    env = daemon_env(redis_url, line, consumer=name, model=model, **settings)
    return Proc(["worker"], env, tmp / f"{name}.log")


def wait_for(pred: Callable[[], object], timeout: float, what: str,
             procs: tuple[Proc, ...] = ()) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        for proc in procs:
            if not proc.alive():
                raise AssertionError(f"{what}: process exited with {proc.p.returncode}; log:\n"
                                     + proc.log_path.read_text()[-3000:])
        if time.monotonic() > deadline:
            logs = "".join(p.log_path.read_text()[-2000:] for p in procs)
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")
        time.sleep(0.1)


def worker_status(client: redis.Redis, name: str) -> str | None:
    raw = client.get(keys.worker(name))
    return None if raw is None else json.loads(raw)["status"]


def wait_ready(client: redis.Redis, *workers: Proc, names: tuple[str, ...],
               timeout: float = 90) -> None:
    wait_for(lambda: all(worker_status(client, n) == "ready" for n in names), timeout,
             f"workers {names} ready", workers)


def results(client: redis.Redis, line: str) -> list[Result]:
    return [Result.from_fields(f) for _, f in client.xrange(keys.results(line))]


def dead_letters(client: redis.Redis, line: str) -> list[DeadLetter]:
    return [DeadLetter.from_fields(f) for _, f in client.xrange(keys.dlq(line))]


def pending(client: redis.Redis, line: str, group: str = "rlr-workers") -> int:
    try:
        return int(client.xpending(keys.frames(line), group)["pending"])
    except redis.ResponseError:
        return 0
