"""One simulated Modbus TCP device (meter, RMU controller) on pymodbus: a ``ModbusTcpServer`` per address.

The device memory is one register image per table (coils, discrete inputs, holding and input registers) covering
every configured address from the lowest to the highest of that table, gaps included (they read as 0, as a meter's
reserved registers do). All addresses of the device show the same memory. The image is the truth: pymodbus' own
``SimDevice`` tables are refreshed from it by the device action on every read, and a master's write reaches the
image only after the device accepted it.

A Modbus device has no events: ``_report`` only updates the image, which the next poll reads. Quality cannot be sent,
except INVALID of a float32 value, written as NaN (the meters' convention for "no measurement").

Writes: a single command is a coil write, a double command writes the DPI (1 open, 2 close) into its holding
register, a set-point writes its holding register(s) (float32 in the device's word order, or int16). Answers:
blocked or local -> exception 0x04 SERVER_DEVICE_FAILURE; a value the point cannot take (DPI 0 or 3, a partial
32-bit write) -> 0x03 ILLEGAL_DATA_VALUE; a write to an address that is not a command -> 0x02 ILLEGAL_DATA_ADDRESS;
an address outside the image -> 0x02.

Threads: every Modbus server of the simulator process runs on one asyncio loop thread (``SharedResources`` key
``modbus-loop``); the device action runs there. The image has its own lock, held only for list copies.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from models.config import RtuConfig, SimProfile
from models.points import ControlType, PointDef, PointKind, Quality
from models.protocols.modbus import (
    DataType,
    RegisterType,
    Table,
    WordOrder,
    control_register,
    decode_registers,
    encode_registers,
)
from models.updates import Cause
from rtu_sim.errors import SimulatorError
from rtu_sim.outstation import CommandAnswer, Outstation, SharedResources, Slot

log = logging.getLogger(__name__)

_TABLE_OF_FUNCTION = {1: Table.COIL, 5: Table.COIL, 15: Table.COIL, 2: Table.DISCRETE_INPUT, 4: Table.INPUT,
                      3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 22: Table.HOLDING, 23: Table.HOLDING}
_ANSWER_CODE = {CommandAnswer.BLOCKED: ExcCodes.DEVICE_FAILURE, CommandAnswer.LOCAL: ExcCodes.DEVICE_FAILURE,
                CommandAnswer.INVALID: ExcCodes.ILLEGAL_VALUE}
_INT_LIMITS = {DataType.INT16: (-32768, 32767), DataType.UINT16: (0, 65535), DataType.INT32: (-2**31, 2**31 - 1),
               DataType.UINT32: (0, 2**32 - 1)}
_BITS = (Table.COIL, Table.DISCRETE_INPUT)
LOOP_KEY = "modbus-loop"


class _LoopThread:
    """The asyncio loop every Modbus server of the process runs on."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="modbus-sim-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: object, timeout_s: float) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class _Image:
    """One table of the device memory: addresses lo..hi (inclusive)."""

    __slots__ = ("lo", "hi", "cells")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.cells: list[int] = [0] * (hi - lo + 1)  # a register's value, or 0/1 for a bit


class OutstationModbus(Outstation):
    """A Modbus TCP device of the station configuration, its unit id the RTU's common address."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, shared: SharedResources | None = None, max_queue: int = 200_000) -> None:
        super().__init__(rtu, points, sims, rng=rng, shared=shared, max_queue=max_queue)
        self._order: WordOrder = rtu.modbus.word_order
        self._unit = rtu.common_address
        self._image_lock = threading.Lock()
        self._images: dict[Table, _Image] = {}
        self._monitor: dict[int, RegisterType] = {}  # slot index -> where its value lives
        self._writable: dict[tuple[Table, int], tuple[Slot, RegisterType]] = {}  # first cell of a command -> it
        self._command_cells: set[tuple[Table, int]] = set()
        self._servers: list[ModbusTcpServer | None] = [None] * len(rtu.addresses)
        spans: dict[Table, list[int]] = {}
        for s in self.slots:
            p = s.point
            if s.monitored and p.source.type_id:
                rt = RegisterType.parse(p.source.type_id)
                self._monitor[s.index] = rt
                spans.setdefault(rt.table, []).extend((p.source.address, p.source.address + rt.width - 1))
            if p.control is not None:
                rt = control_register(p.control.type)
                self._writable[(rt.table, p.control.address)] = (s, rt)
                self._command_cells.update((rt.table, p.control.address + k) for k in range(rt.width))
                spans.setdefault(rt.table, []).extend((p.control.address, p.control.address + rt.width - 1))
        for table, addrs in spans.items():
            if max(addrs) > 65_535:
                raise SimulatorError(f"RTU {rtu.name!r}: a {table.value} value runs past address 65535")
            self._images[table] = _Image(min(addrs), max(addrs))
        self._loop: _LoopThread = self.shared.get(LOOP_KEY, _LoopThread, _LoopThread.close)
        self._store_all()

    # ------------------------------------------------------------------------------------------- quality

    @classmethod
    def supported_quality(cls, kind: PointKind) -> Quality:
        # Only a float32 can say "invalid" (NaN); _check_value refuses it for integer types.
        return Quality.INVALID if kind in (PointKind.ANALOG, PointKind.SETPOINT) else Quality.GOOD

    def _check_value(self, s: Slot, value: float, quality: Quality) -> None:
        super()._check_value(s, value, quality)
        rt = self._monitor.get(s.index)
        if quality & Quality.INVALID and (rt is None or rt.dtype is not DataType.FLOAT32):
            raise SimulatorError(f"point {s.point.name!r}: Modbus {s.point.source.type_id} cannot carry INVALID "
                                 f"(only a float32 can, as NaN)")

    # ------------------------------------------------------------------------------------------- image

    def _cells_of(self, s: Slot, value: float, quality: Quality) -> list[int]:
        """The image cells of a monitored point's value (raw = (value - offset) / scale)."""
        rt = self._monitor[s.index]
        p = s.point
        if rt.dtype is DataType.BIT:
            return [1 if value else 0]
        if p.kind.is_status:
            return encode_registers(rt.dtype, self._order, float(int(value)))
        if quality & Quality.INVALID and rt.dtype is DataType.FLOAT32:
            return encode_registers(rt.dtype, self._order, math.nan)
        raw = (value - p.offset) / p.scale
        if rt.dtype is DataType.FLOAT32:
            return encode_registers(rt.dtype, self._order, raw)
        lo, hi = _INT_LIMITS[rt.dtype]
        n = round(raw) if math.isfinite(raw) else 0
        if p.kind is PointKind.COUNTER:
            n = lo + (n - lo) % (hi - lo + 1)  # a counter register wraps
        else:
            n = min(hi, max(lo, n))  # a measurement saturates at the end of its range
        return encode_registers(rt.dtype, self._order, float(n))

    def _put(self, table: Table, address: int, cells: list[int]) -> None:
        img = self._images[table]
        k = address - img.lo
        with self._image_lock:
            img.cells[k:k + len(cells)] = cells

    def _store(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        if s.index in self._monitor and link == 0:  # one device memory behind every address: write it once
            self._put(self._monitor[s.index].table, s.point.source.address, self._cells_of(s, value, quality))

    def _report(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause, links: list[int]
                ) -> list[int]:
        if s.index in self._monitor:
            self._put(self._monitor[s.index].table, s.point.source.address, self._cells_of(s, value, quality))
        return list(links)  # no events: the value is in the memory every link reads

    def registers(self, table: Table, address: int, count: int) -> list[int]:
        """A copy of the device memory (tests and diagnostics)."""
        img = self._images[table]
        with self._image_lock:
            return img.cells[address - img.lo:address - img.lo + count]

    # ------------------------------------------------------------------------------------------- pymodbus

    def _device(self) -> SimDevice:
        blocks: list[list[SimData]] = [[], [], [], []]
        for k, table in enumerate((Table.COIL, Table.DISCRETE_INPUT, Table.HOLDING, Table.INPUT)):
            img = self._images.get(table)
            if table in _BITS:
                # pymodbus needs a block per table; an unused one is refused by the action (illegal address)
                lo, n = (img.lo, img.hi - img.lo + 1) if img else (0, 16)
                blocks[k].append(SimData(address=lo, values=[False] * n, datatype=SimType.BITS))
            elif img is not None:
                blocks[k].append(SimData(address=img.lo, count=img.hi - img.lo + 1, values=0,
                                         datatype=SimType.REGISTERS))
            else:
                blocks[k].append(SimData(address=0, datatype=SimType.INVALID))
        return SimDevice(id=self._unit, simdata=(blocks[0], blocks[1], blocks[2], blocks[3]), action=self._action)

    async def _action(self, function_code: int, start_address: int, address: int, count: int,
                      current_registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        # Runs on the shared loop thread for every access; an exception here would answer 0x04 for the whole
        # server's request, so everything is caught and answered explicitly.
        try:
            table = _TABLE_OF_FUNCTION.get(function_code)
            img = self._images.get(table) if table is not None else None
            if table is None or img is None:
                return ExcCodes.ILLEGAL_ADDRESS
            if set_values is not None:
                return self._write(table, address, [int(v) for v in set_values])
            with self._image_lock:
                if table in _BITS:
                    # the block holds 16 bits per register, from register start_address; address is a bit address
                    for r in range(address // 16, address // 16 + count):
                        word = 0
                        for b in range(16):
                            a = r * 16 + b
                            if img.lo <= a <= img.hi and img.cells[a - img.lo]:
                                word |= 1 << b
                        current_registers[r - start_address] = word
                else:
                    k = address - img.lo
                    current_registers[address - start_address:address - start_address + count] = \
                        img.cells[k:k + count]
            return None
        except Exception:
            log.exception("Modbus device %r: request fc %d at %d failed", self.name, function_code, address)
            return ExcCodes.DEVICE_FAILURE

    def _write(self, table: Table, address: int, values: list[int]) -> ExcCodes | None:
        target = self._writable.get((table, address))
        if target is None or target[1].width != len(values):
            cells = [(table, address + k) for k in range(len(values))]
            self.count_refused()
            if not all(c in self._command_cells for c in cells):
                return ExcCodes.ILLEGAL_ADDRESS
            return ExcCodes.ILLEGAL_VALUE  # part of a command's registers, or more than one command
        s, rt = target
        ctype = s.point.control.type if s.point.control is not None else ControlType.SINGLE
        if ctype is ControlType.SINGLE:
            command = float(bool(values[0]))
        elif ctype is ControlType.DOUBLE:
            command = float(values[0])
        else:
            command = decode_registers(rt.dtype, self._order, values)
            if not math.isfinite(command):
                self.count_refused()
                return ExcCodes.ILLEGAL_VALUE
        answer = self.execute_command(s, command)
        if answer is not CommandAnswer.ACCEPTED:
            return _ANSWER_CODE[answer]
        mon = self._monitor.get(s.index)
        if mon is None or (mon.table, s.point.source.address) != (table, address):
            # a command register of its own keeps what was written; where the command writes the point's own
            # status cells, those show the device's state (set by execute_command), not the request
            self._put(table, address, [1 if v else 0 for v in values] if table in _BITS else values)
        return None

    # ------------------------------------------------------------------------------------------- links

    def _start_link(self, index: int, timeout_s: float) -> None:
        host, _, port = self.rtu.addresses[index].rpartition(":")
        device = self._device()

        async def start() -> ModbusTcpServer:
            server = ModbusTcpServer(device, address=(host, int(port)))
            await server.serve_forever(background=True)
            return server

        try:
            self._servers[index] = self._loop.call(start(), timeout_s)  # type: ignore[assignment]
        except Exception as exc:
            raise SimulatorError(f"RTU {self.name!r}: Modbus server on {self.rtu.addresses[index]} did not start: "
                                 f"{exc or type(exc).__name__} (port in use?)") from None

    def _stop_link(self, index: int) -> None:
        server = self._servers[index]
        self._servers[index] = None
        if server is not None:
            self._loop.call(server.shutdown(), 5.0)  # closes the listener and every connected master

    def _client_count(self) -> int:
        return sum(len(s.active_connections) for s in self._servers if s is not None)

    def _dispose(self) -> None:
        self._servers = [None] * len(self.rtu.addresses)
