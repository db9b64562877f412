"""What every bridge shares: the description a plug-in gives of itself (`BridgeSpec`, from
which `rlrctl bridge <name>` is built), its consumer group's name, the one feed loop that rides
out Redis outages (`ride_outages`, driven by `feed_forever` for the threaded alert bridges and
`afeed_forever` for the asyncio line-state bridges), dead-lettering, and running a bridge until
SIGTERM / Ctrl-C.

A feed (`alertfeed.AlertFeed`, `linestate.LineFeed`) reads its streams through
`daemon.wire.groups`; the loop calls its `start()` (create the groups, load what it needs) and
then its `step(block_ms)` over and over. A Redis outage stops the round, is logged, waited out
with backoff, and the feed is started again, since a restarted Redis may have lost the groups.
Any other error leaves the loop.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from daemon import logs
from daemon.wire import keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away, connect_async, connect_ready
from daemon.wire.groups import Delivery
from daemon.wire.schema import DeadLetter
from daemon.wire.settings import StreamCapSettings

log = logs.get(__name__)

OUTAGE_FIRST_S, OUTAGE_CAP_S = 0.2, 5.0


def group_name(kind: str) -> str:
    """The consumer group of a bridge kind: every kind sees every entry, several bridges of
    one kind share the work."""
    return f"rlr-bridge-{kind}"


# ----------------------------------------------------------------------------- the description


@dataclass(frozen=True)
class Option:
    """One command-line option of a bridge. `setting`: the settings field it overrides (the
    option's value, when given, wins over RLR_* and the settings file); otherwise its value
    is passed to `BridgeSpec.run` as the keyword `dest`. `runs`: option values that run
    another registered bridge instead, with the same settings (`--format sparkplug`)."""

    flag: str  # "--port"
    dest: str  # "port"
    help: str
    setting: str | None = None
    kind: Literal["text", "flag", "port", "choice"] = "text"
    choices: Sequence[str] = ()
    default: Any = None
    multiple: bool = False
    runs: dict[str, str] = field(default_factory=dict)


LINE = Option("--line", "lines", "Line to serve (repeatable; default RLR_LINES).",
              setting="lines", multiple=True)
CAMERA = Option("--camera", "cameras", "Camera to map (repeatable; default RLR_PLC_CAMERAS, "
                "else the cameras seen in recent results).", multiple=True)


@dataclass(frozen=True)
class BridgeSpec:
    """What a plug-in module declares as `BRIDGE`: its name (the command, `rlrctl bridge
    <name>`), the command's help, its options (`--redis-url` / `--config` come with every
    bridge) and `run(settings, **options)`, which serves until SIGTERM / Ctrl-C."""

    name: str
    help: str
    run: Callable[..., None]
    options: Sequence[Option] = (LINE,)


# ----------------------------------------------------------------------------- the feed loop


class Feed(Protocol):
    """A bridge's reader of its streams. The methods are coroutines for `afeed_forever`."""

    def start(self) -> Any: ...

    def step(self, block_ms: int) -> Any: ...


Call = tuple[Literal["start", "step", "sleep"], float]


def ride_outages(stopping: Callable[[], bool],
                 on_state: Callable[[bool], None] = lambda ok: None) -> Generator[Call, Any, None]:
    """The feed loop, written once for both kinds of client: yields what to call next
    ("start", "step", or "sleep" for a delay) and is told, by an exception thrown back in,
    when a call failed. `on_state` hears whether the streams are being read."""
    backoff = Backoff(OUTAGE_FIRST_S, OUTAGE_CAP_S)
    started = False
    while not stopping():
        try:
            if not started:
                yield ("start", 0.0)
                started = True
                on_state(True)
            yield ("step", 0.0)
            backoff.reset()
        except Exception as exc:
            if not away(exc):
                raise
            delay = backoff.next()
            log.warning("redis_unavailable", error=str(exc), retry_in_s=delay)
            started = False  # a restarted Redis may have lost the groups
            on_state(False)
            yield ("sleep", delay)


def feed_forever(feed: Feed, stop: threading.Event, block_ms: int,
                 on_state: Callable[[bool], None] = lambda ok: None) -> None:
    """Run a synchronous feed until `stop` is set (an outage wait ends early on stop)."""
    loop = ride_outages(stop.is_set, on_state)
    error: BaseException | None = None
    while True:
        try:
            what, delay = loop.send(None) if error is None else loop.throw(error)
        except StopIteration:
            return
        error = None
        try:
            if what == "start":
                feed.start()
            elif what == "step":
                feed.step(block_ms)
            else:
                stop.wait(delay)
        except Exception as exc:
            error = exc


async def afeed_forever(feed: Feed, stopping: Callable[[], bool], block_ms: int,
                        on_state: Callable[[bool], None] = lambda ok: None) -> None:
    """Run an asyncio feed until `stopping()`."""
    loop = ride_outages(stopping, on_state)
    error: BaseException | None = None
    while True:
        try:
            what, delay = loop.send(None) if error is None else loop.throw(error)
        except StopIteration:
            return
        error = None
        try:
            if what == "start":
                await feed.start()
            elif what == "step":
                await feed.step(block_ms)
            else:
                await asyncio.sleep(delay)
        except Exception as exc:
            error = exc


def dead_letter(client, settings: StreamCapSettings, stream_key: str, group: str, d: Delivery,
                line: str, letter: DeadLetter) -> None:
    """Write `letter` to `rlr:dlq:{line}` and ack the entry, in one transaction (both keys
    share the {line} slot): an entry is never acked without its letter."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.dlq(line), letter.to_fields(), maxlen=settings.dlq_maxlen, approximate=True)
    pipe.xack(stream_key, group, d.entry_id)
    pipe.execute()


# ----------------------------------------------------------------------------- the process


class Stoppable(Protocol):
    stopping: bool

    def stop(self) -> None: ...

    def run(self) -> None: ...


def serve_until_signal(runner: Stoppable, close: Callable[[], None]) -> None:
    """Run a threaded bridge: the first SIGTERM / SIGINT finishes the entry in flight, a
    second gives up on it (exit status 1); `close()` afterwards."""

    def on_signal(signum, frame) -> None:
        name = signal.Signals(signum).name
        if runner.stopping:
            log.warning("bridge_killed", signal=name)
            raise SystemExit(1)
        log.info("bridge_stopping", signal=name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        runner.run()
    finally:
        close()


def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]], kind: str) -> None:
    """Run `main(stop)` on an event loop; SIGTERM / SIGINT set `stop`."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: (log.info(
                "bridge_stopping", kind=kind, signal=signal.Signals(s).name), stop.set()))
        await main(stop)

    asyncio.run(runner())


def run_line_bridge(settings: Any, kind: str,
                    serve: Callable[[Any, asyncio.Event], Awaitable[None]]) -> None:
    """Run an asyncio bridge until SIGTERM / Ctrl-C: fail now, in one line, when Redis does
    not answer; then `serve(client, stop)` on an async Redis client, closed at the end."""
    connect_ready(settings).close()

    async def main(stop: asyncio.Event) -> None:
        client = connect_async(settings)
        try:
            await serve(client, stop)
        finally:
            await client.aclose()

    run_until_signal(main, kind)
