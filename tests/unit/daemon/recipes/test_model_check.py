"""Whether the deployed model can serve a recipe: the alias or version it names must be
deployed on the line and know its class; each refusal is one line naming what is missing."""

from __future__ import annotations

import pytest

from daemon.errors import RegistryError
from daemon.models.rollout import Rollout
from daemon.models.versions import ModelVersion
from daemon.recipes.model_check import why_not
from daemon.recipes.recipe import parse

PROD, CANARY, OTHER = "m-0123456789ab", "m-aaaaaaaaaaaa", "m-bbbbbbbbbbbb"


class Versions:
    """The two registry reads the check makes, over a fixed rollout and version records."""

    def __init__(self, rollout: Rollout, classes: dict[str, list[str]]) -> None:
        self.ro, self.classes = rollout, classes

    def rollout(self, line: str) -> Rollout:
        return self.ro

    def get(self, version_id: str) -> ModelVersion:
        if version_id not in self.classes:
            raise RegistryError(f"unknown model version {version_id}")
        return ModelVersion(id=version_id, sha256="", size_bytes=0, created_at=0, created_by="",
                            source_job=None, note="", class_names=self.classes[version_id],
                            preset=None, image_size=None, thresholds={}, metrics={})


REG = Versions(Rollout("line1", production=PROD, canary=CANARY),
               {PROD: ["bottle", "tile"], CANARY: ["bottle", "tile", "bracket"]})


def recipe(cls: str, model: str = "production"):
    return parse({"name": "bracket-a", "product": "BRK", "class": cls, "model": model,
                  "views": [{"name": "top"}]})


@pytest.mark.parametrize("cls,model", [("tile", "production"), ("bracket", "canary"),
                                       ("bracket", CANARY), ("tile", PROD)])
def test_a_deployed_model_that_knows_the_class_serves_the_recipe(cls, model):
    assert why_not(recipe(cls, model), "line1", REG) is None


@pytest.mark.parametrize("cls,model,registry,why", [
    ("bracket", "production", REG, f"recipe bracket-a names class 'bracket', but {PROD} "
     "deployed on line line1 has classes: bottle, tile"),
    ("tile", OTHER, REG, f"recipe bracket-a needs model {OTHER}, which is not deployed on line "
     f"line1 (deployed: production {PROD}, canary {CANARY})"),
    ("tile", "canary", Versions(Rollout("line1", production=PROD), {}),
     "recipe bracket-a wants the canary model, but line line1 has no canary deployed"),
    ("tile", "shadow", REG, "recipe bracket-a names model 'shadow': use production, canary"),
    ("tile", "production", Versions(Rollout("line1", production=PROD), {}),
     f"{PROD} on line line1, which is not in the model registry"),
])
def test_each_refusal_names_what_is_missing(cls, model, registry, why):
    assert why in why_not(recipe(cls, model), "line1", registry)
