"""The registry's pure parts (no Redis): a canary's scope."""

from __future__ import annotations

import pytest

from daemon.models.registry import _canary_scope


def test_canary_scope_needs_exactly_one_of_cameras_or_percent():
    from daemon.models.registry import RegistryError

    assert _canary_scope([" b", "a", "b"], None) == (["a", "b"], 0.0)
    assert _canary_scope(None, 10) == ([], 10.0)
    for cams, pct in [(None, None), (["a"], 5.0), (None, 0.0), (None, 101.0), ([""], None)]:
        with pytest.raises(RegistryError):
            _canary_scope(cams, pct)
