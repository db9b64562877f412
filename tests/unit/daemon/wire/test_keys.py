"""Key names: every key of a line carries its hash tag, and no two frames share a dedup key."""

from __future__ import annotations

from daemon.wire import keys


def test_frames_whose_names_hold_colons_get_different_dedup_keys():
    # camera "camC:x" + frame "p1-col" and camera "camC" + frame "x:p1-col" shared one key
    a = keys.seen("l1", "camC:x", "p1-col")
    b = keys.seen("l1", "camC", "x:p1-col")
    assert a != b
    assert a == "rlr:seen:{l1}:6:camC:x:p1-col" and b == "rlr:seen:{l1}:4:camC:x:p1-col"


def test_every_key_of_a_line_has_its_hash_tag():
    for key in (keys.frames("L"), keys.results("L"), keys.alerts("L"), keys.dlq("L"),
                keys.shadow("L"), keys.seen("L", "c", "f"), keys.alert_window("L", "c"),
                keys.alert_cooldown("L", "c"), keys.stats("L"), keys.alias("L"),
                keys.rollouts("L")):
        assert "{L}" in key
