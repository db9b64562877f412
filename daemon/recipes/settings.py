"""Settings of the recipes: the recipe a line starts with."""

from __future__ import annotations

from pydantic import Field, field_validator

from daemon.settings import PartSettings
from daemon.wire import ids


class RecipeSettings(PartSettings):
    """The recipe a line starts with (daemon/recipes/store.py `RecipeStore.ensure_default`)."""

    recipe: str | None = Field(None, description="recipe a line starts with when none is "
                               "active (a switch from the CLI, console or PLC is kept over it); "
                               "unset: no recipe until one is activated")

    @field_validator("recipe")
    @classmethod
    def _check_recipe(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        try:
            return ids.check("recipe", value)
        except ids.BadId as exc:
            raise ValueError(str(exc)) from None
