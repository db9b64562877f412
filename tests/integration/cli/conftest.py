"""The recipe fixtures (a deployed model, recipe names of the test's own) for `rlrctl recipe`."""

from tests.integration.recipes.conftest import (  # noqa: F401
    deployed,
    names,
    register,
    registry,
    store,
)
