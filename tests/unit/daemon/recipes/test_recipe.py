import json

import pytest

from daemon.recipes.recipe import RecipeError, load, parse

GOOD = {"name": "bracket-a", "number": 3, "product": "BRK-100-A", "class": "bracket",
        "views": [{"name": "top", "camera": "cam1"}, {"name": "side", "camera": "cam1",
                                                       "threshold": 0.9}],
        "threshold": 0.8}


def test_a_recipe_file_reads_as_toml_and_as_json(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text('name = "bracket-a"\nproduct = "BRK-100-A"\nclass = "bracket"\n'
                    '[[views]]\nname = "top"\ncamera = "cam1"\n')
    r = load(toml)
    assert r.product_class == "bracket" and r.view_names == ("top",)
    assert r.incomplete == "reject" and r.model == "production"
    js = tmp_path / "r.json"
    js.write_text(json.dumps(GOOD))
    r = load(js)
    assert r.number == 3
    assert parse(r.to_json()) == r


def test_views_thresholds_and_cameras():
    r = parse(GOOD)
    assert r.threshold_for("side") == 0.9
    assert r.threshold_for("top") == 0.8
    assert r.view_of("cam1", "side") == "side"
    assert r.view_of("cam1", None) is None  # two views on cam1: the frame must say which
    one = parse({**GOOD, "views": [{"name": "top"}]})
    assert one.view_of("anycam", None) == "top"


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "a b"}, "name"), ({"number": 0}, "number"), ({"class": ""}, "class"),
    ({"views": []}, "views"), ({"incomplete": "maybe"}, "incomplete"),
    ({"threshold": -1}, "threshold"), ({"colour": "red"}, "colour"),
    ({"views": [{"name": "top"}, {"name": "top"}]}, "listed twice"),
    ({"views": [{"name": "top", "camera": "cam\x00"}]}, "views.0.camera"),
])
def test_a_bad_field_is_one_line_naming_it(change, field):
    with pytest.raises(RecipeError) as err:
        parse({**GOOD, **change})
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_a_file_that_does_not_parse_says_where(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text('name = "x\n')
    with pytest.raises(RecipeError, match="not valid TOML"):
        load(bad)
    with pytest.raises(RecipeError, match="cannot read"):
        load(tmp_path / "missing.toml")


def test_an_activation_keeps_the_previous_recipe_for_parts_triggered_before_the_switch():
    from daemon.recipes.recipe import Activation
    a = parse(GOOD)
    b = parse({**GOOD, "name": "bracket-b", "class": "bracket2"})
    first = Activation(line="l1", recipe=a, revision=1, since=100.0, by="ann", via="cli")
    second = Activation(line="l1", recipe=b, revision=4, since=200.0, by="plc", via="modbus",
                        previous=first)
    back = Activation.from_hash("l1", {k.encode(): v.encode()
                                       for k, v in second.to_hash().items()})
    assert back == second
    assert back.at(199.9).label == "bracket-a@1"
    assert back.at(200.0).label == "bracket-b@4"
    assert first.at(50.0) is first  # nothing earlier known: the oldest one stands
    assert Activation.from_hash("l1", {}) is None
