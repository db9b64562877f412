"""The example recipes in deploy/recipes/ load, select distinct PLC numbers and name the
demo model's classes, so `rlrctl recipe add deploy/recipes/*.toml` works on the demo line."""

from __future__ import annotations

from pathlib import Path

from daemon.line.demo import CLASSES
from daemon.recipes.recipe import load

FILES = sorted((Path(__file__).resolve().parents[3] / "deploy" / "recipes").glob("*.toml"))


def test_the_example_recipes_load_and_fit_the_demo_model():
    recipes = [load(p) for p in FILES]
    assert len(recipes) == 3
    assert len({r.number for r in recipes}) == 3 and None not in {r.number for r in recipes}
    assert {r.product_class for r in recipes} <= set(CLASSES)
    assert max(len(r.views) for r in recipes) == 2  # one station shoots a part twice
