"""A worker's view of the recipes: class, view and threshold of a frame, the station of its
part, and the switch taking effect at the first part triggered after it."""

from __future__ import annotations

import pytest

from daemon.errors import FrameError
from daemon.recipes.recipe import Activation, parse
from daemon.serve.recipes import LineRecipes
from daemon.serve.settings import StationSettings
from daemon.wire.schema import Frame

A = parse({"name": "a", "product": "PA", "class": "bracket", "threshold": 0.7,
           "deadline_ms": 500, "views": [{"name": "top", "camera": "cam1"},
                                         {"name": "side", "camera": "cam2", "threshold": 0.9}]})
B = parse({"name": "b", "product": "PB", "class": "washer", "incomplete": "pass",
           "views": [{"name": "only"}]})


def _frame(camera="cam1", ts=150.0, part="P1", view=None, cls=None) -> Frame:
    return Frame(camera, "f1", ts, "jpeg", b"x", None, None, cls, False, part, view)


def _recipes(settings=None) -> LineRecipes:
    r = LineRecipes(settings or StationSettings(), ["line1"])
    first = Activation(line="line1", recipe=A, revision=1, since=100.0, via="cli")
    second = Activation(line="line1", recipe=B, revision=2, since=200.0, via="modbus",
                        previous=first)
    r.update({"line1": second.to_hash()})
    return r


def test_a_frame_gets_the_class_and_view_of_the_recipe_of_its_trigger_time():
    r = _recipes()
    placed = r.place("line1", _frame())
    assert (placed.product_class, placed.view) == ("bracket", "top")
    assert r.threshold("line1", placed) == 0.7
    assert r.threshold("line1", r.place("line1", _frame("cam2"))) == 0.9
    after = r.place("line1", _frame("cam9", ts=200.0))  # B: one view, any camera
    assert (after.product_class, after.view) == ("washer", "only")
    assert r.place("line1", _frame(cls="own")).product_class == "own"


def test_a_view_the_recipe_does_not_have_is_dead_lettered_with_the_reason():
    r = _recipes()
    with pytest.raises(FrameError) as err:
        r.place("line1", _frame(view="bottom"))
    assert err.value.reason == "unknown_view" and "a@1" in err.value.detail
    with pytest.raises(FrameError, match="names no view"):
        r.place("line1", _frame("cam9"))
    placed, dead = r.place_all([(_d(), _frame(view="bottom")), (_d(), _frame())])
    assert len(placed) == 1 and dead[0][1].reason == "unknown_view"


def test_the_station_follows_the_recipe_and_falls_back_on_the_settings():
    r = _recipes()
    assert r.station("line1", 150.0).views == ("top", "side")
    assert r.station("line1", 150.0).deadline_ms == 500
    assert r.station("line1", 250.0).incomplete == "pass"
    none = LineRecipes(StationSettings(part_views="l,r", part_deadline_ms=700), ["line1"])
    st = none.station("line1", 0.0)
    assert (st.views, st.deadline_ms, st.incomplete, st.recipe) == (("l", "r"), 700, "reject",
                                                                    "")
    with pytest.raises(FrameError, match="RLR_PART_VIEWS"):
        none.place("line1", _frame(view="x"))
    assert none.place("line1", _frame(view="l")).view == "l"


def test_an_unreadable_record_keeps_the_recipe_in_force():
    r = _recipes()
    r.update({"line1": {"recipe": "{not json", "revision": "3", "since": "1"}})
    assert r.at("line1", 250.0).recipe.name == "b"
    r.update({"line1": {}})
    assert r.at("line1", 250.0) is None


def _d():
    from daemon.wire.groups import Delivery
    return Delivery("line1", "1-0", {}, 1)
