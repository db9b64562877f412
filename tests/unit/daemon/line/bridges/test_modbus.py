"""The Modbus bridge's pure parts: the register map and the table."""

from __future__ import annotations

import asyncio

from daemon.line.bridges import modbus
from daemon.line.bridges.linestate import CameraState


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
        assert not isinstance(await t.async_getValues(0, 3, 0, 49), list)  # past the end
        assert not isinstance(await t.async_getValues(0, 2, 0, 1), list)  # discrete inputs

    asyncio.run(run())


def test_health_bits_and_healthy_coil():
    t = _table()
    t.health(CameraState("l1", "a", health=("blur", "dark", "something_new")))
    assert t.registers[16 + 9] == (1 << 3) | (1 << 1) | (1 << 15)
    assert t.coils[3] is False and t.coils[8 + 3] is True


def test_a_tiny_positive_threshold_never_reads_as_none():
    # 0 in threshold_x1000 means "no threshold": 1e-9 must not round to it.
    assert modbus._x1000(1e-9) == 1
    assert modbus._x1000(None) == 0 and modbus._x1000(0.0) == 0
    assert modbus._x1000(0.4567) == 457 and modbus._x1000(1e9) == 65535
