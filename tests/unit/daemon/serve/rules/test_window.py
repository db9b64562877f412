"""The k-of-n window's entry and step (the ports agree on it: see
tests/integration/serve/test_rules_window.py)."""

from __future__ import annotations

from daemon.serve.rules.window import RecentFrame, push


def test_push_puts_the_newest_in_front_and_keeps_n():
    window: list[str] = []
    for x in "abcde":
        window = push(window, x, 3)
    assert window == ["e", "d", "c"]
    assert push(["b", "a"], "c", 1) == ["c"]


def test_the_entry_split_around_its_result_id_joins_back_to_its_json():
    v = RecentFrame('fr"ame\0-7', 0.1234567, True, "1700000000000-3", 1_700_000_000.5)
    head, tail = v._replace(result_id="").around_result_id()
    assert head + "1700000000000-3" + tail == v.to_json()
    assert RecentFrame.from_json(head + "9-9" + tail) == v._replace(score=0.123457,
                                                                      result_id="9-9")
