"""The recipes as a worker applies them: which class a frame is scored as, its threshold, and
the station (views, deadline, outcome) its part is joined under.

Each line's active recipe (`keys.recipe_active`, written by `rlrctl recipe activate`, the PLC
bridges and the console) is read every second; a switch applies to the parts whose trigger
(the capture time of their first view) is at or after it, so frames of a part triggered just
before the switch are still judged under the recipe they were made for (`Activation.at`). A
line with no active recipe uses the `RLR_PART_*` settings and the frames' own classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from daemon import logs
from daemon.errors import FrameError
from daemon.recipes.recipe import Activation, RecipeError
from daemon.serve.rules.parts import JoinRequest, Station
from daemon.serve.settings import StationSettings
from daemon.wire.groups import Delivery
from daemon.wire.schema import Frame, Result

log = logs.get("rlr.worker")


class LineRecipes:
    """Each line's active recipe, as last read."""

    def __init__(self, settings: StationSettings, lines: Sequence[str]) -> None:
        self.s = settings
        self.active: dict[str, Activation | None] = dict.fromkeys(lines)
        self._default = Station(settings.station_views, settings.part_deadline_ms,
                                settings.part_incomplete)

    def update(self, records: Mapping[str, Mapping]) -> None:
        """Take each line's record (`RedisStreams.active_recipes`); an unreadable one keeps
        the recipe in force and says so."""
        for line, fields in records.items():
            try:
                new = Activation.from_hash(line, dict(fields)) if fields else None
            except (RecipeError, ValueError, KeyError) as exc:
                log.error("recipe_unreadable", line=line, error=str(exc)[:300])
                continue
            old = self.active.get(line)
            if new != old:
                self.active[line] = new
                log.info("recipe_active", line=line, recipe=new.label if new else None,
                         since=new.since if new else None, via=new.via if new else None)

    def at(self, line: str, ts: float) -> Activation | None:
        active = self.active.get(line)
        return None if active is None else active.at(ts)

    def station(self, line: str, ts: float) -> Station:
        act = self.at(line, ts)
        if act is None:
            return self._default
        r = act.recipe
        return Station(r.view_names, r.deadline_ms or self.s.part_deadline_ms, r.incomplete,
                       act.label, r.product, r.product_class)

    def place(self, line: str, frame: Frame) -> Frame:
        """The frame with its class and view as the recipe in force sets them; `FrameError`
        for a view the recipe's station does not have."""
        act = self.at(line, frame.ts)
        if act is None:
            views = self.s.station_views
            if frame.part is not None and views and (frame.view or frame.camera) not in views:
                raise FrameError("unknown_view", f"view {frame.view or frame.camera!r} is not "
                                 f"one of the line's views (RLR_PART_VIEWS={','.join(views)})")
            return frame
        r = act.recipe
        changes: dict = {}
        if frame.product_class is None:
            changes["product_class"] = r.product_class
        if frame.part is not None:
            view = r.view_of(frame.camera, frame.view)
            if view is None or r.view(view) is None:
                raise FrameError("unknown_view", _unknown_view(frame, view, act))
            if view != frame.view:
                changes["view"] = view
        return dataclasses.replace(frame, **changes) if changes else frame

    def place_all(self, fresh: Sequence[tuple[Delivery, Frame]]) -> tuple[
            list[tuple[Delivery, Frame]], list[tuple[Delivery, FrameError]]]:
        placed, dead = [], []
        for d, frame in fresh:
            try:
                placed.append((d, self.place(d.stream, frame)))
            except FrameError as exc:
                dead.append((d, exc))
        return placed, dead

    def threshold(self, line: str, frame: Frame) -> float | None:
        """The recipe's threshold for the frame (None: the model's own for its class)."""
        act = self.at(line, frame.ts)
        return None if act is None else act.recipe.threshold_for(frame.view)

    def join_request(self, line: str, res: Result) -> JoinRequest | None:
        """How the result joins its part (None: the frame has no part)."""
        if not res.part:
            return None
        station = self.station(line, res.capture_ts)
        return JoinRequest.of(res, res.view or res.camera, station)


def _unknown_view(frame: Frame, view: str | None, act: Activation) -> str:
    views = ", ".join(act.recipe.view_names)
    if view is None:
        return (f"part {frame.part!r} from camera {frame.camera!r} names no view, and recipe "
                f"{act.label} has several views ({views}) or none bound to that camera: send "
                "the frame's view")
    return f"view {view!r} is not one of recipe {act.label}'s views ({views})"
