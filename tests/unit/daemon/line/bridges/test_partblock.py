"""The part block of the Modbus map: the part id's register layout, the last verdict's
registers, which offsets a PLC may write and with what."""

from __future__ import annotations

import pytest

from daemon.line.bridges import partblock as pb
from daemon.line.bridges.linestate import PartState
from daemon.wire.parts import PartVerdict


def _verdict(part_id: str, verdict: str = "reject", total_ms: float = 84.6) -> PartVerdict:
    return PartVerdict("l1", part_id, verdict, "reject" if verdict != "pass" else "pass",
                       1_700_000_001.0, 1_700_000_000.9, total_ms, {})


@pytest.mark.parametrize("part_id", ["SN-40122", "Kamera-Süd/7", "部品7", "x" * 128, "A"])
def test_a_part_id_round_trips_through_the_registers(part_id):
    length, words = pb.encode_id(part_id)
    assert len(words) == pb.ID_REGISTERS and all(0 <= w <= 0xFFFF for w in words)
    assert length == len(part_id.encode())
    assert pb.decode_id(words, length).decode() == part_id
    assert pb.decode_id(words, 0).decode() == part_id, "0 length: up to the first zero byte"


def test_the_first_byte_is_the_high_byte_and_the_rest_is_zero_padded():
    length, words = pb.encode_id("SN-1")
    assert length == 4 and words[:3] == [0x534E, 0x2D31, 0]
    assert pb.encode_id("ABC")[1][:2] == [0x4142, 0x4300]


def test_show_fills_the_verdict_registers_and_the_sequence_is_a_u32():
    regs = [0] * pb.block_base(1)
    state = PartState("l1", _verdict("SN-40122"), count=70_000)
    pb.show(regs, pb.PART_BASE, state)
    block = regs[pb.PART_BASE:]
    assert (block[pb.SEQ] << 16 | block[pb.SEQ + 1]) == 70_000
    assert block[pb.VERDICT:pb.ID] == [2, 2, 85, 8]  # reject, reject, 85 ms, 8 bytes
    assert pb.decode_id(block[pb.ID:], block[pb.ID_LEN]) == b"SN-40122"
    pb.show(regs, pb.PART_BASE, PartState("l1", _verdict("P2", "incomplete", 1e6), count=1))
    assert regs[pb.PART_BASE + pb.VERDICT:pb.PART_BASE + pb.ID] == [3, 2, 65535, 2]
    assert regs[pb.PART_BASE + pb.ID + 1] == 0, "a shorter id clears the old one's bytes"
    pb.show(regs, pb.PART_BASE, PartState("l1"))
    assert regs[pb.PART_BASE:pb.PART_BASE + pb.ID + 1] == [0] * (pb.ID + 1)


def test_the_block_layout_does_not_overlap_and_only_the_write_registers_are_writable():
    spans = [set(range(off, off + n)) for off, _, _, n in pb.PART_REGISTERS]
    assert sum(map(len, spans)) == len(set().union(*spans)), "overlapping registers"
    assert max(max(s) for s in spans) < pb.PART_BLOCK
    written = {off for off, name, meaning, n in pb.PART_REGISTERS if meaning.startswith("WRITE")
               for off in range(off, off + n)}
    assert written == pb.WRITABLE
    assert pb.TRIGGER == pb.NEXT_ID + pb.ID_REGISTERS, "length, id and trigger: one FC 16 write"


def test_write_values_are_checked():
    assert pb.check_write(pb.NEXT_LEN, 128) and not pb.check_write(pb.NEXT_LEN, 129)
    assert pb.check_write(pb.RECIPE_SELECT, 1) and not pb.check_write(pb.RECIPE_SELECT, 0)
    assert pb.check_write(pb.NEXT_ID, 0xFFFF)
