"""RecipeStore against a real Redis: immutable revisions, switches recorded with who / via /
when and the recipe they replaced, refusals that leave the old recipe in force (class the model
lacks, version not deployed, unknown recipe), RLR_RECIPE's default and the announcement."""

from __future__ import annotations

import time

import pytest

from daemon.recipes.recipe import RecipeError
from daemon.wire import keys
from tests.integration.procs import wait_for
from tests.integration.recipes.conftest import BY, number, recipe


def test_a_revision_is_kept_and_identical_content_is_not_stored_twice(store, names):
    name = names("bracket")
    assert store.add(recipe(name, threshold=0.8), BY) == 1
    assert store.add(recipe(name, threshold=0.8), "someone-else") == 1
    assert store.add(recipe(name, threshold=0.9), BY) == 2
    assert store.get(name)[0].threshold == 0.9 and store.get(name)[1] == 2
    assert store.get(name, 1) == (recipe(name, threshold=0.8), 1)  # revision 1 unchanged
    row = next(r for r in store.list() if r["name"] == name)
    assert (row["revision"], row["class"], row["views"], row["by"]) == (2, "tile", ["top"], BY)
    assert [e["revision"] for e in store.revisions(name)] == [1, 2]
    with pytest.raises(RecipeError, match="no revision 3"):
        store.get(name, 3)
    with pytest.raises(RecipeError, match="unknown recipe"):
        store.get(names("nothing"))


def test_a_number_selects_one_recipe_only(store, names):
    n, a, b = number(), names("a"), names("b")
    store.add(recipe(a, number=n), BY)
    assert store.by_number(n) == a
    with pytest.raises(RecipeError, match=f"number: {n} is already recipe {a}"):
        store.add(recipe(b, number=n), BY)
    store.add(recipe(a, number=n, threshold=0.7), BY)  # a new revision keeps its number


def test_a_switch_records_who_via_when_and_the_recipe_it_replaced(store, registry, deployed,
                                                                  line, names):
    a, b = names("cable"), names("tile")
    store.add(recipe(a, "fabric"), BY)
    store.add(recipe(b, "tile"), BY)
    first = store.activate(line, a, by="ann", via="cli", registry=registry)
    before = time.time()
    second = store.activate(line, b, by="plc", via="modbus", registry=registry)
    assert second.since >= before and second.previous.label == f"{a}@1"
    active = store.active(line)
    assert active.label == f"{b}@1" and active.by == "plc" and active.via == "modbus"
    # a part triggered before the switch is still made under the old recipe
    assert active.at(first.since + 1e-6).recipe.name == a
    assert active.at(second.since).recipe.name == b
    h = store.history(line)
    assert [(e["action"], e["name"], e["revision"], e["by"], e["via"]) for e in h] == [
        ("activated", b, 1, "plc", "modbus"), ("activated", a, 1, "ann", "cli")]
    # selecting the active recipe again (a PLC repeating itself) changes nothing
    assert store.activate(line, b, by="plc", via="modbus", registry=registry) == active
    assert len(store.history(line)) == 2


@pytest.mark.parametrize("case", ["class", "version", "unknown", "no-canary"])
def test_a_refused_switch_says_why_in_one_line_and_the_old_recipe_stays(
        case, store, registry, register, deployed, line, names):
    good = names("cable")
    store.add(recipe(good, "washer", model=deployed), BY)
    store.activate(line, good, by=BY, via="cli", registry=registry)
    bad = names("bracket")
    want = {"class": (recipe(bad, "bracket"), f"names class 'bracket', but {deployed} deployed "
                      f"on line {line} has classes: fabric, tile, washer"),
            "version": (recipe(bad, "tile", model=(other := register())),
                        f"needs model {other}, which is not deployed on line {line}"),
            "unknown": (None, f"unknown recipe '{bad}'"),
            "no-canary": (recipe(bad, "tile", model="canary"),
                          f"line {line} has no canary deployed")}[case]
    if want[0] is not None:
        store.add(want[0], BY)
    with pytest.raises(RecipeError) as err:
        store.activate(line, bad, by="ann", via="console", registry=registry)
    message = str(err.value)
    assert want[1] in message and message.endswith(f"the active recipe stays {good}@1")
    assert "\n" not in message
    assert store.active(line).label == f"{good}@1"
    last = store.history(line)[0]
    assert (last["action"], last["name"], last["by"], last["via"], last["why"]) == (
        "refused", bad, "ann", "console", message)


def test_a_line_without_a_rollout_checks_only_that_the_recipe_exists(store, line, names):
    name = names("bracket")
    store.add(recipe(name, "bracket", model="m-0123456789ab"), BY)
    assert store.activate(line, name, by=BY, via="cli").label == f"{name}@1"
    with pytest.raises(RecipeError, match=f"unknown recipe.*; the active recipe stays {name}@1"):
        store.activate(line, names("missing"), by=BY, via="cli")


def test_the_default_recipe_applies_only_to_a_line_without_one(store, line, names):
    a, b = names("a"), names("b")
    store.add(recipe(a), BY)
    store.add(recipe(b), BY)
    made = store.ensure_default(line, a, "worker-1")
    assert made.via == "env" and store.active(line).label == f"{a}@1"
    store.activate(line, b, by="ann", via="console")
    assert store.ensure_default(line, a, "worker-2") is None  # a switch is never undone
    assert store.active(line).label == f"{b}@1"


def test_a_switch_is_announced_on_the_recipe_channel(store, rclient, line, names):
    name = names("a")
    store.add(recipe(name), BY)
    sub = rclient.pubsub()
    sub.subscribe(keys.RECIPE_CHANNEL)
    try:
        assert wait_for(lambda: sub.get_message(timeout=0.1), 5, "subscribed")["type"] == \
            "subscribe"
        store.activate(line, name, by=BY, via="cli")
        assert wait_for(lambda: sub.get_message(timeout=0.1), 5, "the announcement")["data"] \
            == line.encode()
    finally:
        sub.close()
