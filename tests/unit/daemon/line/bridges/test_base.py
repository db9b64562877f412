"""The feed loop every bridge runs, without Redis: outages are waited out with backoff and the
feed started again; anything else leaves the loop. Both drivers (threads for the alert bridges,
asyncio for the line-state bridges) run the same loop; tests/integration/line/bridges run it
through a real Redis restart for both families (alert feed, Modbus)."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis

from daemon.line.bridges import base


class _Feed:
    """Steps fail with `errors` (in order) before they succeed; stops after `rounds` steps."""

    def __init__(self, errors: list[Exception], rounds: int = 3) -> None:
        self.errors, self.rounds = list(errors), rounds
        self.calls: list[str] = []
        self.stop = threading.Event()

    def start(self) -> None:
        self.calls.append("start")

    def step(self, block_ms: int) -> int:
        if self.errors:
            self.calls.append("fail")
            raise self.errors.pop(0)
        self.calls.append("step")
        if self.calls.count("step") >= self.rounds:
            self.stop.set()
        return 0


class _AsyncFeed(_Feed):
    async def start(self) -> None:
        super().start()

    async def step(self, block_ms: int) -> int:
        return super().step(block_ms)


def _run(feed: _Feed, on_state) -> None:
    if isinstance(feed, _AsyncFeed):
        asyncio.run(base.afeed_forever(feed, feed.stop.is_set, 10, on_state))
    else:
        base.feed_forever(feed, feed.stop, 10, on_state)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(base, "OUTAGE_FIRST_S", 0.01)


@pytest.mark.parametrize("make", [_Feed, _AsyncFeed], ids=["threads", "asyncio"])
def test_an_outage_is_waited_out_and_the_feed_started_again(make):
    feed = make([redis.ConnectionError("refused"), redis.ResponseError("LOADING Redis is "
                                                                       "loading")])
    states: list[bool] = []
    _run(feed, states.append)
    # a restarted Redis may have lost the groups: each outage is followed by a new start
    assert feed.calls == ["start", "fail", "start", "fail", "start", "step", "step", "step"]
    assert states == [True, False, True, False, True]


@pytest.mark.parametrize("make", [_Feed, _AsyncFeed], ids=["threads", "asyncio"])
def test_an_error_that_is_not_an_outage_leaves_the_loop(make):
    feed = make([redis.ResponseError("WRONGTYPE Operation against a key")])
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        _run(feed, lambda ok: None)
    assert feed.calls == ["start", "fail"]


def test_the_backoff_doubles_up_to_its_cap_and_resets_after_a_good_round(monkeypatch):
    monkeypatch.setattr(base, "OUTAGE_CAP_S", 0.04)
    loop = base.ride_outages(lambda: False)
    assert next(loop) == ("start", 0.0)
    delays = []
    for _ in range(4):
        delays.append(loop.throw(redis.ConnectionError("down"))[1])
        assert next(loop) == ("start", 0.0)
    assert delays == [0.01, 0.02, 0.04, 0.04]
    assert next(loop) == ("step", 0.0)
    assert next(loop) == ("step", 0.0)  # a good round resets the backoff
    assert loop.throw(redis.ConnectionError("down"))[1] == 0.01


def test_a_stop_during_an_outage_wait_ends_the_threaded_loop_at_once(monkeypatch):
    monkeypatch.setattr(base, "OUTAGE_FIRST_S", 30.0)
    feed = _Feed([redis.ConnectionError("down")])
    threading.Timer(0.1, feed.stop.set).start()
    worker = threading.Thread(target=_run, args=(feed, lambda ok: None))
    worker.start()
    worker.join(5)
    assert not worker.is_alive()

