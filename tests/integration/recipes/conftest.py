"""Fixtures of the recipe tests (the store, the console; tests/integration/cli takes them
too): a model registered and deployed as the production model of a fresh line, and recipe
names of the test's own, removed afterwards (the recipes hash is shared by every line)."""

from __future__ import annotations

import contextlib
import random
import uuid

import pytest

from daemon.models.registry import Registry, RegistryError
from daemon.recipes.recipe import Recipe, parse
from daemon.recipes.store import RecipeStore
from daemon.wire import keys
from rlr.artifact import update_manifest_bytes

BY = "tester@ci"
CLASSES = ["fabric", "tile", "washer"]  # the tiny model's classes (tests/conftest.py)


@pytest.fixture
def registry(rclient, line):
    """The registry; afterwards the test line's rollout and the versions it added go."""
    reg = Registry(rclient, chunk_bytes=256 * 1024)
    before = set(rclient.hkeys(keys.MODELS))
    yield reg
    rclient.delete(keys.alias(line), keys.rollouts(line))
    for vid in set(rclient.hkeys(keys.MODELS)) - before:
        with contextlib.suppress(RegistryError):
            reg.delete(vid.decode())


@pytest.fixture
def register(registry, tiny_artifact):
    """Register a version of the tiny model unique to this test; returns its id."""
    data = tiny_artifact.read_bytes()

    def make() -> str:
        unique = update_manifest_bytes(data, metrics={"test": uuid.uuid4().hex})[0]
        return registry.register(unique, BY).id

    return make


@pytest.fixture
def deployed(registry, register, line) -> str:
    """The id of the version deployed as the line's production model."""
    vid = register()
    registry.deploy(line, vid, by=BY)
    return vid


@pytest.fixture
def names(rclient):
    """`names("bracket")` -> a recipe name of this test; its recipe is removed afterwards."""
    made: list[str] = []

    def name(stem: str) -> str:
        made.append(f"{stem}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield name
    for n in made:
        rclient.hdel(keys.RECIPES, n)
        rclient.delete(keys.recipe_revisions(n))


def number() -> int:
    """A recipe number unlikely to be taken by a test running beside this one."""
    return random.randint(20_000, 65_535)


def recipe(name: str, cls: str = "tile", **fields) -> Recipe:
    return parse({"name": name, "product": f"P-{name}", "class": cls,
                  "views": [{"name": "top", "camera": "cam1"}], **fields})


@pytest.fixture
def store(rclient) -> RecipeStore:
    return RecipeStore(rclient)
