"""Modbus TCP master adapter: polls every configured Modbus device by its scan plan, run in its own process.

Threads: per device, ``options.connections`` worker threads, each owning one pymodbus ``ModbusTcpClient``, take jobs
(reads, writes) from the device's priority queue (commands first) and put raw results on one result queue. The main
loop owns every decision: it schedules the scan groups, decodes results into rows (only changed values, plus every
value after a reconnect or an interrogation request), keeps the link state, answers commands and sends heartbeats.
A job carries the link generation it was made for; a result of an older generation is dropped.

Modbus has no events, no quality and no time tags: a value that changed between polls is reported with the time its
response arrived and cause PERIODIC; a complete scan of every group ends with ``InterrogationDone``.

Failures: connection refused/closed and request time-outs take the link down (LinkEvent, reconnect with back-off,
alternating between the RTU's addresses); a malformed answer (bad MBAP length, transaction id, truncated PDU, foreign
function code, byte count) marks the read's points INVALID and reopens the TCP connection to resynchronise the
stream; an exception response marks them INVALID (reads) or refuses the command (writes).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.pdu import ModbusPDU

from frontend_protocols.batching import UpdateBuffer
from frontend_protocols.channel import HEARTBEAT_PERIOD_S, AdapterChannel, Heartbeat, Shutdown
from frontend_protocols.dispatch import RequestRouter, select_rtus
from frontend_protocols.errors import FrontendError
from frontend_protocols.held_selections import HeldSelections
from frontend_protocols.modbus.codec import (
    Decoded,
    command_words,
    decode_read,
    decode_slot,
    invalid_rows,
    readback_matches,
)
from frontend_protocols.modbus.register_map import (
    PointSlot,
    ReadRequest,
    ScanGroupKind,
    ScanPlan,
    plan_scan,
)
from models.commands import (
    ClockSyncRequest,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import Protocol, RtuConfig, StationConfig
from models.points import PointDef, PointKind
from models.protocols.modbus import RegisterType, Table, control_register
from models.timebase import now_ms
from models.updates import Cause, InterrogationDone, LinkEvent

log = logging.getLogger(__name__)

READBACK_PERIOD_S = 0.05  # between read-backs of a commanded point until it shows the command done
WORKER_POLL_S = 0.1  # a worker without work looks at its stop flag this often
# Modbus has no select: the link and the address are checked, the write happens on execute.
_SELECTED = "selected (Modbus has no select: link and address checked, the write follows on execute)"


class ModbusAdapterError(FrontendError):
    """The Modbus adapter cannot be built from the configuration it was given."""


class Outcome(Enum):
    OK = "ok"
    EXCEPTION = "exception"  # a Modbus exception response (code in ``exception_code``)
    MALFORMED = "malformed"  # bytes came back but not a valid answer to the request
    LINK = "link"  # connect failed, connection closed, or no answer within the request time-out


@dataclass(frozen=True, slots=True)
class _Job:
    generation: int
    kind: str  # "read" (scan), "write" (command), "readback" (verification of a command)
    read: ReadRequest | None = None
    group: ScanGroupKind | None = None
    full: bool = False  # report every value of this read, changed or not
    request_id: int = 0  # commands: the ControlRequest; read-backs carry it too
    table: Table | None = None  # write target
    address: int = 0
    words: list[int] | bool | None = None


@dataclass(frozen=True, slots=True)
class _Result:
    job: _Job
    device: str
    outcome: Outcome
    values: list[int] | list[bool] | None = None
    exception_code: int = 0
    detail: str = ""
    arrived_ms: int = 0


@dataclass(slots=True)
class _Pending:
    request: ControlRequest
    point: PointDef
    started: float  # monotonic
    deadline: float
    readback: ReadRequest | None  # None: the write's own confirmation is the verification
    written: bool = False
    next_readback: float = 0.0
    last_seen: str = ""


@dataclass(slots=True)
class _Device:
    cfg: RtuConfig
    plan: ScanPlan
    points: tuple[PointDef, ...]
    controls: dict[tuple[Table, int], PointDef]
    jobs: queue.PriorityQueue[tuple[int, int, _Job]]
    backoff_s: float
    generation: int = 0
    up: bool = False
    connecting: bool = False
    active: int = 0  # index into cfg.addresses
    next_attempt: float = 0.0
    next_full: float = math.inf  # periodic full report (gi_period_s)
    due: dict[ScanGroupKind, float] = field(default_factory=dict)
    outstanding: dict[ScanGroupKind, int] = field(default_factory=dict)  # reads of the running cycle not back yet
    cycle_failed: dict[ScanGroupKind, bool] = field(default_factory=dict)
    full_wanted: set[ScanGroupKind] = field(default_factory=set)
    scanned: set[ScanGroupKind] = field(default_factory=set)  # groups complete since the last InterrogationDone
    last: dict[int, tuple[float, int]] = field(default_factory=dict)  # point -> last reported (value, quality)
    selected: HeldSelections[tuple[Table, int]] = field(default_factory=lambda: HeldSelections(_SELECTED))
    failing: dict[tuple[Table, int], str] = field(default_factory=dict)  # read -> how it fails (logged once)
    workers: list[_Worker] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cfg.addresses[self.active]


_seq = itertools.count()


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _exception_name(code: int) -> str:
    try:
        return f"0x{code:02X} {ExcCodes(code).name}"
    except ValueError:
        return f"0x{code:02X}"


def _readback_request(p: PointDef) -> ReadRequest | None:
    """A read of the point's own monitored value, to verify a command on it; None for pure command points."""
    if p.kind is PointKind.COMMAND or not p.source.type_id:
        return None
    rt = RegisterType.parse(p.source.type_id)
    return ReadRequest(rt.table, p.source.address, rt.width, (PointSlot(p, 0, rt.dtype),))


def _expected_frame_length(job: _Job) -> int | None:
    """Exact length of a valid answer's ADU (MBAP + PDU) to a read, or None for other requests."""
    if job.read is None:
        return None
    data = (job.read.count + 7) // 8 if job.read.is_bits else 2 * job.read.count
    return 7 + 2 + data  # MBAP 7, function code and byte count 2


class _Worker(threading.Thread):
    """One TCP connection to a device: executes jobs from the device's queue, one at a time (no pipelining)."""

    def __init__(self, master: ModbusMaster, device: _Device, index: int) -> None:
        super().__init__(name=f"modbus-{device.cfg.name}-{index}", daemon=True)
        self._master = master
        self._dev = device
        self._client: ModbusTcpClient | None = None
        self._generation = -1
        self._rx = b""  # bytes received for the current request (pymodbus hands its whole receive buffer)
        self.stop_flag = threading.Event()

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self._rx = b""
        else:
            self._rx = data
        return data

    def close_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken socket must not stop the worker
                pass
            self._client = None

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                try:
                    _, _, job = self._dev.jobs.get(timeout=WORKER_POLL_S)
                except queue.Empty:
                    if self._dev.generation != self._generation:
                        self.close_client()  # link went down: drop the connection with it
                    continue
                if job.generation != self._dev.generation:
                    continue  # made for a link that has gone down since
                self._master.results.put(self._execute(job))
        finally:
            self.close_client()

    def _connect(self, job: _Job) -> str:
        """Open the connection for the job's link generation; empty string when connected, else why not."""
        if self._client is not None and self._generation == job.generation and self._client.connected:
            return ""
        self.close_client()
        self._generation = job.generation
        cfg = self._dev.cfg
        host, port = _split(self._dev.address)
        client = ModbusTcpClient(host, port=port, timeout=cfg.connect_timeout_s, retries=0,
                                 trace_packet=self._trace, name=f"{cfg.name}@{host}:{port}")
        if not client.connect():
            return f"cannot connect to {host}:{port}"
        client.comm_params.timeout_connect = cfg.modbus.request_timeout_s  # from now on: the answer time-out
        self._client = client
        return ""

    def _execute(self, job: _Job) -> _Result:
        name = self._dev.cfg.name
        try:
            why = self._connect(job)
            if why:
                return _Result(job, name, Outcome.LINK, detail=why)
            assert self._client is not None
            unit = self._dev.cfg.common_address
            self._rx = b""
            pdu = self._request(self._client, job, unit)
            arrived = now_ms()
        except ConnectionException as exc:
            self.close_client()
            return _Result(job, name, Outcome.LINK, detail=f"connection lost: {exc}")
        except (ModbusException, ValueError, IndexError, TypeError, OSError) as exc:
            got = len(self._rx)
            self.close_client()  # whatever is left in the stream cannot be trusted: resynchronise
            if got == 0:
                return _Result(job, name, Outcome.LINK,
                               detail=f"no answer within {self._dev.cfg.modbus.request_timeout_s} s")
            return _Result(job, name, Outcome.MALFORMED,
                           detail=f"{type(exc).__name__}: {exc} ({got} bytes: {self._rx[:32].hex()})")
        return self._check(job, name, pdu, arrived)

    @staticmethod
    def _request(client: ModbusTcpClient, job: _Job, unit: int) -> ModbusPDU:
        if job.read is not None:
            r = job.read
            assert r is not None
            call = {Table.COIL: client.read_coils, Table.DISCRETE_INPUT: client.read_discrete_inputs,
                    Table.HOLDING: client.read_holding_registers, Table.INPUT: client.read_input_registers}[r.table]
            return call(r.start, count=r.count, device_id=unit)
        if isinstance(job.words, bool):
            return client.write_coil(job.address, job.words, device_id=unit)
        assert job.words is not None
        if len(job.words) == 1:
            return client.write_register(job.address, job.words[0], device_id=unit)
        return client.write_registers(job.address, job.words, device_id=unit)

    def _check(self, job: _Job, name: str, pdu: ModbusPDU, arrived: int) -> _Result:
        """Validate the answer against the request: what pymodbus lets through is not yet a valid answer."""
        expected_fc = job.read.function_code if job.read is not None else (
            5 if isinstance(job.words, bool) else 6 if job.words is not None and len(job.words) == 1 else 16)
        if pdu.isError():
            code = int(getattr(pdu, "exception_code", 0))
            if pdu.function_code & 0x7F != expected_fc:  # an exception answer carries the function code | 0x80
                self.close_client()
                return _Result(job, name, Outcome.MALFORMED,
                               detail=f"exception for function {pdu.function_code & 0x7F}, asked {expected_fc}")
            return _Result(job, name, Outcome.EXCEPTION, exception_code=code, arrived_ms=arrived,
                           detail=f"exception {_exception_name(code)}")
        if pdu.function_code != expected_fc:
            self.close_client()
            return _Result(job, name, Outcome.MALFORMED,
                           detail=f"answer has function code {pdu.function_code}, asked {expected_fc}")
        length = _expected_frame_length(job)
        if length is not None:
            frame = self._rx
            declared = int.from_bytes(frame[4:6], "big") + 6 if len(frame) >= 6 else -1
            byte_count = frame[8] if len(frame) > 8 else -1
            if len(frame) != length or declared != length or byte_count != length - 9:
                self.close_client()
                return _Result(job, name, Outcome.MALFORMED,
                               detail=f"answer of {len(frame)} bytes (MBAP says {declared}, byte count "
                                      f"{byte_count}), expected {length}: {frame[:32].hex()}")
            r = job.read
            assert r is not None
            values: list[Any] = list(pdu.bits[:r.count]) if r.is_bits else list(pdu.registers)
            if len(values) != r.count:
                self.close_client()
                return _Result(job, name, Outcome.MALFORMED, detail=f"{len(values)} values for {r.count}")
            return _Result(job, name, Outcome.OK, values=values, arrived_ms=arrived)
        return _Result(job, name, Outcome.OK, arrived_ms=arrived)


class ModbusMaster:
    """The adapter: build with the configuration, then ``run()`` until Shutdown or the channel closes."""

    def __init__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        self._channel = channel
        self._adapter = adapter
        self._buf = UpdateBuffer(channel, adapter)
        self.results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self._devices: dict[str, _Device] = {}
        self._pending: dict[int, _Pending] = {}
        self._timers: list[tuple[float, int, int]] = []  # (when, seq, request id): read-backs due
        self._requests = RequestRouter(
            f"Modbus adapter {adapter}", log, control=self._on_control, interrogation=self._on_interrogation,
            clock_sync=self._on_clock_sync, count=self._buf.count, answer=self._answer, in_progress=self._pending,
            error_detail="adapter error while handling the command")
        for name in rtus:
            cfg = config.rtu(name)
            if cfg.protocol is not Protocol.MODBUS:
                raise ModbusAdapterError(f"RTU {name!r} speaks {cfg.protocol.value}, not modbus")
            points = config.points_of_rtu(name)
            controls: dict[tuple[Table, int], PointDef] = {}
            for p in points:
                if p.control is not None:
                    controls[(control_register(p.control.type).table, p.control.address)] = p
            dev = _Device(cfg=cfg, plan=plan_scan(cfg, points), points=points, controls=controls,
                          jobs=queue.PriorityQueue(), backoff_s=cfg.reconnect_backoff_s)
            dev.workers = [_Worker(self, dev, k) for k in range(cfg.modbus.connections)]
            self._devices[name] = dev

    # ----------------------------------------------------------------------------------------------- main loop
    def run(self) -> None:
        for dev in self._devices.values():
            for w in dev.workers:
                w.start()
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    self._channel.send(Heartbeat(self._adapter, now_ms(), self._buf.counters()))
                    next_beat = now + HEARTBEAT_PERIOD_S / 2
                self._drain_results()
                now = time.monotonic()
                for dev in self._devices.values():
                    self._schedule(dev, now)
                self._run_timers(now)
                self._expire_controls(now)
                self._buf.flush()
                if self._channel.closed:
                    break
                msg = self._channel.recv(0.005 if self._buf.waiting or not self.results.empty() else 0.02)
                if msg is None:
                    continue
                if isinstance(msg, Shutdown) or self._channel.closed:
                    break
                self._requests.handle(msg)
        finally:
            for dev in self._devices.values():
                dev.generation += 1  # nothing queued runs any more
                for w in dev.workers:
                    w.stop_flag.set()
            for dev in self._devices.values():
                for w in dev.workers:
                    w.join(timeout=max(2.0, dev.cfg.modbus.request_timeout_s + dev.cfg.connect_timeout_s))
            self._buf.flush(force=True)

    def _on_interrogation(self, msg: InterrogationRequest) -> None:
        for dev in select_rtus(self._devices, msg.rtu, self._buf.count):
            dev.full_wanted = {g.kind for g in dev.plan.groups}
            for g in dev.plan.groups:
                dev.due[g.kind] = 0.0  # now, or as soon as the running cycle is back

    def _on_clock_sync(self, msg: ClockSyncRequest) -> None:
        self._buf.count("clock_sync_unsupported")  # Modbus has no time synchronisation

    # ----------------------------------------------------------------------------------------------- scanning
    def _enqueue(self, dev: _Device, job: _Job, priority: int) -> None:
        dev.jobs.put((priority, next(_seq), job))

    def _schedule(self, dev: _Device, now: float) -> None:
        if not dev.up and not dev.connecting:
            if now < dev.next_attempt:
                return
            # (Re)connect: a fresh generation, every group due now, every value reported by the first scan.
            dev.generation += 1
            dev.connecting = True
            dev.last.clear()
            dev.scanned.clear()
            dev.outstanding.clear()
            dev.full_wanted = {g.kind for g in dev.plan.groups}
            dev.due = {g.kind: now for g in dev.plan.groups}
            if not dev.plan.groups:  # nothing to read: a write-only device is probed with nothing; up when asked
                dev.connecting = False
                self._link_up(dev)
                return
        if dev.up and now >= dev.next_full:
            dev.full_wanted = {g.kind for g in dev.plan.groups}
            dev.next_full = now + dev.cfg.gi_period_s
            for g in dev.plan.groups:
                dev.due[g.kind] = min(dev.due[g.kind], now)
        for g in dev.plan.groups:
            if dev.outstanding.get(g.kind) or now < dev.due[g.kind]:
                continue
            if dev.connecting and g.kind in dev.scanned:
                continue
            full = g.kind in dev.full_wanted
            dev.full_wanted.discard(g.kind)
            period = g.period_s
            nxt = dev.due[g.kind] + period if dev.due[g.kind] > 0 else now + period
            dev.due[g.kind] = nxt if nxt > now else now + period  # a late cycle does not make a burst
            dev.outstanding[g.kind] = len(g.requests)
            dev.cycle_failed[g.kind] = False
            for r in g.requests:
                self._enqueue(dev, _Job(dev.generation, "read", read=r, group=g.kind, full=full), 1)
            self._buf.count("scans_started")

    def _drain_results(self) -> None:
        while True:
            try:
                res = self.results.get_nowait()
            except queue.Empty:
                return
            dev = self._devices[res.device]
            if res.job.generation != dev.generation:
                self._buf.count("stale_results")
                continue
            try:
                self._on_result(dev, res)
            except Exception:
                log.exception("Modbus adapter %s: failed to process a result of %s", self._adapter, res.device)
                self._buf.count("handler_errors")

    def _on_result(self, dev: _Device, res: _Result) -> None:
        job = res.job
        if res.outcome is Outcome.LINK:
            self._link_lost(dev, res.detail)
            return
        if dev.connecting:
            self._link_up(dev)
        if job.kind != "read":
            self._command_result(dev, res)
            return
        req = job.read
        assert req is not None and job.group is not None
        if res.outcome is Outcome.OK:
            assert res.values is not None
            self._report(dev, decode_read(req, dev.cfg.modbus.word_order, res.values), res.arrived_ms,
                         Cause.INTERROGATED if job.full else Cause.PERIODIC, job.full)
            self._buf.count("reads_ok")
            if dev.failing.pop((req.table, req.start), None) is not None:
                log.warning("Modbus %s %s: read %s answers again", dev.cfg.name, dev.address, req.describe())
        else:
            key = "malformed_responses" if res.outcome is Outcome.MALFORMED else f"exception_{res.exception_code}"
            self._buf.count(key)
            self._buf.count("reads_failed")
            if dev.failing.get((req.table, req.start)) != key:  # a device failing every poll logs once
                dev.failing[(req.table, req.start)] = key
                log.warning("Modbus %s %s: read %s failed: %s; its points are INVALID (logged once; counted as "
                            "%s)", dev.cfg.name, dev.address, req.describe(), res.detail, key)
            self._report(dev, invalid_rows(req), res.arrived_ms or now_ms(), Cause.PERIODIC, False)
            dev.cycle_failed[job.group] = True
        left = dev.outstanding.get(job.group, 0) - 1
        dev.outstanding[job.group] = max(0, left)
        if left <= 0:
            self._cycle_done(dev, job.group)

    def _cycle_done(self, dev: _Device, group: ScanGroupKind) -> None:
        self._buf.count(f"scans_{group.value}")
        dev.scanned.add(group)
        if dev.scanned >= {g.kind for g in dev.plan.groups}:
            dev.scanned.clear()
            self._buf.event(InterrogationDone(self._adapter, dev.cfg.name, now_ms()))
            self._buf.count("interrogations_done")
            dev.backoff_s = dev.cfg.reconnect_backoff_s  # a complete scan proves the link healthy

    def _report(self, dev: _Device, rows: list[Decoded], time_ms: int, cause: Cause, full: bool) -> None:
        for d in rows:
            q = int(d.quality)
            prev = dev.last.get(d.point)
            if not full and prev is not None and prev[1] == q and (
                    prev[0] == d.value or (math.isnan(prev[0]) and math.isnan(d.value))):
                continue
            dev.last[d.point] = (d.value, q)
            self._buf.add(d.point, d.value, q, time_ms, cause)

    # ----------------------------------------------------------------------------------------------- link
    def _link_up(self, dev: _Device) -> None:
        dev.up, dev.connecting = True, False
        dev.next_full = time.monotonic() + dev.cfg.gi_period_s
        self._buf.count("link_up")
        self._buf.event(LinkEvent(self._adapter, dev.cfg.name, True, address=dev.address, time_ms=now_ms()))

    def _link_lost(self, dev: _Device, reason: str) -> None:
        was_up = dev.up
        address = dev.address
        dev.generation += 1  # workers drop their connections and every queued job
        while True:
            try:
                dev.jobs.get_nowait()
            except queue.Empty:
                break
        dev.up = dev.connecting = False
        dev.selected.clear()
        dev.outstanding.clear()
        now = time.monotonic()
        dev.next_attempt = now + dev.backoff_s
        dev.backoff_s = min(dev.backoff_s * 2, dev.cfg.reconnect_backoff_max_s)
        dev.active = (dev.active + 1) % len(dev.cfg.addresses)  # a redundant address gets the next attempt
        for rid, pend in list(self._pending.items()):
            if pend.point.source.rtu == dev.cfg.name:
                del self._pending[rid]
                self._answer(pend.request, ControlStatus.LINK_DOWN, f"link to {dev.cfg.name} lost: {reason}",
                             pend.started)
        if was_up:
            self._buf.count("link_down")
            log.warning("Modbus %s %s: link down: %s", dev.cfg.name, address, reason)
            self._buf.event(LinkEvent(self._adapter, dev.cfg.name, False, address=address, reason=reason,
                                      time_ms=now_ms()))
        else:
            self._buf.count("connect_failures")

    # ----------------------------------------------------------------------------------------------- commands
    def _answer(self, req: ControlRequest, status: ControlStatus, detail: str, started: float) -> None:
        self._buf.count(f"control_{status.value}")
        self._buf.event(ControlResult(req.request_id, status, detail, (time.monotonic() - started) * 1000.0))

    def _on_control(self, req: ControlRequest) -> None:
        started = time.monotonic()
        dev = self._devices.get(req.rtu)
        key = (control_register(req.type).table, req.address)
        point = dev.controls.get(key) if dev is not None else None
        if dev is None or point is None or req.common_address != dev.cfg.common_address:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS,
                         f"no {key[0].value} command at {req.address} under unit {req.common_address} on RTU "
                         f"{req.rtu!r}", started)
            return
        control = point.control
        assert control is not None
        if control.type is not req.type:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"{key[0].value} {req.address} on {req.rtu} is a "
                         f"{control.type.value} command, not {req.type.value}", started)
            return
        if req.request_id in self._pending:
            self._answer(req, ControlStatus.ERROR, f"request id {req.request_id} is already in progress", started)
            return
        if not dev.up:
            self._answer(req, ControlStatus.LINK_DOWN, f"RTU {req.rtu} is not connected", started)
            return
        verdict = dev.selected.decide(req, key, point, started)
        if verdict is not None:
            self._answer(req, *verdict, started)
            return
        try:
            words = command_words(point, control.type, req.value, dev.cfg.modbus.word_order)
        except ValueError as exc:
            self._answer(req, ControlStatus.ERROR, str(exc), started)
            return
        self._pending[req.request_id] = _Pending(req, point, started, started + req.timeout_s,
                                                 _readback_request(point))
        self._enqueue(dev, _Job(dev.generation, "write", request_id=req.request_id, table=key[0],
                                address=req.address, words=words), 0)

    def _command_result(self, dev: _Device, res: _Result) -> None:
        pend = self._pending.get(res.job.request_id)
        if pend is None:
            self._buf.count("late_control_results")  # answered already (time-out, link lost)
            return
        req = pend.request
        if res.outcome is Outcome.EXCEPTION:
            del self._pending[req.request_id]
            self._answer(req, ControlStatus.REFUSED_BY_FIELD,
                         f"{dev.cfg.name} answered exception {_exception_name(res.exception_code)}", pend.started)
            return
        if res.outcome is Outcome.MALFORMED:
            del self._pending[req.request_id]
            self._answer(req, ControlStatus.ERROR, f"malformed answer from {dev.cfg.name}: {res.detail}",
                         pend.started)
            return
        if res.job.kind == "write":
            pend.written = True
            if pend.readback is None:
                del self._pending[req.request_id]
                self._answer(req, ControlStatus.SUCCESS, "write confirmed", pend.started)
                return
            self._request_readback(dev, pend)
            return
        # a read-back
        assert pend.readback is not None and res.values is not None
        got = decode_slot(pend.readback.points[0], dev.cfg.modbus.word_order,
                          None if pend.readback.is_bits else [int(v) for v in res.values],
                          bool(res.values[0]) if pend.readback.is_bits else None)
        if readback_matches(pend.point, req.type, req.value, got):
            del self._pending[req.request_id]
            self._report(dev, [got], res.arrived_ms, Cause.RETURN_REMOTE, True)
            self._answer(req, ControlStatus.SUCCESS, "written and verified by read-back", pend.started)
            return
        pend.last_seen = f"{got.value:g}" + (" INVALID" if got.quality else "")
        heapq.heappush(self._timers, (time.monotonic() + READBACK_PERIOD_S, next(_seq), req.request_id))

    def _request_readback(self, dev: _Device, pend: _Pending) -> None:
        assert pend.readback is not None
        self._enqueue(dev, _Job(dev.generation, "readback", read=pend.readback, request_id=pend.request.request_id),
                      0)

    def _run_timers(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, rid = heapq.heappop(self._timers)
            pend = self._pending.get(rid)
            if pend is None:
                continue
            dev = self._devices[pend.request.rtu]
            if dev.up:
                self._request_readback(dev, pend)

    def _expire_controls(self, now: float) -> None:
        for rid, pend in list(self._pending.items()):
            if now >= pend.deadline:
                del self._pending[rid]
                if pend.written:
                    detail = (f"written, but the read-back of {pend.point.name} still showed {pend.last_seen or '?'}"
                              f" after {pend.request.timeout_s:.1f} s")
                else:
                    detail = f"no answer to the write from {pend.request.rtu} within {pend.request.timeout_s:.1f} s"
                self._answer(pend.request, ControlStatus.TIMEOUT, detail, pend.started)


def run_adapter(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    """Adapter process entry point (``frontend_protocols.channel.AdapterMain``): returns on Shutdown or pipe close."""
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every refused connect; we count them
    ModbusMaster(channel, config, adapter, rtus).run()


__all__ = ["ModbusAdapterError", "ModbusMaster", "run_adapter"]
