"""Modbus TCP server for PLCs (`rlrctl bridge modbus`): the line state of `linestate`
as coils and registers at fixed addresses, generated from the line's cameras (`register_map`,
printed by `rlrctl bridge modbus --print-map`).

A reject coil is pulsed for `RLR_MODBUS_PULSE_MS` when a fresh anomalous result arrives; an
alert latches until the PLC writes 1 to the camera's reset coil, which acknowledges the alerts
(recorded in `rlr:alertack:{line}`, the stream entries acked). The state lives in the bridge, so
a PLC that reconnects reads the latest values and every latch still set.

Each line also has a part block (`partblock`): the last part verdict with its part id, and the
only writable registers: the next part id and its trigger, and a recipe number to switch to
(`plcwrites`). A bad value is refused with ILLEGAL DATA VALUE (03), a write that could not be
stored (Redis away) with SLAVE DEVICE FAILURE (04); any other write gets ILLEGAL ADDRESS (02).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

from daemon import logs
from daemon.errors import SettingsError
from daemon.line.bridges import partblock as pb
from daemon.line.bridges.base import (
    CAMERA,
    LINE,
    BridgeSpec,
    Option,
    afeed_forever,
    run_line_bridge,
)
from daemon.line.bridges.linestate import (
    CameraState,
    LineFeed,
    Listener,
    PartState,
    mapped_cameras,
)
from daemon.line.bridges.plcwrites import PlcActions, Refused
from daemon.line.settings import PlcBridgeSettings
from daemon.wire.clients import connect
from daemon.wire.ids import BadId
from daemon.wire.schema import Alert

log = logs.get(__name__)

MAP_VERSION = 2  # 2: the part blocks
CAMERA_BLOCK = 16  # holding registers per camera, after the 16 global ones
MAX_CAMERAS = pb.PART_BASE // CAMERA_BLOCK - 1  # the camera blocks end below the part blocks
COIL_BLOCK = 8  # coils per camera
# Bit of each camera health condition in the camera's health register (bit 15: any other).
HEALTH_BITS = ("frozen", "dark", "bright", "blur", "shift", "score_drift", "alarm_rate")

# (offset, name, meaning) of the global registers, a camera's registers and its coils.
GLOBAL_REGISTERS = (
    (0, "bridge_heartbeat", "+1 every second while the bridge runs (wraps at 65535)"),
    (1, "cameras", "cameras in this map"),
    (2, "map_version", f"layout version of this map ({MAP_VERSION})"),
    (3, "redis_ok", "1 while the bridge reads the line's streams, 0 while Redis is away"),
    (4, "lines", f"lines in this map (line j's part block at {pb.PART_BASE} + "
     f"{pb.PART_BLOCK}*j)"),
)
CAMERA_REGISTERS = (
    (0, "heartbeat", "+1 for every result of the camera (wraps at 65535)"),
    (1, "score_x1000", "last score x 1000 (clamped to 65535)"),
    (2, "threshold_x1000", "threshold of the last result x 1000 (0: none; a positive "
     "threshold reads at least 1)"),
    (3, "verdict", "0 no result yet, 1 normal, 2 anomalous"),
    (4, "alerts_latched", "alerts not yet acknowledged (the reset coil clears them)"),
    (5, "frames_hi", "results counted since the bridge started, high word"),
    (6, "frames_lo", "... low word"),
    (7, "alerts_hi", "alerts counted since the bridge started, high word"),
    (8, "alerts_lo", "... low word"),
    (9, "health_bits", "raised camera health conditions, bit i: "
        + ", ".join(f"{i} {k}" for i, k in enumerate(HEALTH_BITS)) + ", 15 other"),
    (10, "capture_s_hi", "capture time of the last result, Unix seconds, high word"),
    (11, "capture_s_lo", "... low word"),
    (12, "capture_ms", "... milliseconds"),
    (13, "rejects", "+1 for every reject pulse (wraps at 65535)"),
)
CAMERA_COILS = (
    (0, "reject", "pulsed to 1 for RLR_MODBUS_PULSE_MS on an anomalous frame"),
    (1, "alert_latch", "1 while the camera has alerts not yet acknowledged"),
    (2, "alert_reset", "write 1: acknowledge the camera's alerts (reads 0)"),
    (3, "camera_healthy", "1 while no camera health condition is raised"),
)
_RESET = 2
_U16 = 0xFFFF


@dataclass(frozen=True)
class MapRow:
    table: str  # "coil" or "holding register"
    address: int  # 0-based protocol address
    line: str
    camera: str
    name: str
    meaning: str


def register_map(entries: Sequence[tuple[str, str]],
                 lines: Sequence[str] | None = None) -> list[MapRow]:
    """The documented register map for cameras `entries` ((line, camera), in map order) and
    the part blocks of `lines` (default: the lines of `entries`)."""
    rows = [MapRow("holding register", off, "", "", name, meaning)
            for off, name, meaning in GLOBAL_REGISTERS]
    for i, (line, cam) in enumerate(entries):
        rows += [MapRow("holding register", CAMERA_BLOCK * (i + 1) + off, line, cam, name, m)
                 for off, name, m in CAMERA_REGISTERS]
    for j, line in enumerate(_lines(entries, lines)):
        rows += [MapRow("holding register", pb.block_base(j) + off, line, "", name,
                        m if n == 1 else f"{m} ({pb.block_base(j) + off}-"
                                         f"{pb.block_base(j) + off + n - 1})")
                 for off, name, m, n in pb.PART_REGISTERS]
    for i, (line, cam) in enumerate(entries):
        rows += [MapRow("coil", COIL_BLOCK * i + off, line, cam, name, m)
                 for off, name, m in CAMERA_COILS]
    return rows


def format_map(rows: Sequence[MapRow]) -> str:
    out = ["| table | address | line | camera | name | meaning |", "|---|---|---|---|---|---|"]
    out += [f"| {r.table} | {r.address} | {r.line or '-'} | {r.camera or '-'} | {r.name} | "
            f"{r.meaning} |" for r in rows]
    return "\n".join(out)


def _lines(entries: Sequence[tuple[str, str]], lines: Sequence[str] | None) -> list[str]:
    return list(lines) if lines is not None else list(dict.fromkeys(ln for ln, _ in entries))


def _u32(value: int) -> tuple[int, int]:
    value &= 0xFFFFFFFF
    return value >> 16, value & _U16


def _x1000(value: float | None) -> int:
    """0 means none, so a positive value (a threshold of 1e-9) rounds up to 1, never to 0."""
    if value is None:
        return 0
    return max(1 if value > 0 else 0, min(_U16, round(value * 1000)))


class ModbusTable(ModbusServerContext, Listener):
    """The server's data (one unit; every unit id answers the same) and the listener that
    keeps it current. Holding registers are also served as input registers (FC 4)."""

    def __init__(self, entries: Sequence[tuple[str, str]], pulse_ms: float,
                 lines: Sequence[str] | None = None) -> None:
        # No super().__init__(): this class is the whole datastore (pymodbus calls only
        # async_getValues / async_setValues / device_ids on it).
        self.old_simulator, self.simdevices = True, []
        self.entries = list(entries)
        if len(self.entries) > MAX_CAMERAS:
            raise SettingsError(f"{len(self.entries)} cameras: a Modbus map holds at most "
                                f"{MAX_CAMERAS}; run a bridge per line (--line)")
        self.lines = _lines(self.entries, lines)
        self.index = {e: i for i, e in enumerate(self.entries)}
        self.registers = [0] * pb.block_base(len(self.lines))
        self.actions: PlcActions | None = None
        self.coils = [False] * (COIL_BLOCK * max(1, len(self.entries)))
        self.pulse_s = pulse_ms / 1000
        self.feed: LineFeed | None = None
        self._echo: list[bool] | None = None
        self._pulse_until = [0.0] * len(self.entries)
        self._pulse_handles: list[asyncio.TimerHandle | None] = [None] * len(self.entries)
        self.registers[1], self.registers[2] = len(self.entries), MAP_VERSION
        self.registers[4] = len(self.lines)
        for i in range(len(self.entries)):
            self.coils[COIL_BLOCK * i + 3] = True

    # ------------------------------------------------------------------ pymodbus side
    def device_ids(self) -> list[int]:
        return [0]

    async def async_getValues(self, device_id: int, func_code: int, address: int,
                              count: int = 1):
        if func_code in (5, 6) and self._echo is not None:  # a write's reply echoes it
            echo, self._echo = self._echo, None
            return echo
        table = self.coils if func_code in (1, 5, 15) else self.registers \
            if func_code in (3, 4) else None
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or address + count > len(table):
            return ExcCodes.ILLEGAL_ADDRESS
        return list(table[address:address + count])

    async def async_setValues(self, device_id: int, func_code: int, address: int, values):
        """Only the reset coils (FC 5 / 15) and the part blocks' write registers (FC 6 / 16)
        are writable; everything else is read-only."""
        values = values if isinstance(values, list) else [values]
        if func_code in (6, 16):
            return await self._write_registers(func_code, address, values)
        if func_code not in (5, 15):
            return ExcCodes.ILLEGAL_ADDRESS
        addrs = range(address, address + len(values))
        if any(a >= len(self.entries) * COIL_BLOCK or a % COIL_BLOCK != _RESET for a in addrs):
            return ExcCodes.ILLEGAL_ADDRESS
        for a, v in zip(addrs, values, strict=True):
            if v and self.feed is not None:
                line, cam = self.entries[a // COIL_BLOCK]
                try:
                    await self.feed.acknowledge(line, cam, None, by="modbus")
                except Exception as exc:  # Redis away: the PLC gets an error and retries
                    log.warning("alert_reset_failed", line=line, camera=cam, error=str(exc))
                    return ExcCodes.DEVICE_FAILURE
        # Set last, with no await before pymodbus reads it back: another client's write
        # handled meanwhile cannot take this echo.
        self._echo = [bool(v) for v in values] if func_code == 5 else None
        return None

    async def _write_registers(self, func_code: int, address: int, values: list):
        """Store a write into a part block; a trigger or recipe_select in it acts at once."""
        spots = [self._block_offset(a) for a in range(address, address + len(values))]
        if any(s is None or s[1] not in pb.WRITABLE for s in spots):
            return ExcCodes.ILLEGAL_ADDRESS
        if not all(pb.check_write(off, int(v)) for (_, off), v in zip(spots, values,
                                                                      strict=True)):
            return ExcCodes.ILLEGAL_VALUE
        for (j, off), v in zip(spots, values, strict=True):
            if off == pb.TRIGGER:
                error = await self._trigger(j) if v else None
            elif off == pb.RECIPE_SELECT:
                error = await self._select(j, int(v))
            else:
                self.registers[pb.block_base(j) + off], error = int(v), None
            if error is not None:
                return error
        self._echo = [int(v) for v in values] if func_code == 6 else None  # as for coils
        return None

    def _block_offset(self, address: int) -> tuple[int, int] | None:
        j, off = divmod(address - pb.PART_BASE, pb.PART_BLOCK)
        return (j, off) if address >= pb.PART_BASE and j < len(self.lines) else None

    async def _trigger(self, j: int):
        base, line = pb.block_base(j), self.lines[j]
        raw = pb.decode_id(self.registers[base + pb.NEXT_ID:], self.registers[base + pb.NEXT_LEN])
        try:
            if self.actions is None:
                raise RuntimeError("the bridge is starting")
            await self.actions.trigger(line, raw)
        except BadId as exc:
            log.warning("trigger_refused", line=line, why=str(exc))
            return ExcCodes.ILLEGAL_VALUE
        except Exception as exc:  # Redis away: the PLC gets an error and writes again
            log.warning("trigger_failed", line=line, error=str(exc))
            return ExcCodes.DEVICE_FAILURE
        self.registers[base + pb.TRIGGERS] = (self.registers[base + pb.TRIGGERS] + 1) & _U16
        return None

    async def _select(self, j: int, number: int):
        base, line = pb.block_base(j), self.lines[j]
        r = self.registers
        r[base + pb.RECIPE_REQUESTS] = (r[base + pb.RECIPE_REQUESTS] + 1) & _U16
        try:
            if self.actions is None:
                raise RuntimeError("the bridge is starting")
            await self.actions.select_recipe(line, number=number, by="plc")
        except Refused as exc:
            r[base + pb.RECIPE_STATUS] = pb.RECIPE_UNKNOWN if exc.unknown else pb.RECIPE_REFUSED
            return ExcCodes.ILLEGAL_VALUE
        except Exception as exc:  # Redis away, no recipe store: write again later
            log.warning("recipe_select_failed", line=line, number=number, error=str(exc))
            r[base + pb.RECIPE_STATUS] = pb.RECIPE_FAILED
            return ExcCodes.DEVICE_FAILURE
        r[base + pb.RECIPE_SELECT], r[base + pb.RECIPE_STATUS] = number, pb.RECIPE_ACTIVE
        return None

    # ------------------------------------------------------------------ state side
    def _base(self, cam: CameraState) -> int | None:
        i = self.index.get((cam.line, cam.camera))
        return None if i is None else CAMERA_BLOCK * (i + 1)

    def result(self, cam: CameraState, fresh: bool) -> None:
        base = self._base(cam)
        if base is None:
            return
        r = self.registers
        r[base] = (r[base] + 1) & _U16
        r[base + 1], r[base + 2] = _x1000(cam.score), _x1000(cam.threshold)
        r[base + 3] = 2 if cam.is_anomaly else 1
        r[base + 5], r[base + 6] = _u32(cam.frames)
        seconds = int(cam.capture_ts)
        r[base + 10], r[base + 11] = _u32(seconds)
        r[base + 12] = int((cam.capture_ts - seconds) * 1000) % 1000
        if cam.is_anomaly and fresh:
            self._pulse(self.index[(cam.line, cam.camera)])

    def _pulse(self, i: int) -> None:
        """Raise the reject coil; a pulse during a pulse extends it (the rejects register
        counts each one)."""
        base = CAMERA_BLOCK * (i + 1)
        self.registers[base + 13] = (self.registers[base + 13] + 1) & _U16
        self.coils[COIL_BLOCK * i] = True
        self._pulse_until[i] = time.monotonic() + self.pulse_s
        handle = self._pulse_handles[i]
        if handle is not None:
            handle.cancel()
        self._pulse_handles[i] = asyncio.get_running_loop().call_later(
            self.pulse_s, self._end_pulse, i)

    def _end_pulse(self, i: int) -> None:
        self.coils[COIL_BLOCK * i] = False
        self._pulse_handles[i] = None

    def part(self, state: PartState, fresh: bool) -> None:
        if state.line in self.lines:
            pb.show(self.registers, pb.block_base(self.lines.index(state.line)), state)

    def alert(self, cam: CameraState, alert: Alert) -> None:
        self._latch(cam)

    def cleared(self, cam: CameraState, alert_ids: Sequence[str]) -> None:
        self._latch(cam)

    def _latch(self, cam: CameraState) -> None:
        base = self._base(cam)
        if base is None:
            return
        i = self.index[(cam.line, cam.camera)]
        self.registers[base + 4] = min(_U16, len(cam.latched))
        self.registers[base + 7], self.registers[base + 8] = _u32(cam.alerts)
        self.coils[COIL_BLOCK * i + 1] = bool(cam.latched)

    def health(self, cam: CameraState) -> None:
        base = self._base(cam)
        if base is None:
            return
        bits = 0
        for kind in cam.health:
            bits |= 1 << (HEALTH_BITS.index(kind) if kind in HEALTH_BITS else 15)
        self.registers[base + 9] = bits
        self.coils[COIL_BLOCK * self.index[(cam.line, cam.camera)] + 3] = not cam.health

    def set_redis_ok(self, ok: bool) -> None:
        self.registers[3] = int(ok)

    def beat(self) -> None:
        self.registers[0] = (self.registers[0] + 1) & _U16


async def serve(feed_factory, table: ModbusTable, host: str, port: int,
                stop: asyncio.Event, block_ms: int) -> None:
    """Serve `table` on host:port and keep it fed until `stop` is set."""
    feed: LineFeed = feed_factory(table)
    table.feed = feed
    for state in feed.parts.values():
        table.part(state, fresh=False)
    server = ModbusTcpServer(table, address=(host, port))
    await server.serve_forever(background=True)  # raises when the port cannot be bound
    log.info("modbus_listening", host=host, port=port, cameras=len(table.entries))

    async def heartbeat() -> None:
        while not stop.is_set():
            table.beat()
            await asyncio.sleep(1.0)

    beats = asyncio.create_task(heartbeat())
    try:
        await afeed_forever(feed, stop.is_set, block_ms, on_state=table.set_redis_ok)
    finally:
        beats.cancel()
        await server.shutdown()
        log.info("modbus_stopped")


def run(settings: PlcBridgeSettings, cameras: Sequence[str] = (), print_map: bool = False) -> None:
    """Serve the line state on Modbus TCP until SIGTERM / Ctrl-C (or print the map)."""
    entries = mapped_cameras(settings, cameras)
    if print_map:
        print(format_map(register_map(entries, settings.lines)))
        return
    logs.configure(settings.log_format, settings.log_level, bridge="modbus")

    async def serve_on(client, stop: asyncio.Event) -> None:
        table = ModbusTable(entries, settings.modbus_pulse_ms, settings.lines)
        table.actions = PlcActions(connect(settings), "modbus")
        try:
            await serve(lambda listener: LineFeed(client, settings, "modbus", settings.lines,
                                                  listener, entries),
                        table, settings.modbus_host, settings.modbus_port, stop,
                        settings.block_ms)
        finally:
            table.actions.close()

    run_line_bridge(settings, "modbus", serve_on)


BRIDGE = BridgeSpec(
    name="modbus",
    help="Serve the line state as a Modbus TCP server (reject coils, latches, scores).",
    run=run,
    options=(
        LINE, CAMERA,
        Option("--host", "host", "Address to bind (default RLR_MODBUS_HOST).",
               setting="modbus_host"),
        Option("--port", "port", "Port (default RLR_MODBUS_PORT).", setting="modbus_port",
               kind="port"),
        Option("--print-map", "print_map", "Print the register map and exit.", kind="flag"),
    ),
)
