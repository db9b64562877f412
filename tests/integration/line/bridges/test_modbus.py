"""`rlrctl bridge modbus` against a real Redis, a real worker and a real Modbus TCP client:
the reject coil pulses for an anomalous frame of the right camera only, alerts latch until the
reset coil is written, and a restarted bridge (or a reconnecting client) keeps every latch; part
verdicts with their part id, the PLC's trigger and recipe select."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
from click.testing import CliRunner
from pymodbus.client import ModbusTcpClient

from daemon.cli import main
from daemon.line.bridges import partblock as pb
from daemon.line.bridges.modbus import CAMERA_BLOCK, COIL_BLOCK
from daemon.line.producer import push_images
from daemon.recipes.recipe import parse
from daemon.wire import keys
from daemon.wire.schema import Alert, HealthEvent
from tests.integration.line.bridges.helpers import add_part
from tests.integration.procs import Proc, daemon_env, results, start_worker, wait_for, wait_ready

CAMS = ("camA", "camB")
PULSE_MS = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_bridge(redis_url: str, line: str, port: int, tmp_path, name: str) -> Proc:
    env = daemon_env(redis_url, line, consumer="modbus-bridge", modbus_port=port,
                     modbus_pulse_ms=PULSE_MS, plc_cameras=",".join(CAMS))
    return Proc(["bridge", "modbus"], env, tmp_path / f"{name}.log")


def _client(port: int, proc: Proc) -> ModbusTcpClient:
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2)
    wait_for(client.connect, 30, "modbus server listening", (proc,))
    return client


def _regs(client: ModbusTcpClient, cam: int) -> list[int]:
    reply = client.read_holding_registers(CAMERA_BLOCK * (cam + 1), count=14)
    assert not reply.isError(), reply
    return reply.registers


def _coils(client: ModbusTcpClient, cam: int) -> list[bool]:
    reply = client.read_coils(COIL_BLOCK * cam, count=4)
    assert not reply.isError(), reply
    return reply.bits[:4]


def test_print_map_lists_every_camera_block():
    out = CliRunner().invoke(main, ["bridge", "modbus", "--line", "l1", "--camera", "c1",
                                    "--camera", "c2", "--print-map"])
    assert out.exit_code == 0, out.output
    assert "| coil | 8 | l1 | c2 | reject |" in out.output
    assert "| holding register | 33 | l1 | c2 | score_x1000 |" in out.output
    assert "| coil | 2 | l1 | c1 | alert_reset |" in out.output


@pytest.mark.slow
def test_reject_coil_latch_and_reset_with_real_worker(redis_url, line, rclient, served_model,
                                                       frame_jpegs, tmp_path):
    port = _free_port()
    worker = start_worker(redis_url, line, served_model, "w-modbus", tmp_path,
                          alert_k=1, alert_n=1, alert_cooldown_s=0)
    bridge = _start_bridge(redis_url, line, port, tmp_path, "bridge1")
    try:
        wait_ready(rclient, worker, names=("w-modbus",))
        client = _client(port, bridge)
        assert client.read_holding_registers(0, count=3).registers[1:] == [2, 2]  # map version 2
        seen = {0: 0, 1: 0}
        for i, jpeg in enumerate(frame_jpegs[:10]):
            cam = i % 2
            push_images(rclient, line, CAMS[cam], [jpeg])
            # the camera's heartbeat register counts its results
            wait_for(lambda cam=cam: _regs(client, cam)[0] == seen[cam] + 1, 30,
                     f"result {i} on {CAMS[cam]}", (worker, bridge))
            seen[cam] += 1
            regs, coils = _regs(client, cam), _coils(client, cam)
            other = _coils(client, 1 - cam)
            last = [r for r in results(rclient, line) if r.camera == CAMS[cam]][-1]
            assert regs[3] == (2 if last.is_anomaly else 1)
            assert regs[1] == min(65535, round(last.score * 1000))
            assert coils[0] is last.is_anomaly, f"frame {i}: reject coil vs verdict"
            assert other[0] is False, "the other camera's reject coil must stay 0"
            time.sleep(PULSE_MS / 1000 + 0.1)
            assert _coils(client, cam)[0] is False, "the pulse ends"
        anomalous = {c: sum(r.is_anomaly for r in results(rclient, line) if r.camera == c)
                     for c in CAMS}
        assert 0 < sum(anomalous.values()) < 10, "the served model alarms on some frames only"
        alerts = [Alert.from_fields(f) for _, f in rclient.xrange(keys.alerts(line))]
        for cam, name in enumerate(CAMS):
            expected = sum(a.camera == name for a in alerts)
            wait_for(lambda cam=cam, n=expected: _regs(client, cam)[4] == n, 10,
                     f"{name} latch", (bridge,))
            assert _coils(client, cam)[1] is (expected > 0)
            assert _regs(client, cam)[13] == anomalous[name], "one reject pulse per anomaly"
        client.close()

        # The bridge restarts while the PLC is away: every latch comes back ...
        assert bridge.stop() == 0
        bridge = _start_bridge(redis_url, line, port, tmp_path, "bridge2")
        client = _client(port, bridge)
        # ... with each camera's last result (read at start; no reject for it) ...
        for cam, name in enumerate(CAMS):
            last = [r for r in results(rclient, line) if r.camera == name][-1]
            wait_for(lambda cam=cam: _regs(client, cam)[3] != 0, 10, "seeded", (bridge,))
            assert _regs(client, cam)[1:4] == [min(65535, round(last.score * 1000)),
                                               round(last.threshold * 1000),
                                               2 if last.is_anomaly else 1]
            assert _regs(client, cam)[13] == 0 and _coils(client, cam)[0] is False
        latched = [c for c in range(2) if any(a.camera == CAMS[c] for a in alerts)]
        assert latched
        for cam in latched:
            wait_for(lambda cam=cam: _coils(client, cam)[1], 10, "latch after restart",
                     (bridge,))
        # The PLC resets one camera: its alerts are acknowledged and recorded.
        cam = latched[0]
        assert not client.write_coil(COIL_BLOCK * cam + 2, True).isError()
        assert _coils(client, cam)[1:3] == [False, False]
        assert _regs(client, cam)[4] == 0
        acks = rclient.hgetall(keys.alert_acks(line))
        mine = {a.alert_id for a in alerts if a.camera == CAMS[cam]}
        assert {k.decode() for k in acks} == mine
        assert all(json.loads(v)["via"] == "modbus" for v in acks.values())
        pending = rclient.xpending(keys.alerts(line), "rlr-bridge-modbus")["pending"]
        assert pending == len(alerts) - len(mine)
        # Camera health (events as the worker writes them): bit 1 = dark, healthy coil 0.
        now = time.time()
        rclient.xadd(keys.health(line), HealthEvent(line, "camB", "dark", "raised", now, now)
                     .to_fields())
        wait_for(lambda: _regs(client, 1)[9] == 0b10, 10, "health bits", (bridge,))
        assert _coils(client, 1)[3] is False and _coils(client, 0)[3] is True
        rclient.xadd(keys.health(line), HealthEvent(line, "camB", "dark", "cleared", now, now)
                     .to_fields())
        wait_for(lambda: _regs(client, 1)[9] == 0 and _coils(client, 1)[3], 10, "cleared",
                 (bridge,))
        # Only the reset coils are writable.
        assert client.write_coil(COIL_BLOCK * cam, True).isError()
        assert client.write_register(CAMERA_BLOCK + 1, 5).isError()
        client.close()
    finally:
        bridge.stop()
        worker.stop()


def test_rides_out_a_redis_restart_keeping_latches(line, tmp_path):
    """Results and alerts as a worker writes them, into a private Redis that restarts."""
    import redis as redis_lib

    from daemon.line.embedded import EmbeddedRedis
    from daemon.wire.schema import Result

    def result(i: int, anomalous: bool) -> dict:
        return Result(f"f{i}", "camA", 0.9 if anomalous else 0.1, anomalous, 0.5, "m-1",
                      time.time(), 1.0, 2.0, 3.0, "w").to_fields()

    with EmbeddedRedis(port=0) as server:
        writer = redis_lib.Redis.from_url(server.url)
        port = _free_port()
        bridge = _start_bridge(server.url, line, port, tmp_path, "restart")
        try:
            client = _client(port, bridge)
            wait_for(lambda: client.read_holding_registers(3).registers[0] == 1, 10,
                     "redis_ok", (bridge,))
            writer.xadd(keys.results(line), result(0, False))
            writer.xadd(keys.alerts(line), Alert(f"{line}-a0", line, "camA", time.time(),
                                                 "1/1", ["f0"], [0.9], ["1-0"], "m-1",
                                                 0.5).to_fields())
            wait_for(lambda: _coils(client, 0)[1], 10, "latched", (bridge,))
            server.kill()
            wait_for(lambda: client.read_holding_registers(3).registers[0] == 0, 10,
                     "redis_ok drops", (bridge,))
            beat = client.read_holding_registers(0).registers[0]
            wait_for(lambda: client.read_holding_registers(0).registers[0] > beat, 5,
                     "heartbeat while Redis is away", (bridge,))
            assert _coils(client, 0)[1], "the latch holds while Redis is away"
            assert client.write_coil(2, True).isError(), "a reset needs Redis to be recorded"
            server.start()  # AOF: the stream and the group's pending alert come back
            wait_for(lambda: client.read_holding_registers(3).registers[0] == 1, 20,
                     "redis_ok again", (bridge,))
            writer = redis_lib.Redis.from_url(server.url)
            writer.xadd(keys.results(line), result(1, True))
            wait_for(lambda: _regs(client, 0)[0] == 2, 10, "result after restart", (bridge,))
            assert _regs(client, 0)[3] == 2 and _coils(client, 0)[1]
            assert not client.write_coil(2, True).isError()
            assert writer.hexists(keys.alert_acks(line), f"{line}-a0")
            assert writer.xpending(keys.alerts(line), "rlr-bridge-modbus")["pending"] == 0
            client.close()
        finally:
            assert bridge.stop() == 0


# ----------------------------------------------------------------------------- parts


def _part(client: ModbusTcpClient) -> tuple[int, list[int], str]:
    """(sequence, [verdict, outcome, total_ms], part id) of the first line's part block."""
    reply = client.read_holding_registers(pb.PART_BASE, count=pb.ID + pb.ID_REGISTERS)
    assert not reply.isError(), reply
    r = reply.registers
    part_id = pb.decode_id(r[pb.ID:], r[pb.ID_LEN]).decode()
    return r[pb.SEQ] << 16 | r[pb.SEQ + 1], r[pb.VERDICT:pb.ID_LEN], part_id


def _write_part_id(client: ModbusTcpClient, part_id: bytes):
    """Length, id and trigger in one FC 16 write, as a PLC does it."""
    words = [int.from_bytes(part_id.ljust(pb.ID_BYTES, b"\0")[i:i + 2], "big")
             for i in range(0, pb.ID_BYTES, 2)]
    return client.write_registers(pb.PART_BASE + pb.NEXT_LEN, [len(part_id), *words, 1])


def test_part_verdicts_with_their_id_and_the_plcs_trigger(redis_url, line, rclient, tmp_path):
    port = _free_port()
    bridge = _start_bridge(redis_url, line, port, tmp_path, "parts1")
    try:
        client = _client(port, bridge)
        wait_for(lambda: client.read_holding_registers(3).registers[0] == 1, 20, "redis_ok",
                 (bridge,))
        assert _part(client) == (0, [0, 0, 0], "")
        add_part(rclient, line, "SN-40122")
        wait_for(lambda: _part(client)[0] == 1, 10, "first verdict", (bridge,))
        assert _part(client) == (1, [2, 2, 85], "SN-40122")
        add_part(rclient, line, "SN-40122", "pass")  # the same id again: a new sequence number
        wait_for(lambda: _part(client)[0] == 2, 10, "second verdict", (bridge,))
        assert _part(client) == (2, [1, 1, 85], "SN-40122")
        add_part(rclient, line, "Kamera-Süd-" + "x" * 100, "incomplete")
        wait_for(lambda: _part(client)[0] == 3, 10, "third verdict", (bridge,))
        assert _part(client) == (3, [3, 2, 85], "Kamera-Süd-" + "x" * 100)

        # The PLC announces and triggers the next part.
        assert not _write_part_id(client, b"SN-40123").isError()
        assert rclient.get(keys.next_part(line)) == b"SN-40123"
        (_, trig), = rclient.xrange(keys.triggers(line))
        assert trig[b"part_id"] == b"SN-40123" and trig[b"via"] == b"modbus"
        assert not client.write_register(pb.PART_BASE + pb.TRIGGER, 1).isError()  # again
        assert rclient.xlen(keys.triggers(line)) == 2
        counted = client.read_holding_registers(pb.PART_BASE + pb.TRIGGER, count=2).registers
        assert counted == [0, 2]
        # A bad part id: ILLEGAL DATA VALUE, nothing written.
        reply = _write_part_id(client, b"SN 1")
        assert reply.isError() and reply.exception_code == 3
        assert rclient.xlen(keys.triggers(line)) == 2
        # Everything else stays read-only.
        reply = client.write_register(pb.PART_BASE + pb.SEQ, 5)
        assert reply.isError() and reply.exception_code == 2
        client.close()

        # A restarted bridge shows the last verdict with sequence 0: nothing new yet.
        assert bridge.stop() == 0
        bridge = _start_bridge(redis_url, line, port, tmp_path, "parts2")
        client = _client(port, bridge)
        wait_for(lambda: _part(client)[2] != "", 20, "last part loaded", (bridge,))
        assert _part(client) == (0, [3, 2, 85], "Kamera-Süd-" + "x" * 100)
        client.close()
    finally:
        bridge.stop()


def test_the_plc_selects_a_recipe_by_number(redis_url, line, rclient, tmp_path):
    from daemon.recipes.store import RecipeStore

    name, number = f"r{uuid.uuid4().hex[:8]}", 20_000 + uuid.uuid4().int % 40_000
    RecipeStore(rclient).add(parse({"name": name, "number": number, "product": "P-1",
                                    "class": "washer", "views": [{"name": "top"}]}), by="test")
    port = _free_port()
    bridge = _start_bridge(redis_url, line, port, tmp_path, "recipe")
    select = pb.PART_BASE + pb.RECIPE_SELECT
    try:
        client = _client(port, bridge)
        assert not client.write_register(select, number).isError()
        assert client.read_holding_registers(select, count=3).registers == [number, 1, 1]
        active = RecipeStore(rclient).active(line)
        assert (active.recipe.name, active.by, active.via) == (name, "plc", "modbus")
        reply = client.write_register(select, number + 1)  # no recipe has that number
        assert reply.isError() and reply.exception_code == 3
        assert client.read_holding_registers(select, count=3).registers == [number, 2, 2]
        assert RecipeStore(rclient).active(line).recipe.name == name
        client.close()
    finally:
        bridge.stop()
        rclient.hdel(keys.RECIPES, name)
        rclient.delete(keys.recipe_revisions(name))
