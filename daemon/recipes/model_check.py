"""Whether a line's deployed model can serve a recipe: the version it names (or the one
under its alias) must be deployed on the line and know the recipe's class. Asked before every
switch, so a product is never scored with a model that has no idea what it looks like."""

from __future__ import annotations

import re
from typing import Protocol

from daemon.errors import RegistryError
from daemon.models.rollout import Rollout
from daemon.models.versions import ModelVersion
from daemon.recipes.recipe import Recipe

ALIASES = ("production", "canary")
_VERSION = re.compile(r"m-[0-9a-f]{12}")


class Versions(Protocol):
    """What the check reads of `daemon.models.registry.Registry`."""

    def rollout(self, line: str) -> Rollout: ...

    def get(self, version_id: str) -> ModelVersion: ...


def serving(recipe: Recipe, line: str, registry: Versions) -> tuple[str | None, str | None]:
    """(version id that would score the recipe's parts, None) or (None, why not)."""
    ro = registry.rollout(line)
    if recipe.model in ALIASES:
        vid = getattr(ro, recipe.model)
        if vid is None:
            return None, (f"recipe {recipe.name} wants the {recipe.model} model, but line "
                          f"{line} has no {recipe.model} deployed")
        return vid, None
    if not _VERSION.fullmatch(recipe.model):
        return None, (f"recipe {recipe.name} names model {recipe.model!r}: use production, "
                      "canary or a version id (m- and 12 hex digits, `rlrctl models`)")
    deployed = {v for v in (ro.production, ro.canary) if v is not None}
    if recipe.model not in deployed:
        now = ", ".join(f"{a} {getattr(ro, a)}" for a in ALIASES if getattr(ro, a)) or "nothing"
        return None, (f"recipe {recipe.name} needs model {recipe.model}, which is not deployed "
                      f"on line {line} (deployed: {now})")
    return recipe.model, None


def why_not(recipe: Recipe, line: str, registry: Versions) -> str | None:
    """Why the line's deployed model cannot serve `recipe` (one line), or None when it can."""
    vid, why = serving(recipe, line, registry)
    if vid is None:
        return why
    try:
        version = registry.get(vid)
    except RegistryError:
        return (f"recipe {recipe.name} would be scored by {vid} on line {line}, which is not "
                "in the model registry")
    if recipe.product_class not in version.class_names:
        classes = ", ".join(version.class_names) or "none"
        return (f"recipe {recipe.name} names class '{recipe.product_class}', but {vid} "
                f"deployed on line {line} has classes: {classes}")
    return None
