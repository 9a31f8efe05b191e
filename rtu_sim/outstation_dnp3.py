"""Simulated DNP3 outstation (opendnp3 via yadnp3): one TCP server channel and outstation per RTU address, all on
the one ``DNP3Manager`` of the simulator process (``SharedResources`` key ``dnp3-manager``).

Device behaviour: select then operate (or direct operate) through the base class's command checks, BLOCKED and
LOCAL refusals, DEVICE_RESTART after every start of a link (a fresh outstation), NEED_TIME until the master writes
the time, events with their time tag and quality flags in the event buffer.

Binding limit: yadnp3 3.2.1.4 cannot set per-point variations (``DatabaseConfig.analog_input`` raises TypeError), so
the outstation's defaults apply to class polls and unsolicited responses: g30v1/g32v1 (integers) and events without
time. Unsolicited responses are therefore off unless ``dnp3.sim_unsolicited`` asks for them; the master reads the
events with explicit variations (g2v2, g4v2, g32v7, g22v5, g42v7) that carry floats and time tags intact.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Sequence
from typing import Any

import opendnp3 as o

from frontend_protocols.dnp3.mapping import SUPPORTED_QUALITY, command_value_from_crob, flag_set, flags_from_quality
from models.config import RtuConfig, SimProfile
from models.points import ControlType, PointDef, PointKind, Quality
from models.protocols.dnp3 import control_object
from models.timebase import now_ms
from models.updates import Cause
from rtu_sim.errors import SimulatorError
from rtu_sim.outstation import CommandAnswer, Outstation, SharedResources, Slot

log = logging.getLogger(__name__)

MANAGER_KEY = "dnp3-manager"
#: DatabaseConfig field of each point type (models/protocols/dnp3.py).
_DB_FIELD = {"binary_input": "binary_input", "double_bit_binary_input": "double_binary",
             "analog_input": "analog_input", "counter": "counter", "analog_output_status": "analog_output_status"}
MANAGER_THREADS = 2
EVENT_BUFFER_MIN = 1000

_STATUS = {
    CommandAnswer.ACCEPTED: o.CommandStatus.SUCCESS,
    CommandAnswer.BLOCKED: o.CommandStatus.BLOCKED,
    CommandAnswer.LOCAL: o.CommandStatus.LOCAL,
    CommandAnswer.INVALID: o.CommandStatus.OUT_OF_RANGE,
}


def _new_manager() -> Any:
    return o.DNP3Manager(MANAGER_THREADS)


def _close_manager(manager: Any) -> None:
    manager.Shutdown()


class _Listener(o.IChannelListener):
    def __init__(self) -> None:
        super().__init__()
        self.open = False

    def OnStateChange(self, state: Any) -> None:  # noqa: N802 (library interface)
        self.open = state == o.ChannelState.OPEN


class _CommandHandler(o.ICommandHandler):
    def __init__(self, owner: OutstationDnp3) -> None:
        super().__init__()
        self._owner = owner

    def Begin(self) -> None:  # noqa: N802
        return None

    def End(self) -> None:  # noqa: N802
        return None

    def Select(self, command: Any, index: int) -> Any:  # noqa: N802
        try:
            return self._owner._on_command(command, int(index), operate=False)
        except Exception:
            log.exception("DNP3 RTU %s: select on index %s failed", self._owner.name, index)
            return o.CommandStatus.HARDWARE_ERROR

    def Operate(self, command: Any, index: int, handler: Any, op_type: Any) -> Any:  # noqa: N802
        try:
            return self._owner._on_command(command, int(index), operate=True)
        except Exception:
            log.exception("DNP3 RTU %s: operate on index %s failed", self._owner.name, index)
            return o.CommandStatus.HARDWARE_ERROR


class _Application(o.IOutstationApplication):
    def __init__(self, owner: OutstationDnp3) -> None:
        super().__init__()
        self._owner = owner

    def SupportsWriteAbsoluteTime(self) -> bool:  # noqa: N802
        return True

    def WriteAbsoluteTime(self, timestamp: Any) -> bool:  # noqa: N802
        try:
            self._owner._time_written(int(timestamp.msSinceEpoch))
            return True
        except Exception:
            return False

    def SupportsAssignClass(self) -> bool:  # noqa: N802
        return True

    def GetApplicationIIN(self) -> Any:  # noqa: N802
        iin = o.ApplicationIIN()
        try:
            iin.needTime = not self._owner.time_synchronised
            iin.localControl = self._owner.local
        except Exception:
            pass
        return iin

    def Now(self) -> Any:  # noqa: N802
        quality = o.TimestampQuality.SYNCHRONIZED if self._owner.time_synchronised else \
            o.TimestampQuality.UNSYNCHRONIZED
        return o.DNPTime(now_ms(), quality)


class OutstationDnp3(Outstation):
    """One RTU served as a DNP3 outstation (link address ``rtu.common_address``) on each of its addresses."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, shared: SharedResources | None = None, max_queue: int = 200_000) -> None:
        super().__init__(rtu, points, sims, rng=rng, shared=shared, max_queue=max_queue)
        for s in self.slots:
            s.monitored = bool(s.point.source.type_id)
        self._by_control: dict[tuple[str, int], Slot] = {}
        size = 1
        for s in self.slots:
            if s.monitored:
                size = max(size, s.point.source.address + 1)
            if s.point.control is not None:
                self._by_control[(control_object(s.point.control.type), s.point.control.address)] = s
                size = max(size, s.point.control.address + 1)
        self._db_size = size
        self._event_buffer = max(EVENT_BUFFER_MIN, 4 * len(self.slots))
        self._select_timeout_s = max([10.0] + [p.control.timeout_s for p in points if p.control])
        self._time_lock = threading.Lock()
        self._time_synced = False
        self._manager = self.shared.get(MANAGER_KEY, _new_manager, _close_manager)
        self._commands = _CommandHandler(self)
        self._app = _Application(self)
        n = len(rtu.addresses)
        self._channels: list[Any] = [None] * n
        self._stations: list[Any] = [None] * n
        self._listeners: list[_Listener | None] = [None] * n
        self._store_all()

    # ------------------------------------------------------------------------------------------- protocol hooks

    @classmethod
    def supported_quality(cls, kind: PointKind) -> Quality:
        return SUPPORTED_QUALITY[flag_set(kind)]

    @property
    def time_synchronised(self) -> bool:
        with self._time_lock:
            return self._time_synced

    def _time_written(self, epoch_ms: int) -> None:
        with self._time_lock:
            self._time_synced = True
        log.info("DNP3 RTU %s: time written by the master (%d ms from the local clock)", self.name,
                 epoch_ms - now_ms())

    def _start_link(self, index: int, timeout_s: float) -> None:
        host, _, port = self.rtu.addresses[index].rpartition(":")
        listener = _Listener()
        try:
            channel = self._manager.AddTCPServer(f"{self.name}-{index}", o.levels.NOTHING,
                                                 o.ServerAcceptMode.CloseExisting, o.IPEndpoint(host, int(port)),
                                                 listener)
        except Exception as exc:
            raise SimulatorError(f"RTU {self.name!r}: cannot listen on {self.rtu.addresses[index]}: {exc}") from exc
        db = o.DatabaseConfig(self._db_size)
        # DatabaseConfig(n) makes n points of every object type, the unused ones "offline, restart" in class 0
        # responses; g50v4 (time and interval) among them is one Wireshark 4.0 cannot decode. The binding cannot
        # read these maps, but an empty one can be assigned: keep only the types this device has.
        used = {_DB_FIELD[s.point.source.type_id] for s in self.slots if s.monitored}
        for name in ("binary_input", "double_binary", "analog_input", "counter", "frozen_counter",
                     "binary_output_status", "analog_output_status", "time_and_interval", "octet_string"):
            if name not in used:
                setattr(db, name, {})
        cfg = o.OutstationStackConfig(db)
        cfg.outstation.eventBufferConfig = o.EventBufferConfig.AllTypes(self._event_buffer)
        params = cfg.outstation.params
        params.allowUnsolicited = self.rtu.dnp3.sim_unsolicited
        params.selectTimeout = o.TimeDuration.Milliseconds(int(self._select_timeout_s * 1000))
        cfg.link.LocalAddr = self.rtu.common_address
        cfg.link.RemoteAddr = self.rtu.dnp3.master_address
        station = channel.AddOutstation(f"{self.name}-os{index}", self._commands, self._app, cfg)
        self._channels[index], self._stations[index], self._listeners[index] = channel, station, listener
        # A fresh outstation has an empty database: write the current state before the master can read it.
        stamp = now_ms()
        builder = o.UpdateBuilder()
        with self._lock:
            state = [(s, s.value, s.quality) for s in self.slots if s.monitored]
        for s, value, quality in state:
            self._update(builder, s, value, quality, stamp, o.EventMode.Suppress)
        station.Apply(builder.Build())
        station.Enable()  # AddTCPServer bound the port already (it raises when it cannot)

    def _stop_link(self, index: int) -> None:
        station, channel = self._stations[index], self._channels[index]
        self._stations[index] = self._channels[index] = self._listeners[index] = None
        if station is not None:
            station.Shutdown()
        if channel is not None:
            channel.Shutdown()  # closes the listening socket and every master connection
        del station, channel

    def _report(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause, links: list[int]
                ) -> list[int]:
        took = []
        for i in links:
            station = self._stations[i]
            if station is None:
                continue
            builder = o.UpdateBuilder()
            self._update(builder, s, value, quality, time_ms, o.EventMode.Force)
            station.Apply(builder.Build())
            took.append(i)
        return took

    def _store(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        station = self._stations[link]
        if station is None:
            return  # a stopped link starts a fresh outstation from the slots' state
        builder = o.UpdateBuilder()
        self._update(builder, s, value, quality, time_ms, o.EventMode.Suppress)
        station.Apply(builder.Build())

    def _dispose(self) -> None:
        self._channels = [None] * len(self._channels)
        self._stations = [None] * len(self._stations)
        self._listeners = [None] * len(self._listeners)
        self._manager = None  # the simulator closes the shared manager after every outstation

    def _client_count(self) -> int:
        return sum(1 for li in self._listeners if li is not None and li.open)

    # ------------------------------------------------------------------------------------------- values

    def _update(self, builder: Any, s: Slot, value: float, quality: Quality, time_ms: int, mode: Any) -> None:
        p = s.point
        flags = o.Flags(flags_from_quality(quality, flag_set(p.kind)))
        tq = o.TimestampQuality.SYNCHRONIZED if self.time_synchronised else o.TimestampQuality.UNSYNCHRONIZED
        t = o.DNPTime(int(time_ms), tq)
        index = p.source.address
        kind = p.kind
        if kind is PointKind.SINGLE:
            builder.Update(o.Binary(bool(value), flags, t), index, mode)
        elif kind is PointKind.DOUBLE:
            dbit = int(value) & 0x03
            # the state lives in the two top bits of the flag octet: writing the flags must keep it
            m = _with(o.DoubleBitBinary(o.DoubleBit(dbit)), o.Flags(flags.value | dbit << 6), t)
            builder.Update(m, index, mode)
        elif kind is PointKind.COUNTER:
            raw = max(0, min(0xFFFFFFFF, round((value - p.offset) / p.scale)))
            builder.Update(o.Counter(raw, flags, t), index, mode)
        elif kind is PointKind.SETPOINT:
            m = _with(o.AnalogOutputStatus((value - p.offset) / p.scale), flags, t)
            builder.Update(m, index, mode)
        else:
            builder.Update(o.Analog((value - p.offset) / p.scale, flags, t), index, mode)

    # ------------------------------------------------------------------------------------------- commands

    def _on_command(self, command: Any, index: int, *, operate: bool) -> Any:
        crob = isinstance(command, o.ControlRelayOutputBlock)
        s = self._by_control.get(("crob" if crob else "analog_output", index))
        if s is None or s.point.control is None:
            self.count_refused()
            return o.CommandStatus.NOT_SUPPORTED
        ctype = s.point.control.type
        if crob:
            value = command_value_from_crob(ctype, int(command.opType.value), int(command.tcc.value))
        elif ctype in (ControlType.SETPOINT_FLOAT, ControlType.SETPOINT_SCALED):
            value = float(command.value)
        else:
            value = None
        if value is None:
            self.count_refused()
            return o.CommandStatus.NOT_SUPPORTED
        answer = self.execute_command(s, value) if operate else self.check_command(s)
        return _STATUS[answer]


def _with(m: Any, flags: Any, t: Any) -> Any:
    """Set flags and time on a measurement whose constructor takes only the value (DoubleBitBinary, AO status)."""
    m.flags = flags
    m.time = t
    return m


__all__ = ["OutstationDnp3"]
