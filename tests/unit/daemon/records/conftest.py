"""A fresh SQLite records database per test (a temp file, migrated)."""

from __future__ import annotations

import pytest

from daemon.records.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store.open(url=f"sqlite:///{tmp_path / 'records.db'}")
    s.require_schema()
    yield s
    s.close()
