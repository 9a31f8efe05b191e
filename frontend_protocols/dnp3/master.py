"""DNP3 master adapter: one opendnp3 master per configured DNP3 RTU (one TCP channel each), in its own process.

Data path: opendnp3 calls the SOE handlers on its worker threads; they convert each object at once (plain ints and
floats, ``mapping``) and ``add`` a row to the adapter's ``UpdateBuffer``; the main loop flushes the buffer as
``UpdateBatch``es and sends heartbeats. Link state is decided under one lock from the library's callbacks (channel
state, every received response) and from the main loop's silence check, and queued with ``UpdateBuffer.event`` so the
RTDB sees it in wire order with the values.

Polling: opendnp3 runs its own start-up sequence on every (re)connection (disable unsolicited, clear restart,
class 1/2/3/0 integrity poll, time sync on NEED_TIME, enable unsolicited) and repeats the integrity poll on
DEVICE_RESTART and EVENT_BUFFER_OVERFLOW. A class poll returns the outstation's default variations (for opendnp3
outstations integers and events without time), so after each of those polls the adapter reads every configured
object type with an explicit variation (events with time, analogs as floats); that read ends with
``InterrogationDone``. Events are polled the same way every ``event_poll_period_s``; unsolicited responses are
taken as they come.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import opendnp3 as o

from frontend_protocols.batching import UpdateBuffer
from frontend_protocols.channel import HEARTBEAT_PERIOD_S, AdapterChannel, Heartbeat, Shutdown
from frontend_protocols.dispatch import RequestRouter, select_rtus
from frontend_protocols.dnp3.mapping import (
    EVENT_READ,
    STATIC_READ,
    PointMap,
    crob_for,
    dnp3_time_write,
    event_poll_period_s,
    raw_setpoint,
)
from frontend_protocols.errors import FrontendError
from frontend_protocols.held_selections import HeldSelections
from models.commands import (
    ClockSyncRequest,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import Protocol, RtuConfig, StationConfig
from models.points import ControlType, PointDef, Quality
from models.protocols.dnp3 import control_object
from models.timebase import now_ms
from models.updates import Cause, InterrogationDone, LinkEvent

log = logging.getLogger(__name__)

WORKER_THREADS = 1  # one strand per channel anyway; the adapter's own thread does the rest
INTEGRITY_RETRY_S = 5.0

#: Class name of an opendnp3 measurement -> the point type it reports (models.protocols.dnp3).
_TYPE_OF_CLASS = {
    "Binary": "binary_input",
    "DoubleBitBinary": "double_bit_binary_input",
    "Analog": "analog_input",
    "Counter": "counter",
    "AnalogOutputStatus": "analog_output_status",
}
_OP_TYPE = {0x01: o.OperationType.PULSE_ON, 0x03: o.OperationType.LATCH_ON, 0x04: o.OperationType.LATCH_OFF}
_TCC = {0: o.TripCloseCode.NUL, 1: o.TripCloseCode.CLOSE, 2: o.TripCloseCode.TRIP}
# DNP3 needs the OPERATE to follow its SELECT as the very next request (sequence number + 1), which an operator's
# confirmation time and the running polls cannot guarantee: the selection is held in the adapter and the execute
# sends SELECT and OPERATE back to back.
_SELECTED = "selected (SELECT sent to the field with the execute)"


class Dnp3AdapterError(FrontendError):
    """The DNP3 adapter cannot be built from the configuration it was given."""


@dataclass(slots=True)
class _Rtu:
    cfg: RtuConfig
    points: dict[tuple[str, int], PointMap]  # (point type, index) -> map
    controls: dict[tuple[str, int], PointDef]  # (crob | analog_output, index) -> point
    static_headers: list[tuple[int, int]]
    event_headers: list[tuple[int, int]]
    poll_period_s: float
    link_timeout_s: float
    channel: Any = None
    master: Any = None
    keep: list[Any] = field(default_factory=list)  # Python handler objects the library holds by reference
    event_scan: Any = None  # the periodic event poll; demanded at once after a command for its feedback
    # link state, guarded by Dnp3Master._lock
    channel_open: bool = False
    up: bool = False
    last_rx: float = 0.0
    lib_integrity: bool = False  # opendnp3's class poll running: its static objects are dropped
    fresh: bool = False  # connected, the library's start-up integrity poll has not completed yet
    need_integrity: bool = False
    up_since: float = 0.0  # monotonic
    # main loop only
    integrity_generation: int = 0
    integrity_deadline: float = 0.0  # monotonic; 0 = not running
    next_integrity: float = math.inf
    selected: HeldSelections[int] = field(default_factory=lambda: HeldSelections(_SELECTED))  # by control index


@dataclass(frozen=True, slots=True)
class _Pending:
    request: ControlRequest
    rtu: _Rtu
    started: float
    deadline: float


class _Listener(o.IChannelListener):
    def __init__(self, owner: Dnp3Master, rtu: _Rtu) -> None:
        super().__init__()
        self._owner, self._rtu = owner, rtu

    def OnStateChange(self, state: Any) -> None:  # noqa: N802 (library interface)
        try:
            self._owner._on_channel_state(self._rtu, state == o.ChannelState.OPEN, str(state.name))
        except Exception:
            self._owner._buffer.count("callback_errors")


class _Application(o.IMasterApplication):
    def __init__(self, owner: Dnp3Master, rtu: _Rtu) -> None:
        super().__init__()
        self._owner, self._rtu = owner, rtu

    def OnReceiveIIN(self, iin: Any) -> None:  # noqa: N802
        try:
            self._owner._on_iin(self._rtu, iin)
        except Exception:
            self._owner._buffer.count("callback_errors")

    def OnTaskStart(self, type: Any, id: Any) -> None:  # noqa: N802, A002
        try:
            if type == o.MasterTaskType.STARTUP_INTEGRITY_POLL:
                with self._owner._lock:
                    self._rtu.lib_integrity = True
        except Exception:
            self._owner._buffer.count("callback_errors")

    def OnTaskComplete(self, info: Any) -> None:  # noqa: N802
        try:
            self._owner._on_task_complete(self._rtu, info.type, info.result)
        except Exception:
            self._owner._buffer.count("callback_errors")

    def OnOpen(self) -> None:  # noqa: N802
        return None

    def OnClose(self) -> None:  # noqa: N802
        return None

    def AssignClassDuringStartup(self) -> bool:  # noqa: N802
        return False

    def Now(self) -> Any:  # noqa: N802
        return o.UTCTimestamp(now_ms())


class _SoeHandler(o.ISOEHandler):
    """Receives objects of one RTU; ``integrity`` marks the adapter's own integrity read (its end counts)."""

    def __init__(self, owner: Dnp3Master, rtu: _Rtu, *, integrity: bool = False) -> None:
        super().__init__()
        self._owner, self._rtu, self._integrity = owner, rtu, integrity
        self.generation = 0

    def BeginFragment(self, info: Any) -> None:  # noqa: N802
        try:
            self._owner._on_rx(self._rtu)
        except Exception:
            self._owner._buffer.count("callback_errors")

    def EndFragment(self, info: Any) -> None:  # noqa: N802
        try:
            if self._integrity and info.fin and not info.unsolicited:
                self._owner._work.put(("integrity_done", self._rtu, self.generation))
        except Exception:
            self._owner._buffer.count("callback_errors")

    def Process(self, info: Any, values: list[Any]) -> None:  # noqa: N802
        try:
            self._owner._on_values(self._rtu, info, values, integrity=self._integrity)
        except Exception:
            log.exception("DNP3 RTU %s: cannot process %s objects", self._rtu.cfg.name, info.gv)
            self._owner._buffer.count("callback_errors")

    def OnDeviceAttribute(self, info: Any, set: Any, variation: Any, value: Any) -> None:  # noqa: N802, A002
        return None


def _headers(pairs: list[tuple[int, int]]) -> list[Any]:
    return [o.Header.AllObjects(g, v) for g, v in pairs]


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class Dnp3Master:
    """The adapter: build with the configuration, then ``run()`` until Shutdown or the channel closes."""

    def __init__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        self._channel = channel
        self._adapter = adapter
        self._buffer = UpdateBuffer(channel, adapter)
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._pending: dict[int, _Pending] = {}
        self._rtus: dict[str, _Rtu] = {}
        self._requests = RequestRouter(
            f"DNP3 adapter {adapter}", log, control=self._on_control, interrogation=self._on_interrogation,
            clock_sync=self._on_clock_sync, count=self._buffer.count, answer=self._answer, in_progress=self._pending)
        for name in rtus:
            cfg = config.rtu(name)
            if cfg.protocol is not Protocol.DNP3:
                raise Dnp3AdapterError(f"RTU {name!r} speaks {cfg.protocol.value}, not dnp3")
            self._rtus[name] = self._build_rtu(cfg, config.points_of_rtu(name))
        self._manager: Any = o.DNP3Manager(WORKER_THREADS)

    # ----------------------------------------------------------------------------------------------- building
    @staticmethod
    def _build_rtu(cfg: RtuConfig, points: tuple[PointDef, ...]) -> _Rtu:
        pmap: dict[tuple[str, int], PointMap] = {}
        controls: dict[tuple[str, int], PointDef] = {}
        types: set[str] = set()
        for p in points:
            if p.source.type_id:
                if p.source.type_id not in STATIC_READ:
                    raise Dnp3AdapterError(f"point {p.name!r}: {p.source.type_id!r} is not a DNP3 point type")
                pmap[(p.source.type_id, p.source.address)] = PointMap.of(p)
                types.add(p.source.type_id)
            if p.control is not None:
                controls[(control_object(p.control.type), p.control.address)] = p
        order = list(STATIC_READ)  # fixed order: statuses before analogs
        statics = [STATIC_READ[t] for t in order if t in types]
        events = [EVENT_READ[t] for t in order if t in types]
        period = event_poll_period_s(cfg.dnp3.event_poll_period_s, cfg.frtu)
        return _Rtu(cfg=cfg, points=pmap, controls=controls, static_headers=statics, event_headers=events,
                    poll_period_s=period, link_timeout_s=period + cfg.dnp3.response_timeout_s)

    def _start_rtu(self, rtu: _Rtu) -> None:
        cfg, opts = rtu.cfg, rtu.cfg.dnp3
        retry = o.ChannelRetry(o.TimeDuration.Milliseconds(int(cfg.reconnect_backoff_s * 1000)),
                               o.TimeDuration.Milliseconds(int(cfg.reconnect_backoff_max_s * 1000)))
        hosts = [o.IPEndpoint(*_split_address(a)) for a in cfg.addresses]  # opendnp3 tries them in turn
        listener = _Listener(self, rtu)
        channel = self._manager.AddTCPClient(f"{cfg.name}", o.levels.NOTHING, retry, hosts, "0.0.0.0", listener)
        mcfg = o.MasterStackConfig()
        mcfg.master.responseTimeout = o.TimeDuration.Milliseconds(int(opts.response_timeout_s * 1000))
        mcfg.master.timeSyncMode = o.TimeSyncMode.NonLAN if opts.time_sync else getattr(o.TimeSyncMode, "None")
        mcfg.master.disableUnsolOnStartup = True
        mcfg.master.integrityOnEventOverflowIIN = True
        mcfg.link.LocalAddr = opts.master_address
        mcfg.link.RemoteAddr = cfg.common_address
        mcfg.link.KeepAliveTimeout = o.TimeDuration.Milliseconds(int(opts.keepalive_s * 1000))
        soe = _SoeHandler(self, rtu)
        app = _Application(self, rtu)
        master = channel.AddMaster(f"{cfg.name}-master", soe, app, mcfg)
        integrity_soe = _SoeHandler(self, rtu, integrity=True)
        event_soe = _SoeHandler(self, rtu)
        rtu.keep = [listener, soe, app, integrity_soe, event_soe]
        rtu.channel, rtu.master = channel, master
        if rtu.event_headers:
            period = o.TimeDuration.Milliseconds(int(rtu.poll_period_s * 1000))
            rtu.event_scan = master.AddScan(period, _headers(rtu.event_headers), event_soe)
            rtu.keep.append(rtu.event_scan)
        master.Enable()

    # ----------------------------------------------------------------------------------------------- callbacks
    def _link_event(self, rtu: _Rtu, up: bool, reason: str = "") -> None:
        """Caller holds _lock."""
        rtu.up = up
        self._buffer.count("link_up" if up else "link_down")
        self._buffer.event(LinkEvent(self._adapter, rtu.cfg.name, up, address=rtu.cfg.addresses[0], reason=reason,
                                     time_ms=now_ms()))

    def _on_channel_state(self, rtu: _Rtu, is_open: bool, state: str) -> None:
        with self._lock:
            was_open, rtu.channel_open = rtu.channel_open, is_open
            if is_open:
                rtu.fresh = True  # the library starts with its own integrity poll
            elif rtu.up:
                rtu.lib_integrity = False
                self._link_event(rtu, False, f"DNP3 channel to {rtu.cfg.addresses[0]} {state.lower()}")
        # Only a channel that was open can be lost: the OPENING/CLOSED states before the first connection (or
        # between retries) must not reset an integrity poll the next connection has already started.
        if was_open and not is_open:
            self._work.put(("link_lost", rtu))

    def _on_rx(self, rtu: _Rtu) -> None:
        with self._lock:
            rtu.last_rx = time.monotonic()
            if not rtu.up and rtu.channel_open:
                rtu.up_since = rtu.last_rx
                self._link_event(rtu, True)
                if not rtu.fresh:  # silence recovered on the same connection: no library integrity poll follows
                    rtu.need_integrity = True

    def _on_iin(self, rtu: _Rtu, iin: Any) -> None:
        self._on_rx(rtu)
        if iin.IsSet(o.IINBit.DEVICE_RESTART) or iin.IsSet(o.IINBit.EVENT_BUFFER_OVERFLOW):
            self._buffer.count("iin_restart_or_overflow")  # the library polls class 0 again; ours follows it

    def _on_task_complete(self, rtu: _Rtu, task: Any, result: Any) -> None:
        ok = result == o.TaskCompletion.SUCCESS
        if not ok:
            self._buffer.count(f"task_{str(result.name).lower()}")
        if task == o.MasterTaskType.STARTUP_INTEGRITY_POLL:
            with self._lock:
                rtu.lib_integrity = False
                if ok:
                    rtu.fresh = False
                    rtu.need_integrity = True

    def _on_values(self, rtu: _Rtu, info: Any, values: list[Any], *, integrity: bool) -> None:
        if not values:
            return
        ptype = _TYPE_OF_CLASS.get(type(values[0].value).__name__)
        if ptype is None:
            return  # octet strings, time objects, frozen counters...: not configured point types
        event = bool(info.isEventVariation)
        if not event and rtu.lib_integrity and not integrity:
            # The library's class 0 poll uses the outstation's default (possibly integer) variations; the explicit
            # read that follows it reports the same objects exactly.
            self._buffer.count("class0_objects_skipped", len(values))
            return
        cause = Cause.SPONTANEOUS if event else Cause.INTERROGATED
        unknown = 0
        for item in values:
            pm = rtu.points.get((ptype, int(item.index)))
            if pm is None:
                unknown += 1
                continue
            m = item.value
            raw = m.value
            try:
                raw_f = float(int(raw)) if ptype == "double_bit_binary_input" else float(raw)
                ts = m.time
                value, q, t = pm.convert(raw_f, int(m.flags.value), int(ts.value), int(ts.quality))
            except (TypeError, ValueError, OverflowError):
                value, q, t = math.nan, int(Quality.INVALID), -1
                self._buffer.count("conversion_errors")
            if q & Quality.INVALID and not math.isfinite(value):
                self._buffer.count("invalid_values")
            self._buffer.add(pm.point, value, q, t, cause)
        if unknown:
            self._buffer.count("unknown_index", unknown)

    # ----------------------------------------------------------------------------------------------- main loop
    def run(self) -> None:
        try:
            for rtu in self._rtus.values():
                self._start_rtu(rtu)
            next_beat = 0.0
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._channel.send(Heartbeat(self._adapter, now_ms(), self._buffer.counters()))
                    next_beat = now + HEARTBEAT_PERIOD_S / 2  # half: a loaded machine must not look hung
                for rtu in self._rtus.values():
                    self._supervise(rtu, now)
                self._drain_work()
                self._expire_controls(now)
                self._buffer.flush()
                msg = self._channel.recv(0.005 if self._buffer.waiting else 0.02)
                if msg is None:
                    continue
                if isinstance(msg, Shutdown) or self._channel.closed:
                    break
                self._requests.handle(msg)
        finally:
            self._close()
            self._buffer.flush(force=True)

    def _close(self) -> None:
        # Shutdown leaves opendnp3's threads until the objects are gone: shut down and drop in order.
        for rtu in self._rtus.values():
            for obj in (rtu.master, rtu.channel):
                if obj is not None:
                    try:
                        obj.Shutdown()
                    except Exception:
                        log.exception("DNP3 RTU %s: shutdown failed", rtu.cfg.name)
            rtu.master = rtu.channel = None
            rtu.keep = []
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.Shutdown()
            del manager

    def _supervise(self, rtu: _Rtu, now: float) -> None:
        with self._lock:
            if rtu.up and now - rtu.last_rx > rtu.link_timeout_s:
                self._link_event(rtu, False, f"no response from {rtu.cfg.addresses[0]} for "
                                             f"{rtu.link_timeout_s:.1f} s")
                lost = True
            else:
                lost = False
            if rtu.up and rtu.fresh and now - rtu.up_since > 2 * rtu.cfg.dnp3.response_timeout_s + 1.0:
                # the library's own integrity poll did not complete on this connection (it is not repeated on
                # every reconnection): read everything ourselves
                rtu.fresh = False
                rtu.need_integrity = True
            start = rtu.up and rtu.need_integrity
            if start:
                rtu.need_integrity = False
        if lost:
            self._link_lost(rtu, "link silent")
        if rtu.integrity_deadline and now > rtu.integrity_deadline:
            rtu.integrity_deadline = 0.0
            self._buffer.count("integrity_failed")
            rtu.next_integrity = now + INTEGRITY_RETRY_S
        if rtu.up and not rtu.integrity_deadline and now >= rtu.next_integrity:
            start = True
        if start:
            self._start_integrity(rtu)

    def _start_integrity(self, rtu: _Rtu) -> None:
        if rtu.master is None or not rtu.up:
            self._buffer.count("integrity_skipped_link_down")
            return
        if rtu.integrity_deadline:
            return
        rtu.integrity_generation += 1
        soe = rtu.keep[3]
        soe.generation = rtu.integrity_generation
        now = time.monotonic()
        rtu.integrity_deadline = now + 2 * rtu.cfg.dnp3.response_timeout_s + 1.0
        rtu.next_integrity = now + rtu.cfg.gi_period_s
        # Events first so the buffered changes are reported (with their times) before the current state.
        rtu.master.Scan(_headers(rtu.event_headers + rtu.static_headers), soe)

    def _link_lost(self, rtu: _Rtu, reason: str) -> None:
        rtu.integrity_deadline = 0.0
        rtu.next_integrity = math.inf
        rtu.selected.clear()
        for rid, pend in list(self._pending.items()):
            if pend.rtu is rtu:
                del self._pending[rid]
                self._answer(pend.request, ControlStatus.LINK_DOWN, f"link to {rtu.cfg.name} lost: {reason}",
                             pend.started)

    def _drain_work(self) -> None:
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            what = item[0]
            if what == "integrity_done":
                _, rtu, generation = item
                if rtu.integrity_deadline and generation == rtu.integrity_generation:
                    rtu.integrity_deadline = 0.0
                    self._buffer.count("integrity_done")
                    self._buffer.event(InterrogationDone(self._adapter, rtu.cfg.name, now_ms()))
            elif what == "link_lost":
                self._link_lost(item[1], "channel closed")
            elif what == "control":
                self._control_done(item[1], item[2], item[3])

    def _on_interrogation(self, msg: InterrogationRequest) -> None:
        for rtu in select_rtus(self._rtus, msg.rtu, self._buffer.count):
            self._start_integrity(rtu)

    def _on_clock_sync(self, msg: ClockSyncRequest) -> None:
        for rtu in select_rtus(self._rtus, msg.rtu, self._buffer.count):
            self._clock_sync(rtu)

    def _clock_sync(self, rtu: _Rtu) -> None:
        if rtu.master is None or not rtu.up:
            self._buffer.count("clock_sync_skipped_link_down")
            return
        header = o.Header.Raw(dnp3_time_write(now_ms()))
        rtu.master.PerformFunction("clock sync", o.FunctionCode.WRITE, [header])
        self._buffer.count("clock_sync_sent")

    # ----------------------------------------------------------------------------------------------- commands
    def _answer(self, req: ControlRequest, status: ControlStatus, detail: str, started: float) -> None:
        self._buffer.count(f"control_{status.value}")
        self._buffer.event(ControlResult(req.request_id, status, detail, (time.monotonic() - started) * 1000.0))

    def _on_control(self, req: ControlRequest) -> None:
        started = time.monotonic()
        rtu = self._rtus.get(req.rtu)
        key = (control_object(req.type), req.address)
        point = rtu.controls.get(key) if rtu is not None else None
        if rtu is None or point is None or req.common_address != rtu.cfg.common_address:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"no {key[0]} index {req.address} at DNP3 address "
                         f"{req.common_address} on RTU {req.rtu!r}", started)
            return
        control = point.control
        assert control is not None
        if control.type is not req.type:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"{point.name} is a {control.type.value} command, "
                         f"not {req.type.value}", started)
            return
        if req.request_id in self._pending:
            self._answer(req, ControlStatus.ERROR, f"request id {req.request_id} is already in progress", started)
            return
        with self._lock:
            up = rtu.up
        if not up or rtu.master is None:
            self._answer(req, ControlStatus.LINK_DOWN, f"RTU {req.rtu} is not connected", started)
            return
        verdict = rtu.selected.decide(req, req.address, point, started)
        if verdict is not None:
            self._answer(req, *verdict, started)
            return
        try:
            command = self._command(control.type, point, req.value)
        except ValueError as exc:
            self._answer(req, ControlStatus.ERROR, str(exc), started)
            return
        rid = req.request_id
        self._pending[rid] = _Pending(req, rtu, started, started + req.timeout_s)

        def on_result(result: Any) -> None:  # opendnp3 thread: copy out, never raise
            try:
                points = [(int(r.state.value), str(r.state.name), str(r.status.name)) for r in result.to_list()]
                self._work.put(("control", rid, str(result.summary.name), points))
            except Exception:
                self._work.put(("control", rid, "CALLBACK_ERROR", []))

        if control.mode.selects:  # the held selection was valid: SELECT and OPERATE back to back
            rtu.master.SelectAndOperate(command, req.address, on_result)
        else:
            rtu.master.DirectOperate(command, req.address, on_result)

    @staticmethod
    def _command(ctype: ControlType, point: PointDef, value: float) -> Any:
        if ctype in (ControlType.SINGLE, ControlType.DOUBLE):
            code = int(crob_for(ctype, value, point.name))
            return o.ControlRelayOutputBlock(_OP_TYPE[code & 0x0F], _TCC[code >> 6])
        raw = raw_setpoint(point, value)
        if not math.isfinite(raw):
            raise ValueError(f"set-point {point.name}: value {value} is not a finite number")
        if ctype is ControlType.SETPOINT_FLOAT:
            return o.AnalogOutputFloat32(raw)
        scaled = round(raw)
        if not -32768 <= scaled <= 32767:
            raise ValueError(f"scaled set-point {point.name}: raw value {scaled} outside -32768..32767")
        return o.AnalogOutputInt16(scaled)

    def _control_done(self, rid: int, summary: str, points: list[tuple[int, str, str]]) -> None:
        pend = self._pending.pop(rid, None)
        if pend is None:
            self._buffer.count("late_control_results")
            return
        if summary == "SUCCESS" and points and all(st == "SUCCESS" == status for _, st, status in points):
            self._answer(pend.request, ControlStatus.SUCCESS, "operated", pend.started)
            rtu = self._rtus.get(pend.request.rtu)
            if rtu is not None and rtu.event_scan is not None:
                rtu.event_scan.Demand()  # the device's status change is an event: fetch it now, not at the next poll
            return
        refused = [(state, status) for _, state, status in points if status != "SUCCESS"]
        if refused:
            state, status = refused[0]
            self._answer(pend.request, ControlStatus.REFUSED_BY_FIELD, f"{state.lower()}: {status}", pend.started)
        elif summary == "FAILURE_RESPONSE_TIMEOUT":
            self._answer(pend.request, ControlStatus.TIMEOUT, "no response from the outstation", pend.started)
        elif summary == "FAILURE_NO_COMMS":
            self._answer(pend.request, ControlStatus.LINK_DOWN, "no communication with the outstation",
                         pend.started)
        else:
            self._answer(pend.request, ControlStatus.ERROR, f"command task failed: {summary}", pend.started)

    def _expire_controls(self, now: float) -> None:
        for rid, pend in list(self._pending.items()):
            if now >= pend.deadline:
                del self._pending[rid]
                self._answer(pend.request, ControlStatus.TIMEOUT, f"no answer from {pend.rtu.cfg.name} within "
                             f"{pend.request.timeout_s:.1f} s", pend.started)


def run_adapter(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    """Adapter process entry point (``frontend_protocols.channel.AdapterMain``): returns on Shutdown or pipe close."""
    Dnp3Master(channel, config, adapter, rtus).run()


__all__ = ["Dnp3AdapterError", "Dnp3Master", "run_adapter"]
