from daemon.wire.parts import PartVerdict


def test_a_part_verdict_survives_its_stream_fields():
    v = PartVerdict("line1", "SN-1", "incomplete", "reject", 1_800_000_001.5, 1_800_000_000.0,
                    1500.0, {"top": {"camera": "cam1", "score": 0.4, "is_anomaly": False}},
                    ("side",), "bracket@2", "BRK-1", "bracket", "w1")
    back = PartVerdict.from_fields(v.to_fields())
    assert back == v
    assert back.rejected
    assert v.to_json()["missing"] == ["side"]


def test_an_entry_without_an_outcome_reads_fail_safe():
    fields = {b"v": b"1.1", b"part_id": b"SN-2", b"verdict": b"incomplete", b"ts": b"1.0"}
    v = PartVerdict.from_fields(fields)
    assert v.outcome == "reject"
    assert v.first_ts == 1.0 and v.views == {} and v.missing == ()
