"""Rate-limited log events: a flood becomes one line every few seconds that says how many."""

from __future__ import annotations

import time

from daemon.logs import Throttle


def test_the_first_event_goes_out_and_the_rest_are_counted_until_the_interval_is_over():
    t = Throttle(0.2)
    assert t.due("skipped", 5) == 5
    assert [t.due("skipped", 3) for _ in range(4)] == [0, 0, 0, 0]
    assert t.due("other") == 1  # keys are independent
    time.sleep(0.25)
    assert t.due("skipped", 1) == 13  # the 12 held back, and this one


def test_held_back_counts_come_out_when_overdue_even_if_nothing_new_happens():
    t = Throttle(0.1)
    t.due("k", 1)
    t.due("k", 4)
    assert t.overdue() == {}
    time.sleep(0.15)
    assert t.overdue() == {"k": 4}
    assert t.overdue() == {}
