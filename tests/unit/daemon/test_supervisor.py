"""The supervisor: a failed task is restarted and counted, a returning one is a failure, one
that keeps failing ends the process (once), for asyncio tasks and threads alike."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from daemon.errors import TaskFailed
from daemon.supervisor import Supervisor


def _sup(**kw) -> tuple[Supervisor, list[TaskFailed]]:
    fatal: list[TaskFailed] = []
    sup = Supervisor("test", first_backoff_s=0.01, max_backoff_s=0.02, on_fatal=fatal.append,
                     **kw)
    return sup, fatal


def test_a_failing_task_is_restarted_and_its_failures_are_counted():
    sup, fatal = _sup(max_failures=5)
    runs = []

    async def flaky():
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        sup.beat("flaky")
        await asyncio.sleep(10)

    async def main():
        task = sup.spawn("flaky", flaky)
        await asyncio.sleep(0.3)
        snap = sup.snapshot()["flaky"]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return snap

    snap = asyncio.run(main())
    assert len(runs) == 3 and fatal == []
    assert snap["state"] == "running" and snap["restarts"] == 2
    assert snap["error"] == "RuntimeError: boom 2"
    assert time.time() - snap["progress_at"] < 5
    assert sup.tasks["flaky"].state == "stopped"  # cancelled: a stop, not a failure


def test_a_task_that_returns_while_the_process_runs_is_a_failure_but_not_when_stopping():
    sup, fatal = _sup(max_failures=3)

    async def quits():
        return None

    async def main():
        await sup.spawn("quits", quits)

    asyncio.run(main())
    assert len(fatal) == 1 and "quits" in str(fatal[0]) and "3 times" in str(fatal[0])
    assert sup.tasks["quits"].state == "failed" and sup.down() == ["quits"]

    calm, fatal = _sup(max_failures=3)
    calm.stop()

    async def main2():
        await calm.spawn("quits", quits)

    asyncio.run(main2())
    assert fatal == [] and calm.tasks["quits"].state == "stopped" and calm.down() == []


def test_while_a_task_restarts_it_is_reported_down():
    sup, _ = _sup(max_failures=10)
    sup.first_backoff_s = sup.max_backoff_s = 0.5
    seen = []

    async def fails():
        raise ValueError("no")

    async def main():
        task = sup.spawn("fails", fails)
        await asyncio.sleep(0.1)
        seen.append(sup.down())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert seen == [["fails"]]


def test_threads_are_supervised_the_same_way_and_give_up_once():
    sup, fatal = _sup(max_failures=3)
    stop = threading.Event()
    calls = []

    def broken():
        calls.append(1)
        raise OSError("disk on fire")

    worker = sup.thread("pulse", broken, stop)
    worker.join(5)
    assert not worker.is_alive()
    assert len(calls) == 3 and len(fatal) == 1
    assert "OSError: disk on fire" in str(fatal[0])
    assert sup.snapshot()["pulse"]["state"] == "failed"


def test_a_thread_stops_cleanly_when_asked():
    sup, fatal = _sup()
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            sup.beat("loop")
            stop.wait(0.01)

    worker = sup.thread("loop", loop, stop)
    time.sleep(0.1)
    stop.set()
    worker.join(5)
    assert fatal == [] and sup.tasks["loop"].state == "stopped"


def test_short_lived_work_reports_failures_and_gives_up_when_they_pile_up():
    sup, fatal = _sup(max_failures=2)
    sup.report("publisher", RuntimeError("one"))
    assert fatal == [] and sup.tasks["publisher"].state == "running"
    sup.report("publisher", RuntimeError("two"))
    assert len(fatal) == 1
    with pytest.raises(TaskFailed, match="publisher"):
        raise fatal[0]


def test_failures_outside_the_window_do_not_add_up():
    sup, fatal = _sup(max_failures=2, window_s=0.05)
    sup.report("x", RuntimeError("old"))
    time.sleep(0.1)
    sup.report("x", RuntimeError("new"))
    assert fatal == []
