"""The interface every rule implements, and what a rule is given and gives back.

The publisher runs the rules (`daemon.serve.rules.build`) in order on each batch, after its
results are published: a rule gets the frames the batch published for the first time (a
replayed frame is never judged twice) and returns what to emit; the publisher emits it through
the result sink before the next rule runs. A rule's state that every worker of a line must see
(the k-of-n window, a camera's raised conditions, the cooldown) lives behind the sink, never in
the rule: it is written in the same atomic step that publishes the results (`Rule.history`), or
read and claimed through `Shared` at emit time (an alert's cooldown is claimed by `raise_alert`
together with its entry).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from daemon.serve.ports import Published
from daemon.wire.parts import PartVerdict
from daemon.wire.schema import Alert, HealthEvent, Result


class Fresh(NamedTuple):
    """One result the batch published for the first time."""

    line: str
    result: Result
    published: Published  # its result id; for an anomalous result, its camera's window
    measures: Any = None  # its camera-health measures (None: not measured)
    manifest: dict | None = None  # the manifest of the model that scored it (calibration)


class Emits(NamedTuple):
    """What a rule asks the publisher to emit, in this order."""

    health: tuple[HealthEvent, ...] = ()  # announced once per line by the sink
    alerts: tuple[tuple[Alert, float], ...] = ()  # (alert, cooldown_s): raised unless its
    # camera is still cooling down from an earlier alert of any worker
    parts: tuple[PartVerdict, ...] = ()  # emitted unless the part is already decided


class Shared(Protocol):
    """The line's shared state as a rule reads it: the result sink, each call retried through
    outages like every call of the publisher."""

    async def camera_health(self, line: str, camera: str) -> tuple[str, ...]: ...


class Rule(Protocol):
    name: str
    # How many of each camera's latest verdicts the rule reads (`Fresh.published.window`). The
    # publish step keeps the longest window any rule asks for, in the same script call that
    # publishes the results: a window costs no round trip of its own.
    history: int

    async def judge(self, batch: Sequence[Fresh], shared: Shared) -> Emits:
        """What the batch's new results make this rule emit."""

    # A rule may also define `async def tick(self, shared) -> Emits`: the worker calls it
    # every `RLR_PART_SWEEP_MS` (what time alone decides, such as a part's deadline).
