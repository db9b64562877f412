"""What a PLC may change on the line, against a real Redis: a trigger sets the next part id and
adds to the triggers stream in one step; a bad part id changes nothing; a recipe is switched by
number or name through the recipe store, and a refusal says why."""

from __future__ import annotations

import uuid

import pytest

from daemon.line.bridges import plcwrites
from daemon.recipes.recipe import parse
from daemon.wire import keys
from daemon.wire.ids import BadId


def test_a_trigger_sets_the_next_part_and_adds_a_trigger(rclient, line):
    entry = plcwrites.trigger(rclient, line, "SN-40122", "modbus")
    assert plcwrites.trigger(rclient, line, "Kamera-Süd-7".encode(), "opcua", by="scada")
    assert rclient.get(keys.next_part(line)) == "Kamera-Süd-7".encode()
    (first_id, first), (_, second) = rclient.xrange(keys.triggers(line))
    assert first_id.decode() == entry
    assert first[b"part_id"] == b"SN-40122" and first[b"via"] == b"modbus"
    assert float(first[b"ts"]) > 0 and b"by" not in first
    assert second[b"via"] == b"opcua" and second[b"by"] == b"scada"


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, b"\xff\xfe", "tab\there"])
def test_a_bad_part_id_is_refused_and_nothing_is_written(rclient, line, bad):
    with pytest.raises(BadId, match="part id"):
        plcwrites.trigger(rclient, line, bad, "modbus")
    assert not rclient.exists(keys.triggers(line), keys.next_part(line))


def _recipe(name: str, number: int):
    return parse({"name": name, "number": number, "product": f"P-{name}", "class": "washer",
                  "views": [{"name": "top", "camera": "cam1"}]})


@pytest.fixture
def recipe(rclient):
    """A recipe with a number no other test uses; removed afterwards."""
    from daemon.recipes.store import RecipeStore

    name, number = f"r{uuid.uuid4().hex[:8]}", 20_000 + uuid.uuid4().int % 40_000
    RecipeStore(rclient).add(_recipe(name, number), by="test")
    yield name, number
    rclient.hdel(keys.RECIPES, name)
    rclient.delete(keys.recipe_revisions(name))


def test_a_recipe_is_selected_by_number_or_name_and_recorded(rclient, line, recipe):
    from daemon.recipes.store import RecipeStore

    name, number = recipe
    assert plcwrites.select_recipe(rclient, line, "modbus", number=number) == f"{name}@1"
    active = RecipeStore(rclient).active(line)
    assert (active.recipe.name, active.by, active.via) == (name, "plc", "modbus")
    # by name, and again: the recipe in force stays as it was switched (nothing rewritten)
    assert plcwrites.select_recipe(rclient, line, "opcua", name=name, by="scada") == f"{name}@1"
    assert RecipeStore(rclient).active(line).since == active.since


def test_an_unknown_recipe_is_refused_and_the_old_one_stays(rclient, line, recipe):
    from daemon.recipes.store import RecipeStore

    name, number = recipe
    plcwrites.select_recipe(rclient, line, "modbus", number=number)
    with pytest.raises(plcwrites.Refused) as err:
        plcwrites.select_recipe(rclient, line, "modbus", number=number + 1)
    assert err.value.unknown
    with pytest.raises(plcwrites.Refused) as err:
        plcwrites.select_recipe(rclient, line, "opcua", name=f"{name}-missing")
    assert not err.value.unknown and str(err.value)
    assert RecipeStore(rclient).active(line).recipe.name == name
