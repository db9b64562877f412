"""The k-of-n window: each camera's most recent verdicts, newest first, kept by the result sink
so every worker of a line sees one window (keys `rlr:alertwin:{line}:<camera>`).

Defined here once: the entry (`RecentFrame`, its JSON) and the window's step (`push`: the new
entry in front, the newest `n` kept). The decision over the window (k of n, the evidence, the
cooldown's length) is the alert rule's (`daemon.serve.rules.alerts`). The ports only store:
the Redis port runs `push` as LPUSH + LTRIM inside the script that publishes the results
(atomic per line, one round trip per batch), the memory port calls `push`; both claim an
alert's cooldown (set-if-absent with an expiry) in the same step that adds the alert.
tests/integration/serve/test_rules_window.py runs the same sequences through both ports.
"""

from __future__ import annotations

import json
from typing import NamedTuple, TypeVar

from daemon.wire.schema import Result

T = TypeVar("T")


class RecentFrame(NamedTuple):
    """One frame's outcome as the camera's alert window remembers it."""

    frame_id: str
    score: float
    is_anomaly: bool
    result_id: str  # entry id in rlr:results:{line}
    ts: float  # capture time

    def to_json(self) -> str:
        return json.dumps([self.frame_id, round(self.score, 6), int(self.is_anomaly),
                           self.result_id, self.ts], separators=(",", ":"))

    @classmethod
    def of(cls, result: Result, result_id: str) -> RecentFrame:
        return cls(result.frame_id, result.score, result.is_anomaly, result_id,
                   result.capture_ts)

    @classmethod
    def from_json(cls, text: str | bytes) -> RecentFrame:
        f, s, a, r, t = json.loads(text)
        return cls(f, float(s), bool(a), r, float(t))

    def around_result_id(self) -> tuple[str, str]:
        """`to_json()` split where the result id goes: the publish script only learns the id
        from its XADD, and joins head + id + tail."""
        # rsplit: a frame id could hold the marker too; the result id comes after it
        head, tail = self._replace(result_id="\0").to_json().rsplit(json.dumps("\0")[1:-1], 1)
        return head, tail


def push(window: list[T], entry: T, n: int) -> list[T]:
    """`window` (newest first) after `entry`: in front, the newest `n` kept."""
    return [entry, *window][:n]
