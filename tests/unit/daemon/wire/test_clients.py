"""Which Redis errors mean "away for now, retry" and which are real failures."""

from __future__ import annotations

import pytest
import redis
import redis.exceptions

from daemon.wire.clients import away


@pytest.mark.parametrize("exc", [
    redis.ConnectionError("Connection reset by peer"),
    redis.TimeoutError("Timeout reading from socket"),
    redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
    redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
    redis.ResponseError("Command # 1 (EVALSHA 6368 4 rlr:results:{l}...) of pipeline caused "
                        "error: Error running script (call to f_6368): @user_script:9: -OOM "
                        "command not allowed when used memory > 'maxmemory'."),
    redis.ResponseError("MISCONF Errors writing to the AOF file: No space left on device"),
    redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
    OSError("Network is unreachable"),
])
def test_outages_and_refused_writes_are_waited_out(exc):
    assert away(exc)


@pytest.mark.parametrize("exc", [
    redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    redis.ResponseError("NOGROUP No such key 'rlr:frames:{l}' or consumer group 'g'"),
    redis.exceptions.NoPermissionError("this user has no permissions to run the 'xadd' command"),
    ValueError("a bug"),
])
def test_everything_else_is_a_failure_to_report(exc):
    assert not away(exc)
