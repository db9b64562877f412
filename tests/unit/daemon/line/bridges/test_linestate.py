"""The line state's pure parts."""

from __future__ import annotations

from daemon.line.bridges.linestate import parse_cameras


def test_parse_cameras():
    assert parse_cameras(" a, b,,c ") == ["a", "b", "c"] and parse_cameras(None) == []
