"""Unit tests run without services (`make test-unit`): a test here that opens a Redis connection
fails at once, naming the way out, instead of finding the shared server or waiting on a retry
loop. Tests that need Redis, a browser or a running process belong in tests/integration."""

from __future__ import annotations

import pytest

NO_REDIS = ("a unit test opened a Redis connection; unit tests use the in-memory ports "
            "(daemon/serve/memory_io.py) or fakes: move this test to tests/integration")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed  # so `no_redis` does not report a failure twice
    return report


@pytest.fixture(autouse=True)
def no_redis(monkeypatch, request):
    """Every Redis connection attempt fails the test; one swallowed by the code under test (a
    retry loop, a supervisor) still fails it at teardown."""
    try:
        import redis.asyncio.connection as async_connection
        import redis.connection as sync_connection
    except ImportError:  # pragma: no cover - redis is a dependency of the daemon
        yield
        return
    attempts: list[str] = []

    def refuse(self, *args, **kwargs):
        attempts.append(repr(self))
        pytest.fail(NO_REDIS, pytrace=False)

    async def refuse_async(self, *args, **kwargs):
        refuse(self)

    monkeypatch.setattr(sync_connection.AbstractConnection, "connect", refuse)
    monkeypatch.setattr(async_connection.AbstractConnection, "connect", refuse_async)
    yield
    if attempts and not getattr(request.node, "call_failed", False):
        pytest.fail(f"{NO_REDIS} ({attempts[0]})", pytrace=False)
