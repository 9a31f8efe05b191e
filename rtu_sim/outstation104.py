"""One simulated IEC 60870-5-104 RTU on c104: the protocol side of ``rtu_sim.outstation.Outstation``.

Each configured address runs its own ``c104.Server`` whose points mirror the base's state, so a redundant pair
reports the same values and a master can switch over. c104's own thread calls the command handlers, which go through
the base's ``execute_command``.

No ``from __future__ import annotations`` here: c104 checks callback type hints against its own classes, which
postponed (string) annotations would defeat.
"""

import datetime
import logging
import random
import time
from collections.abc import Callable, Sequence

import c104

from models.config import RtuConfig, SimProfile
from models.points import ControlType, PointDef, PointKind, Quality
from models.updates import Cause
from rtu_sim.errors import SimulatorError
from rtu_sim.outstation import CommandAnswer, Outstation, RtuStats, SharedResources, Slot

log = logging.getLogger(__name__)

#: Quality flags an IEC 104 quality descriptor can carry, per point kind.
_QUALITY_TO_C104: tuple[tuple[Quality, c104.Quality], ...] = (
    (Quality.INVALID, c104.Quality.Invalid),
    (Quality.BLOCKED, c104.Quality.Blocked),
    (Quality.SUBSTITUTED, c104.Quality.Substituted),
    (Quality.NOT_TOPICAL, c104.Quality.NonTopical),
    (Quality.OVERFLOW, c104.Quality.Overflow),
)
_IEC_QUALITY = Quality.INVALID | Quality.BLOCKED | Quality.SUBSTITUTED | Quality.NOT_TOPICAL | Quality.OVERFLOW
_STATUS_QUALITY = _IEC_QUALITY & ~Quality.OVERFLOW  # SIQ/DIQ have no overflow bit
_COUNTER_QUALITY = Quality.INVALID  # BCR carries only IV (plus carry/adjusted, which mean something else)

_DOUBLE = {0: c104.Double.INTERMEDIATE, 1: c104.Double.OFF, 2: c104.Double.ON, 3: c104.Double.INDETERMINATE}
_CONTROL_TYPES = {
    ControlType.SINGLE: c104.Type.C_SC_NA_1,
    ControlType.DOUBLE: c104.Type.C_DC_NA_1,
    ControlType.SETPOINT_FLOAT: c104.Type.C_SE_NC_1,
    ControlType.SETPOINT_SCALED: c104.Type.C_SE_NB_1,
}
_TIME_TAGGED = frozenset({"M_SP_TB_1", "M_DP_TB_1", "M_ME_TD_1", "M_ME_TE_1", "M_ME_TF_1", "M_IT_TB_1"})
_INT16_MIN, _INT16_MAX = -32768, 32767
_NORMALIZED_MAX = 1.0 - 2.0**-15


def _utc(time_ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(time_ms / 1000.0, tz=datetime.UTC)


def quality_flags_supported(kind: PointKind) -> Quality:
    """Which of our quality flags the IEC 104 information object of ``kind`` can transmit."""
    if kind is PointKind.COUNTER:
        return _COUNTER_QUALITY
    if kind.is_status:
        return _STATUS_QUALITY
    return _IEC_QUALITY


_COT = {Cause.SPONTANEOUS: c104.Cot.SPONTANEOUS, Cause.RETURN_REMOTE: c104.Cot.RETURN_INFO_REMOTE}
__all__ = ["Outstation104", "RtuStats", "quality_flags_supported"]


class Outstation104(Outstation):
    """One RTU of the station configuration served by c104 on every one of its addresses."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, shared: SharedResources | None = None, max_queue: int = 200_000,
                 tick_rate_ms: int = 100) -> None:
        super().__init__(rtu, points, sims, rng=rng, shared=shared, max_queue=max_queue)
        self._controls: dict[int, list[c104.Point]] = {}  # slot index -> its command object, one per server
        for s in self.slots:
            s.monitored = bool(s.point.source.type_id)
        select_timeout_ms = int(1000 * max([10.0] + [p.control.timeout_s for p in points if p.control]))
        self._servers: list[c104.Server] = []
        for address in rtu.addresses:
            host, port = address.rsplit(":", 1)
            server = c104.Server(ip=host, port=int(port), tick_rate_ms=tick_rate_ms,
                                 select_timeout_ms=select_timeout_ms)
            station = server.add_station(common_address=rtu.common_address)
            if station is None:
                raise SimulatorError(f"RTU {rtu.name!r}: c104 refused common address {rtu.common_address}")
            for s in self.slots:
                self._add_points(station, s, address)
            self._servers.append(server)
        self._store_all()

    # ------------------------------------------------------------------------------------------- protocol hooks

    @classmethod
    def supported_quality(cls, kind: PointKind) -> Quality:
        return quality_flags_supported(kind)

    def _start_link(self, index: int, timeout_s: float) -> None:
        server = self._servers[index]
        server.start()
        deadline = time.monotonic() + timeout_s
        while not server.is_running:
            if time.monotonic() > deadline:
                raise SimulatorError(f"RTU {self.name!r}: server on {self.rtu.addresses[index]} did not start "
                                     f"within {timeout_s} s (port in use?)")
            time.sleep(0.01)

    def _stop_link(self, index: int) -> None:
        self._servers[index].stop()

    def _report(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause, links: list[int]
                ) -> list[int]:
        took = []
        cot = _COT.get(cause, c104.Cot.SPONTANEOUS)
        for i in links:
            cp = s.handles[i]
            cp.info = self._info(s, value, quality, time_ms)
            if cp.transmit(cause=cot):
                took.append(i)
        return took

    def _store(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        s.handles[link].info = self._info(s, value, quality, time_ms)

    def _dispose(self) -> None:
        """Drop the c104 objects now.

        The command handlers close over this object, which holds the servers that hold the handlers: without
        breaking that cycle the native servers live on until some later garbage-collector run destroys them on
        whatever thread triggers it."""
        for cmds in self._controls.values():
            for cmd in cmds:
                cmd.on_receive(callable=None)
        self._controls.clear()
        for s in self.slots:
            s.handles.clear()
        self._servers.clear()

    def _client_count(self) -> int:
        return sum(srv.open_connection_count for srv, up in zip(self._servers, self._running, strict=True) if up)

    def _on_block(self, s: Slot, blocked: bool) -> None:
        """c104 2.2.1 still sends ACT_TERM ~1 ms after a *negative* execute confirmation of a select-before-operate
        command, and its own client then turns the failure into success (a race). So a blocked SBO control refuses
        already the select, as a real RTU in local/blocked state does: the command object is switched to direct mode,
        which c104 answers with a negative select confirmation and no ACT_TERM. Direct-mode controls are refused
        on execute by the command handler."""
        self._select_refusal(s, blocked)

    def set_local(self, local: bool = True) -> None:
        super().set_local(local)
        with self._io_lock:
            for s in self.slots:
                if s.index in self._controls:
                    self._select_refusal(s, local or self.is_blocked(s.point.name))

    def _select_refusal(self, s: Slot, refuse: bool) -> None:
        control = s.point.control
        if control is not None and control.mode.selects:
            mode = c104.CommandMode.DIRECT if refuse else c104.CommandMode.SELECT_AND_EXECUTE
            for cmd in self._controls.get(s.index, []):
                cmd.command_mode = mode

    # ------------------------------------------------------------------------------------------- construction

    def _add_points(self, station: c104.Station, s: Slot, address: str) -> None:
        p = s.point
        where = f"RTU {self.rtu.name!r} ({address}) point {p.name!r}"
        if p.source.type_id:
            cp = station.add_point(io_address=p.source.address, type=getattr(c104.Type, p.source.type_id))
            if cp is None:
                raise SimulatorError(f"{where}: c104 refused IOA {p.source.address} type {p.source.type_id}")
            s.handles.append(cp)
        if p.control is not None:
            mode = (c104.CommandMode.SELECT_AND_EXECUTE if p.control.mode.selects
                    else c104.CommandMode.DIRECT)
            cmd = station.add_point(io_address=p.control.address, type=_CONTROL_TYPES[p.control.type],
                                    command_mode=mode)
            if cmd is None:
                raise SimulatorError(f"{where}: c104 refused control IOA {p.control.address}")
            cmd.on_receive(callable=self._command_handler(s))
            self._controls.setdefault(s.index, []).append(cmd)

    def _command_handler(self, s: Slot) -> Callable[[c104.Point, c104.Information, c104.IncomingMessage],
                                                     c104.ResponseState]:
        def on_command(point: c104.Point, previous_info: c104.Information,
                       message: c104.IncomingMessage) -> c104.ResponseState:
            # c104 removes a raising callback and then confirms commands positively: never let anything escape.
            try:
                answer = self.execute_command(s, float(int(point.info.value)) if s.point.control.type in (
                    ControlType.DOUBLE, ControlType.SETPOINT_SCALED) else float(point.info.value))
            except Exception:
                log.exception("RTU %r: command on %r failed; answered negatively", self.rtu.name, s.point.name)
                self.count_refused()
                return c104.ResponseState.FAILURE
            return c104.ResponseState.SUCCESS if answer is CommandAnswer.ACCEPTED else c104.ResponseState.FAILURE

        return on_command

    def _info(self, s: Slot, value: float, quality: Quality, time_ms: int) -> c104.Information:
        p = s.point
        type_id = p.source.type_id
        at = _utc(time_ms) if type_id in _TIME_TAGGED else None
        if p.kind is PointKind.COUNTER:
            raw = round((value - p.offset) / p.scale)
            raw = ((raw + 2**31) % 2**32) - 2**31  # a 32-bit binary counter wraps
            bq = c104.BinaryCounterQuality.Invalid if quality & Quality.INVALID else c104.BinaryCounterQuality()
            return c104.BinaryCounterInfo(counter=raw, sequence=c104.UInt5(0), quality=bq, recorded_at=at)
        q = c104.Quality()
        for ours, theirs in _QUALITY_TO_C104:
            if quality & ours:
                q = q | theirs
        if p.kind is PointKind.DOUBLE:
            return c104.DoubleInfo(state=_DOUBLE[int(value) & 3], quality=q, recorded_at=at)
        if p.kind is PointKind.SINGLE:
            return c104.SingleInfo(on=bool(value), quality=q, recorded_at=at)
        raw_f = (value - p.offset) / p.scale
        if type_id in ("M_ME_NC_1", "M_ME_TF_1"):
            return c104.ShortInfo(actual=raw_f, quality=q, recorded_at=at)
        if type_id in ("M_ME_NB_1", "M_ME_TE_1"):
            raw_i = min(_INT16_MAX, max(_INT16_MIN, round(raw_f)))
            return c104.ScaledInfo(actual=c104.Int16(raw_i), quality=q, recorded_at=at)
        if type_id in ("M_ME_NA_1", "M_ME_TD_1"):
            raw_n = min(_NORMALIZED_MAX, max(-1.0, raw_f))
            return c104.NormalizedInfo(actual=c104.NormalizedFloat(raw_n), quality=q, recorded_at=at)
        raise SimulatorError(f"point {p.name!r}: type {type_id} is not simulated")
