"""The part block of the Modbus map: per line, the last part verdict with its part id (so the PLC
matches a reject to the part in its own tracking) and the only holding registers a PLC may
write: the next part id with its trigger, and a recipe number to switch to.

Line `j` (in RLR_LINES order) has its block at `PART_BASE + PART_BLOCK * j`, an address that does
not move when cameras are added. A part id is UTF-8, two bytes per register (the first byte in
the high byte), zero padded, with its length in bytes in a register of its own: 64 registers
hold the longest id the grammar allows (128 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence

from daemon.line.bridges.linestate import PartState

PART_BASE = 4096
PART_BLOCK = 256
ID_REGISTERS = 64  # 128 bytes: `daemon.wire.ids.MAX_BYTES`
ID_BYTES = 2 * ID_REGISTERS
VERDICT_CODES = {"none": 0, "pass": 1, "reject": 2, "incomplete": 3}
OUTCOME_CODES = {"none": 0, "pass": 1, "reject": 2}
# recipe_status values
RECIPE_NONE, RECIPE_ACTIVE, RECIPE_UNKNOWN, RECIPE_REFUSED, RECIPE_FAILED = range(5)

# offsets in the block
SEQ, VERDICT, OUTCOME, TOTAL_MS, ID_LEN, ID = 0, 2, 3, 4, 5, 6
RECIPE_SELECT, RECIPE_STATUS, RECIPE_REQUESTS = 96, 97, 98
NEXT_LEN, NEXT_ID, TRIGGER, TRIGGERS = 128, 129, 129 + ID_REGISTERS, 130 + ID_REGISTERS
WRITABLE = frozenset({RECIPE_SELECT, NEXT_LEN, *range(NEXT_ID, NEXT_ID + ID_REGISTERS), TRIGGER})

# (offset, name, meaning, registers) of a line's block, as `--print-map` lists it
PART_REGISTERS = (
    (SEQ, "part_seq_hi", "part verdicts since the bridge started, u32 high word (0: none yet; "
     "the registers below then hold the last verdict from before the start)", 1),
    (SEQ + 1, "part_seq_lo", "... low word: +1 for every verdict, also for a part id seen "
     "before; act on a change to a non-zero value", 1),
    (VERDICT, "part_verdict", "0 none, 1 pass, 2 reject, 3 incomplete", 1),
    (OUTCOME, "part_outcome", "what the reject gate does: 0 none, 1 pass, 2 reject", 1),
    (TOTAL_MS, "part_total_ms", "first capture to verdict, ms (clamped to 65535)", 1),
    (ID_LEN, "part_id_bytes", "length of the part id in bytes (UTF-8)", 1),
    (ID, "part_id", f"the part id: UTF-8, 2 bytes per register (first byte high), zero padded, "
     f"{ID_REGISTERS} registers", ID_REGISTERS),
    (RECIPE_SELECT, "recipe_select", "WRITE N: activate the recipe numbered N (reads the "
     "last number activated from here, 0: none)", 1),
    (RECIPE_STATUS, "recipe_status", "last recipe_select: 0 none, 1 activated, 2 no recipe "
     "has that number, 3 refused (rlrctl recipe history says why), 4 failed (write again)", 1),
    (RECIPE_REQUESTS, "recipe_requests", "+1 for every recipe_select handled (wraps at "
     "65535)", 1),
    (NEXT_LEN, "next_part_bytes", "WRITE: length in bytes of the next part id (0: up to the "
     "first zero byte)", 1),
    (NEXT_ID, "next_part_id", f"WRITE: the next part id, laid out as part_id, {ID_REGISTERS} "
     "registers", ID_REGISTERS),
    (TRIGGER, "trigger", "WRITE 1 (any non-zero): trigger the next part (sets rlr:nextpart, "
     "adds to rlr:triggers; reads 0)", 1),
    (TRIGGERS, "triggers", "+1 for every trigger accepted (wraps at 65535)", 1),
)
_U16 = 0xFFFF


def block_base(j: int) -> int:
    return PART_BASE + PART_BLOCK * j


def encode_id(value: str) -> tuple[int, list[int]]:
    """A part id as (its length in bytes, `ID_REGISTERS` registers); longer ids are cut (the
    grammar caps ids at `ID_BYTES`)."""
    raw = value.encode("utf-8")[:ID_BYTES]
    padded = raw.ljust(ID_BYTES, b"\0")
    return len(raw), [padded[i] << 8 | padded[i + 1] for i in range(0, ID_BYTES, 2)]


def decode_id(registers: Sequence[int], length: int) -> bytes:
    """The bytes a PLC wrote: `length` of them, or up to the first zero byte when 0."""
    raw = b"".join(int(r & _U16).to_bytes(2, "big") for r in registers[:ID_REGISTERS])
    return raw[:length] if length else raw.split(b"\0", 1)[0]


def show(registers: list[int], base: int, state: PartState) -> None:
    """Write a line's last part verdict into its block."""
    seq = state.count & 0xFFFFFFFF
    registers[base + SEQ], registers[base + SEQ + 1] = seq >> 16, seq & _U16
    registers[base + VERDICT] = VERDICT_CODES.get(state.verdict, 0)
    registers[base + OUTCOME] = OUTCOME_CODES.get(state.outcome, 0)
    last = state.last
    registers[base + TOTAL_MS] = 0 if last is None else max(0, min(_U16, round(last.total_ms)))
    length, words = encode_id(last.part_id if last else "")
    registers[base + ID_LEN] = length
    registers[base + ID:base + ID + ID_REGISTERS] = words


def check_write(offset: int, value: int) -> bool:
    """Whether `value` may be written at `offset` of a block (the address is writable)."""
    if offset == NEXT_LEN:
        return value <= ID_BYTES
    if offset == RECIPE_SELECT:
        return value > 0  # recipe numbers are 1-65535
    return True
