import pytest

from daemon.wire import ids


@pytest.mark.parametrize("value", ["cam1", "SN-40122", "Kamera-Süd", "top:left", "部品7",
                                   "a/b.c", "x" * 128, "é" * 64])
def test_ids_inside_the_grammar_pass(value):
    assert ids.check("part", value) == value
    assert ids.is_id(value)


@pytest.mark.parametrize(("value", "why"), [
    ("", "is empty"), ("x" * 129, "129 bytes"), ("é" * 65, "130 bytes"),
    ("a b", "whitespace"), ("a\tb", "whitespace"), ("a\nb", "whitespace"),
    ("a\x00b", "control"), ("a\x7fb", "control"), ("a\u202eb", "format"),
    ("a\u200bb", "format"), ("a\ue000b", "private-use"), ("a\u2028b", "line separator"),
    ("a\u00a0b", "whitespace"),
])
def test_ids_outside_the_grammar_say_why(value, why):
    with pytest.raises(ids.BadId, match=why) as err:
        ids.check("view", value)
    assert str(err.value).startswith("view id ")
    assert not ids.is_id(value)


def test_bytes_must_be_utf8():
    assert ids.check("part", b"SN-1") == "SN-1"
    with pytest.raises(ids.BadId, match="not UTF-8"):
        ids.check("part", b"\xff\xfe")
    with pytest.raises(ids.BadId, match="not text"):
        ids.check("part", 7)


def test_key_part_keeps_colons_apart():
    assert ids.key_part("cam:x") + ":1" != ids.key_part("cam") + ":x:1"
