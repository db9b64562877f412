"""The Modbus bridge's pure parts: the register map and the table, the PLC's writes included."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.constants import ExcCodes

from daemon.errors import SettingsError
from daemon.line.bridges import modbus
from daemon.line.bridges import partblock as pb
from daemon.line.bridges.linestate import CameraState, PartState
from daemon.line.bridges.plcwrites import Refused
from daemon.wire import ids
from daemon.wire.parts import PartVerdict


def test_register_map_blocks_do_not_overlap_and_are_documented():
    entries = [("l1", f"cam{i}") for i in range(5)]
    rows = modbus.register_map(entries)
    for table in ("coil", "holding register"):
        addrs = [r.address for r in rows if r.table == table]
        assert len(addrs) == len(set(addrs)), f"{table}: overlapping addresses"
    regs = {(r.camera, r.name): r.address for r in rows if r.table == "holding register"}
    assert regs[("cam0", "heartbeat")] == 16 and regs[("cam4", "rejects")] == 16 * 5 + 13
    coils = {(r.camera, r.name): r.address for r in rows if r.table == "coil"}
    assert coils[("cam3", "reject")] == 24 and coils[("cam3", "alert_reset")] == 26
    text = modbus.format_map(rows)
    assert text.count("\n") == len(rows) + 1 and "| coil | 26 | l1 | cam3 | alert_reset |" in text


def _table() -> modbus.ModbusTable:
    return modbus.ModbusTable([("l1", "a"), ("l1", "b")], pulse_ms=50)


def test_result_sets_registers_and_pulses_the_reject_coil_of_its_camera_only():
    async def run() -> None:
        t = _table()
        cam = CameraState("l1", "b", score=1.25, threshold=0.5, is_anomaly=True,
                          capture_ts=1_700_000_000.25, frames=70_000)
        t.result(cam, fresh=True)
        regs = await t.async_getValues(0, 3, 32, 14)
        assert regs[:4] == [1, 1250, 500, 2]
        assert (regs[5] << 16 | regs[6]) == 70_000
        assert (regs[10] << 16 | regs[11]) == 1_700_000_000 and regs[12] == 250
        assert regs[13] == 1
        assert await t.async_getValues(0, 1, 0, 16) == \
            [False, False, False, True] + [False] * 4 + [True, False, False, True] + [False] * 4
        await asyncio.sleep(0.08)
        assert (await t.async_getValues(0, 1, 8, 1)) == [False], "the pulse ends"
        t.result(cam, fresh=False)  # a replayed result sets values, pulses nothing
        assert (await t.async_getValues(0, 1, 8, 1)) == [False]
        assert (await t.async_getValues(0, 3, 32, 1)) == [2]

    asyncio.run(run())


def test_only_reset_coils_are_writable_and_addresses_are_checked():
    async def run() -> None:
        t = _table()
        assert await t.async_setValues(0, 5, 0, [True]) is not None  # a reject coil
        assert await t.async_setValues(0, 6, 16, [1]) is not None  # a register
        assert await t.async_setValues(0, 5, 2, [True]) is None  # camera a's reset, no feed
        assert await t.async_getValues(0, 5, 2, 1) == [True], "the reply echoes the write"
        end = modbus.pb.block_base(1)  # one line: its part block ends the table
        assert not isinstance(await t.async_getValues(0, 3, end - 1, 2), list)  # past the end
        assert not isinstance(await t.async_getValues(0, 2, 0, 1), list)  # discrete inputs

    asyncio.run(run())


def test_health_bits_and_healthy_coil():
    t = _table()
    t.health(CameraState("l1", "a", health=("blur", "dark", "something_new")))
    assert t.registers[16 + 9] == (1 << 3) | (1 << 1) | (1 << 15)
    assert t.coils[3] is False and t.coils[8 + 3] is True


class _Actions:
    """What the table asks of Redis, recorded (the real ones: tests/integration/.../
    test_modbus.py)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.triggers: list[tuple[str, str]] = []
        self.selects: list[tuple[str, int]] = []
        self.fail = fail

    async def trigger(self, line: str, part_id: bytes, by=None) -> str:
        part = ids.check("part", part_id)
        if self.fail is not None:
            raise self.fail
        self.triggers.append((line, part))
        return "1-0"

    async def select_recipe(self, line: str, *, name=None, number=None, by="plc") -> str:
        if self.fail is not None:
            raise self.fail
        self.selects.append((line, number))
        return "r@1"


def _line_table(actions) -> modbus.ModbusTable:
    t = modbus.ModbusTable([("l1", "a"), ("l2", "b")], pulse_ms=50, lines=["l1", "l2"])
    t.actions = actions
    return t


def test_part_registers_show_the_last_verdict_of_each_line():
    t = _table()
    state = PartState("l1", PartVerdict("l1", "SN-9", "pass", "pass", 1.0, 0.9, 12.0, {}),
                      count=3)
    t.part(state, fresh=True)
    regs = asyncio.run(t.async_getValues(0, 4, pb.PART_BASE, pb.ID + 2))
    assert regs[:pb.ID + 1] == [0, 3, 1, 1, 12, 4, 0x534E]
    assert t.registers[4] == 1 and t.registers[2] == modbus.MAP_VERSION


def test_a_written_part_id_is_triggered_in_one_write_and_counted():
    async def run() -> None:
        actions = _Actions()
        t = _line_table(actions)
        base = pb.block_base(1)  # line l2
        length, words = pb.encode_id("Kamera-Süd-7")
        assert await t.async_setValues(0, 16, base + pb.NEXT_LEN, [length, *words, 1]) is None
        assert actions.triggers == [("l2", "Kamera-Süd-7")]
        assert t.registers[base + pb.TRIGGERS] == 1 and t.registers[base + pb.TRIGGER] == 0
        # the same id again (FC 6 on the trigger alone): a second trigger
        assert await t.async_setValues(0, 6, base + pb.TRIGGER, [1]) is None
        assert await t.async_getValues(0, 6, base + pb.TRIGGER, 1) == [1], "echo"
        assert actions.triggers[-1] == ("l2", "Kamera-Süd-7")
        assert t.registers[base + pb.TRIGGERS] == 2

    asyncio.run(run())


def test_bad_part_ids_and_read_only_registers_are_refused():
    async def run() -> None:
        actions = _Actions()
        t = _line_table(actions)
        base = pb.PART_BASE
        _, words = pb.encode_id("has space")
        assert await t.async_setValues(0, 16, base + pb.NEXT_ID, [*words, 1]) == \
            ExcCodes.ILLEGAL_VALUE
        blank = [0] * (pb.ID_REGISTERS - 1)
        assert await t.async_setValues(0, 16, base + pb.NEXT_LEN, [0, 0, *blank, 1]) == \
            ExcCodes.ILLEGAL_VALUE, "an empty id"
        assert await t.async_setValues(0, 16, base + pb.NEXT_LEN, [2, 0xFFFE, *blank, 1]) == \
            ExcCodes.ILLEGAL_VALUE, "not UTF-8"
        assert await t.async_setValues(0, 6, base + pb.NEXT_LEN, [129]) == \
            ExcCodes.ILLEGAL_VALUE, "longer than an id may be"
        for address in (base + pb.SEQ, base + pb.ID, base + pb.TRIGGERS, base + pb.ID_LEN,
                        base + pb.RECIPE_STATUS, pb.block_base(2) + pb.TRIGGER, 4):
            assert await t.async_setValues(0, 6, address, [1]) == ExcCodes.ILLEGAL_ADDRESS
        # a write reaching past the id area into the read-only registers is refused whole
        assert await t.async_setValues(0, 16, base + pb.TRIGGERS - 1, [1, 1]) == \
            ExcCodes.ILLEGAL_ADDRESS
        assert actions.triggers == []

    asyncio.run(run())


def test_recipe_select_sets_the_status_and_answers_refusals_with_an_exception():
    async def run() -> None:
        base = pb.PART_BASE
        t = _line_table(_Actions())
        assert await t.async_setValues(0, 6, base + pb.RECIPE_SELECT, [7]) is None
        assert t.actions.selects == [("l1", 7)]
        assert t.registers[base + pb.RECIPE_SELECT:base + pb.RECIPE_REQUESTS + 1] == [7, 1, 1]
        assert await t.async_setValues(0, 6, base + pb.RECIPE_SELECT, [0]) == \
            ExcCodes.ILLEGAL_VALUE
        for fail, code, status in ((Refused("no recipe numbered 9", unknown=True),
                                    ExcCodes.ILLEGAL_VALUE, pb.RECIPE_UNKNOWN),
                                   (Refused("class x not in model m-1"), ExcCodes.ILLEGAL_VALUE,
                                    pb.RECIPE_REFUSED),
                                   (ConnectionError("Redis away"), ExcCodes.DEVICE_FAILURE,
                                    pb.RECIPE_FAILED)):
            t.actions.fail = fail
            assert await t.async_setValues(0, 6, base + pb.RECIPE_SELECT, [9]) == code
            assert t.registers[base + pb.RECIPE_SELECT:base + pb.RECIPE_STATUS + 1] == \
                [7, status], "the last activated number stays"
        assert t.registers[base + pb.RECIPE_REQUESTS] == 4

    asyncio.run(run())


def test_the_map_lists_each_lines_part_block_at_a_fixed_address():
    rows = modbus.register_map([("l1", "a"), ("l2", "b")], ["l1", "l2"])
    regs = {(r.line, r.name): r for r in rows if r.table == "holding register"}
    assert regs[("l1", "part_seq_hi")].address == 4096
    assert regs[("l2", "trigger")].address == 4096 + 256 + pb.TRIGGER
    assert "(4102-4165)" in regs[("l1", "part_id")].meaning
    with pytest.raises(SettingsError, match="at most 255"):
        modbus.ModbusTable([("l1", f"c{i}") for i in range(256)], pulse_ms=50)


def test_a_tiny_positive_threshold_never_reads_as_none():
    # 0 in threshold_x1000 means "no threshold": 1e-9 must not round to it.
    assert modbus._x1000(1e-9) == 1
    assert modbus._x1000(None) == 0 and modbus._x1000(0.0) == 0
    assert modbus._x1000(0.4567) == 457 and modbus._x1000(1e9) == 65535
