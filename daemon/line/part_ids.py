"""Where a producer's part ids come from: `rlrctl produce --part-from SPEC --views a,b`.

Two families, because in a plant either the camera or the PLC sets the pace:

- frame-driven (`counter`, `name:REGEX`): the source's frames set the pace. Each frame is a
  part, or, with views, each run of one frame per view; the id is counted or read from the
  file name. `tag(captured)` gives a frame its part and view.
- part-driven (`key`, `trigger`): the PLC sets the pace. `next_id(stopped)` waits for the
  next part id (a new value of `keys.next_part(line)`, or an entry of `keys.triggers(line)`),
  then the producer takes that part's frames from its source.

Every id goes through `daemon.wire.ids.check`: a bad one raises `NoPart`, which the producer
counts and logs before it goes on; a PLC writing garbage never stops a camera.
"""

from __future__ import annotations

import re
import string
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import redis

from daemon import logs
from daemon.errors import DaemonError, SettingsError
from daemon.line.sources.base import Captured, nap
from daemon.wire import ids, keys
from daemon.wire.backoff import Backoff
from daemon.wire.clients import away

FORMS = ("counter[:TEMPLATE][:start=N] (TEMPLATE holds {n}, e.g. SN-{n:06d}), name:REGEX "
         "(the id is REGEX's first group over the file name), key or trigger")
TRIGGERS_MAXLEN = 10_000

Stopped = Callable[[], bool]


class Tag(NamedTuple):
    """The part a frame shows and which of the part's views it is (None: no views)."""

    part: str
    view: str | None = None


class NoPart(ValueError):
    """A frame or an announced part without a usable part id; the message says why."""


def _bad(spec: str, why: str) -> SettingsError:
    return SettingsError(f"--part-from {spec!r}: {why}; use {FORMS}")


# ----------------------------------------------------------------------------- views


def parse_views(views: str | None, view: str | None = None) -> tuple[str, ...]:
    """`--views top,side` / `--view top` as a tuple of view ids, in shooting order."""
    if views and view:
        raise SettingsError("give --views or --view, not both (--view V is --views V)")
    names = [v.strip() for v in (views or view or "").split(",") if v.strip()]
    try:
        names = [ids.check("view", v) for v in names]
    except ids.BadId as exc:
        raise SettingsError(f"--views: {exc}") from None
    if len(set(names)) != len(names):
        raise SettingsError(f"--views {views!r} names a view twice; each view is one picture "
                            "of the part")
    return tuple(names)


# ----------------------------------------------------------------------------- frame-driven


class Counter:
    """Part ids counted up from `start` and formatted with `template` (`SN-{n:06d}`); with
    views, one id per round of views."""

    frame_driven = True

    def __init__(self, template: str = "{n}", start: int = 1, views: tuple[str, ...] = ()):
        self.template, self.n, self.views = template, start, views
        self._round: list[str] = []  # views still to shoot of the current part
        self._part = ""

    def format(self, n: int) -> str:
        return ids.check("part", self.template.format(n=n))

    def tag(self, captured: Captured) -> Tag:
        if not self.views:
            return Tag(self._next())
        if not self._round:
            self._part, self._round = self._next(), list(self.views)
        return Tag(self._part, self._round.pop(0))

    def _next(self) -> str:
        n, self.n = self.n, self.n + 1
        try:
            return self.format(n)
        except ids.BadId as exc:
            raise NoPart(str(exc)) from None


class NamePattern:
    """Part ids read from the file name: the regex's group `part` (or its first group). A
    group named `view` gives the view too; otherwise, with views, consecutive files of one
    part are its views in order, and a new id starts a new part."""

    frame_driven = True

    def __init__(self, regex: re.Pattern[str], views: tuple[str, ...] = ()):
        self.regex, self.views = regex, views
        self._group: int | str = "part" if "part" in regex.groupindex else 1
        self._last: str | None = None
        self._k = 0  # index of the last view given to part `_last`

    def tag(self, captured: Captured) -> Tag:
        name = captured.name or ""
        found = self.regex.search(name)
        if found is None or found.group(self._group) is None:
            raise NoPart(f"file name {name!r} does not match {self.regex.pattern!r}")
        try:
            part = ids.check("part", found.group(self._group))
            if "view" in self.regex.groupindex:
                return Tag(part, self._named_view(ids.check("view", found.group("view") or "")))
        except ids.BadId as exc:
            raise NoPart(f"file {name!r}: {exc}") from None
        if not self.views:
            return Tag(part)
        k = self._k + 1 if part == self._last else 0
        if k >= len(self.views):
            raise NoPart(f"file {name!r}: part {part!r} already has a frame for each of the "
                         f"views {','.join(self.views)}")
        self._last, self._k = part, k
        return Tag(part, self.views[k])

    def _named_view(self, view: str) -> str:
        if self.views and view not in self.views:
            raise ids.BadId("view", view, f"is not one of --views {','.join(self.views)}")
        return view


# ----------------------------------------------------------------------------- part-driven


class _Waiting:
    """What the PLC-paced kinds share: Redis calls retried through an outage."""

    frame_driven = False

    def __init__(self, client: redis.Redis, line: str, views: tuple[str, ...]) -> None:
        self.client, self.line, self.views = client, line, views
        self.backoff = Backoff(0.2, 5.0)
        self._away = False
        self._log = logs.get()

    def _call(self, fn: Callable, stopped: Stopped):
        """`fn()`, retried with backoff while Redis is away; None when stopped meanwhile."""
        while not stopped():
            try:
                out = fn()
            except (redis.RedisError, OSError) as exc:
                if not away(exc):  # a wrong key type, an ACL refusal: no retry fixes it
                    raise DaemonError(f"Redis refused to read the part ids of {self.line} "
                                      f"({exc}); check the key types (rlrctl status) and the "
                                      "user's ACL (deploy/redis/users.acl)") from None
                if not self._away:
                    self._log.warning("redis_unavailable", error=str(exc) or type(exc).__name__)
                self._away = True
                nap(self.backoff.next(), stopped)
                continue
            if self._away:
                self._log.info("redis_back")
                self._away = False
                self.backoff.reset()
            return out
        return None


class KeyWatch(_Waiting):
    """The PLC's "next part id" (`keys.next_part(line)`): each new value is one part. The
    value found at start is the first part; then an unset or unchanged key is waited for."""

    def __init__(self, client: redis.Redis, line: str, views: tuple[str, ...] = (),
                 poll_s: float = 0.02) -> None:
        super().__init__(client, line, views)
        self.key, self.poll_s = keys.next_part(line), poll_s
        self._last: bytes | None = None

    def next_id(self, stopped: Stopped) -> str | None:
        while not stopped():
            value = self._call(lambda: self.client.get(self.key), stopped)
            if value is not None and value != self._last:
                self._last = value  # a bad value is skipped once, then waited past
                try:
                    return ids.check("part", value)
                except ids.BadId as exc:
                    raise NoPart(f"{self.key}: {exc}") from None
            nap(self.poll_s, stopped)
        return None


class TriggerReader(_Waiting):
    """Entries of `keys.triggers(line)` added after start: each is one part, `part_id` its
    id. The last entry id is read at start, so a restart never re-shoots old triggers and
    none is lost between two blocking reads."""

    def __init__(self, client: redis.Redis, line: str, views: tuple[str, ...] = (),
                 block_ms: int = 250) -> None:
        super().__init__(client, line, views)
        self.key, self.block_ms = keys.triggers(line), block_ms
        newest = self._call(lambda: client.xrevrange(self.key, count=1), lambda: False)
        self.last_id: bytes | str = newest[0][0] if newest else "0-0"
        self._queue: deque = deque()

    def next_id(self, stopped: Stopped) -> str | None:
        while not self._queue:
            if stopped():
                return None
            got = self._call(lambda: self.client.xread({self.key: self.last_id}, count=32,
                                                       block=self.block_ms), stopped)
            for _, entries in got or ():
                self._queue.extend(entries)
        entry_id, fields = self._queue.popleft()
        self.last_id = entry_id
        try:
            return ids.check("part", fields.get(b"part_id", b""))
        except ids.BadId as exc:
            raise NoPart(f"trigger {_text(entry_id)}: {exc}") from None


def announce(client: redis.Redis, line: str, part_id: str, *, via: str,
             by: str | None = None) -> str:
    """Trigger part `part_id` on `line`: one entry of `keys.triggers(line)` and the new value
    of `keys.next_part(line)`, in one MULTI. Returns the entry id."""
    try:
        part_id = ids.check("part", part_id)
    except ids.BadId as exc:
        raise SettingsError(str(exc)) from None
    return write_trigger(client, line, part_id, via, by)


def write_trigger(client: redis.Redis, line: str, part_id: str, via: str,
                  by: str | None = None) -> str:
    """The one write of a trigger, for a part id already checked: the entry and the next
    part id in one MULTI (`rlrctl trigger` and the PLC bridges both call it)."""
    fields = {"part_id": part_id, "ts": repr(time.time()), "via": via}
    if by:
        fields["by"] = by
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.triggers(line), fields, maxlen=TRIGGERS_MAXLEN, approximate=True)
    pipe.set(keys.next_part(line), part_id)
    entry_id, _ = pipe.execute()
    return _text(entry_id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ----------------------------------------------------------------------------- the spec

PartIds = Counter | NamePattern | KeyWatch | TriggerReader


def _counter(spec: str, rest: str, views: tuple[str, ...]) -> Counter:
    template, start = rest or "{n}", 1
    found = re.fullmatch(r"(?:(.*):)?start=(-?\d+)", rest)
    if found:
        template, start = found.group(1) or "{n}", int(found.group(2))
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields != ["n"]:
        raise _bad(spec, "a counter's TEMPLATE holds {n} once (with a format such as {n:06d}) "
                         "and no other {field}")
    counter = Counter(template, start, views)
    try:
        counter.format(start)
    except (ValueError, ids.BadId) as exc:
        raise _bad(spec, f"the first id does not format ({exc})") from None
    return counter


def _name(spec: str, rest: str, views: tuple[str, ...]) -> NamePattern:
    try:
        regex = re.compile(rest)
    except re.error as exc:
        raise _bad(spec, f"REGEX does not compile ({exc})") from None
    if not regex.groups:
        raise _bad(spec, "REGEX needs a group, (...), around the part id in the file name")
    return NamePattern(regex, views)


def open_part_ids(spec: str, views: tuple[str, ...] = (), client: redis.Redis | None = None,
                  line: str | None = None) -> PartIds:
    """The part ids `--part-from SPEC` names; `key` and `trigger` read `line` through
    `client`. A spec of no known form is one line listing the forms."""
    kind, _, rest = spec.partition(":")
    if kind == "counter":
        return _counter(spec, rest, views)
    if kind == "name":
        return _name(spec, rest, views)
    if kind in ("key", "trigger") and not rest:
        if client is None or line is None:
            raise ValueError(f"--part-from {kind} reads Redis: pass a client and a line")
        return (KeyWatch if kind == "key" else TriggerReader)(client, line, views)
    raise _bad(spec, "not a known form")
