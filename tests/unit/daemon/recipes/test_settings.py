"""RLR_RECIPE: the recipe a line starts with, an id or unset."""

from __future__ import annotations

import pytest

from daemon.errors import SettingsError
from daemon.recipes.settings import RecipeSettings
from daemon.settings import load


def test_rlr_recipe_is_read_and_empty_means_none(monkeypatch):
    monkeypatch.setenv("RLR_RECIPE", "bracket-a")
    assert load(RecipeSettings).recipe == "bracket-a"
    monkeypatch.setenv("RLR_RECIPE", "")
    assert load(RecipeSettings).recipe is None


def test_a_recipe_name_that_is_not_an_id_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("RLR_RECIPE", "two words")
    with pytest.raises(SettingsError, match="RLR_RECIPE"):
        load(RecipeSettings)
