"""Every long-running task of a daemon process runs under one `Supervisor`, so none can end
unnoticed.

A task that raises is logged with its exception and started again after a backoff; while it
is down the process reports itself not ready (`down()`, and the `tasks` field of its
heartbeat). A task that returns while the process is not stopping counts as a failure too. A
task that keeps failing (`max_failures` within `window_s`) makes the supervisor give up: it
calls `on_fatal`, and the process exits non-zero so systemd or Kubernetes restart it.

Tasks report progress with `beat(name)`; the heartbeat carries each task's last progress
time, so a probe can tell a task that is alive but stuck (a reader that stopped polling) from
one that works. Asyncio tasks (`spawn`) and threads (`thread`, `call_forever`) are
supervised the same way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import Field

from daemon import logs
from daemon.errors import TaskFailed
from daemon.settings import PartSettings

log = logs.get("rlr.supervisor")


class SupervisorSettings(PartSettings):
    """When a task that keeps failing makes its process give up (and exit non-zero)."""

    task_max_failures: int = Field(5, ge=1, description="a task of a daemon that fails this "
                                   "often within RLR_TASK_FAILURE_WINDOW_S makes the process "
                                   "exit non-zero (its service manager restarts it)")
    task_failure_window_s: float = Field(300.0, gt=0, description="of RLR_TASK_MAX_FAILURES")


@dataclass
class TaskState:
    name: str
    state: str = "starting"  # running, restarting, stopped, failed
    restarts: int = 0
    last_error: str | None = None
    progress_at: float = 0.0  # wall time of the task's last beat
    failures: deque = field(default_factory=lambda: deque(maxlen=64))  # monotonic times

    def to_json(self) -> dict:
        return {"state": self.state, "restarts": self.restarts, "error": self.last_error,
                "progress_at": self.progress_at}


class Supervisor:
    """Supervises the tasks of one process. `on_fatal(exc)` is called once, from the failing
    task's thread or loop, when a task keeps failing."""

    def __init__(self, process: str, *, max_failures: int = 5, window_s: float = 300.0,
                 first_backoff_s: float = 0.2, max_backoff_s: float = 5.0,
                 on_fatal: Callable[[TaskFailed], None] | None = None) -> None:
        self.process = process
        self.max_failures, self.window_s = max_failures, window_s
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self.on_fatal = on_fatal
        self.tasks: dict[str, TaskState] = {}
        self.fatal: TaskFailed | None = None
        self.stopping = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what it knows

    def beat(self, name: str) -> None:
        """Task `name` made progress."""
        task = self.tasks.get(name)
        if task is not None:
            task.progress_at = time.time()

    def down(self) -> list[str]:
        """Tasks that are not running now (restarting, or given up on)."""
        return sorted(n for n, t in self.tasks.items() if t.state in ("restarting", "failed"))

    def snapshot(self) -> dict[str, dict]:
        return {name: task.to_json() for name, task in sorted(self.tasks.items())}

    def stop(self) -> None:
        """The process is stopping: tasks that return now are not failures."""
        self.stopping = True

    # ------------------------------------------------------------------ asyncio tasks

    def spawn(self, name: str, factory: Callable[[], Awaitable[object]]) -> asyncio.Task:
        """Run `await factory()` as task `name` on the running loop, under supervision."""
        self.tasks[name] = TaskState(name)
        return asyncio.create_task(self._supervise_async(name, factory), name=name)

    async def _supervise_async(self, name: str, factory: Callable[[], Awaitable[object]]) -> None:
        task = self.tasks[name]
        while True:
            task.state = "running"
            try:
                await factory()
            except asyncio.CancelledError:
                task.state = "stopped"
                raise
            except Exception as exc:
                error = self._failed(task, exc)
            else:
                if self.stopping:
                    task.state = "stopped"
                    return
                error = self._failed(task, None)
            if error is None:
                return
            await asyncio.sleep(self._backoff(task))

    # ------------------------------------------------------------------ threads

    def thread(self, name: str, target: Callable[[], None],
               stop: threading.Event) -> threading.Thread:
        """Run `target()` on a daemon thread named `name`, under supervision, until `stop`."""
        self.tasks[name] = TaskState(name)
        worker = threading.Thread(target=self.call_forever, args=(name, target, stop),
                                  name=name, daemon=True)
        worker.start()
        return worker

    def call_forever(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        """Run `target()` in this thread under supervision until `stop` is set (or the
        supervisor gives up on it)."""
        task = self.tasks.setdefault(name, TaskState(name))
        while not stop.is_set():
            task.state = "running"
            try:
                target()
            except Exception as exc:
                error = self._failed(task, exc)
            else:
                if stop.is_set() or self.stopping:
                    break
                error = self._failed(task, None)
            if error is None:
                return
            stop.wait(self._backoff(task))
        task.state = "stopped"

    def report(self, name: str, exc: BaseException) -> None:
        """A failure of short-lived work done on behalf of task `name` (one published batch,
        say): logged and counted like a task failure; gives up if it keeps happening."""
        task = self.tasks.setdefault(name, TaskState(name, state="running"))
        if self._failed(task, exc) is not None:
            task.state = "running"  # nothing to restart: the next batch is the next try

    # ------------------------------------------------------------------ failures

    def _failed(self, task: TaskState, exc: BaseException | None) -> str | None:
        """Record a failure; the error text, or None when the supervisor gave up."""
        error = (f"{type(exc).__name__}: {exc}" if exc is not None
                 else "returned while the process was not stopping")
        now = time.monotonic()
        task.failures.append(now)
        task.last_error, task.restarts = error, task.restarts + 1
        recent = sum(1 for t in task.failures if now - t <= self.window_s)
        log.error("task_failed", process=self.process, task=task.name, error=error,
                  failures_in_window=recent, max_failures=self.max_failures,
                  window_s=self.window_s, exc_info=exc)
        if recent < self.max_failures:
            task.state = "restarting"
            return error
        task.state = "failed"
        with self._lock:
            if self.fatal is not None:
                return None
            self.fatal = TaskFailed(
                f"task {task.name} of {self.process} failed {recent} times within "
                f"{self.window_s:g} s (last: {error}); giving up so the service manager "
                "restarts the process; see the task_failed log events")
        log.critical("supervisor_gave_up", process=self.process, task=task.name, error=error)
        if self.on_fatal is not None:
            self.on_fatal(self.fatal)
        return None

    def _backoff(self, task: TaskState) -> float:
        n = sum(1 for t in task.failures if time.monotonic() - t <= self.window_s)
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** max(0, n - 1))
