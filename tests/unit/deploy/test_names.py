"""Every `RLR_*` name in the deployment files and the docs is a real setting:
rlrctl refuses unknown `RLR_` variables at start, so a stale name would stop a service."""

from __future__ import annotations

import pytest

from tests.unit.deploy.files import DEPLOY, REPO, RLR_NAME, known_settings

FILES = [*sorted(p for p in DEPLOY.rglob("*")
                 if p.is_file() and p.relative_to(DEPLOY).parts[0] != "redis"),
         *sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
# named on purpose: the variable a Kubernetes service link would inject (why pods turn them off)
NOT_SETTINGS = {"RLR_WORKER_METRICS_PORT"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_rlr_names_are_settings(path):
    names = set(RLR_NAME.findall(path.read_text())) - NOT_SETTINGS
    unknown = names - known_settings()
    assert not unknown, f"{path.relative_to(REPO)} names unknown settings {sorted(unknown)}"


def test_the_exceptions_really_are_not_settings():
    assert not NOT_SETTINGS & known_settings()
