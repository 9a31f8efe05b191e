"""IEC 61850 MMS client adapter: every configured IEC 61850 IED, in its own supervised process.

Per IED, from its SCL (``models.scl.scl_for_rtu``: the file, or the one generated from the points):
- one *command* association (``C``) for every blocking call: controls, interrogation reads, keep-alive reads;
- one *report* association per report control block (buffered when ``iec61850.buffered_reports``), on which the
  only blocking calls through the binding are the RCB read and the enabling write made before any report can arrive
  on it.

Interrogation is the IEC 61850 one: the RCBs are enabled with GI, and a periodic or requested GI writes the RCB's
GI attribute on its own association through ``ctypes`` (which releases the GIL while waiting, so a report arriving
meanwhile is handled). ``InterrogationDone`` follows once every RCB has delivered its GI report; only points in no
data set are read one by one. Reading every point instead cost about 20 ms a read once reports flowed: 4.5 s for an
IED of 224 points, longer than the supervisor's heartbeat time-out for ten of them.

Why: a blocking pyiec61850 call holds the GIL while it waits, and a report arriving on the same association makes the
library's receive thread wait for the GIL inside the report handler: a deadlock. With reports on their own
associations, a blocking call only ever waits for a thread that needs no GIL. The report handler itself only copies
the values into the ``UpdateBuffer`` and returns. Handler, subscriber and connection objects are never destroyed
(destroying them crashed the binding): they are kept for the life of the process, and the process leaves with
``os._exit`` after flushing its channel. An association given up is aborted without waiting
(``IedConnection_abortAsync``), never closed or released (those wait for the peer). The library
prints a debug line per control on stdout: fd 1 is pointed at /dev/null at start. The heartbeat comes from the main
loop, so a hang of any blocking call silences it and the supervisor restarts the process.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import pyiec61850.pyiec61850 as iec

from frontend_protocols.batching import UpdateBuffer
from frontend_protocols.channel import HEARTBEAT_PERIOD_S, AdapterChannel, Heartbeat, Shutdown
from frontend_protocols.dispatch import RequestRouter
from frontend_protocols.errors import FrontendError
from frontend_protocols.held_selections import mode_error
from models.commands import (
    ClockSyncRequest,
    ControlAction,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import Protocol, RtuConfig, StationConfig
from models.points import ControlMode, ControlType, DoubleState, PointDef, PointKind, Quality
from models.protocols.iec61850 import VALUE_ATTRIBUTE, VALUE_FC, quality_from_61850
from models.scl import Fcda, SclDocument, SclError, scl_for_rtu
from models.timebase import now_ms
from models.updates import Cause, InterrogationDone, LinkEvent

log = logging.getLogger(__name__)

_KEEP: list[Any] = []  # library objects that must never be destroyed (see the module docstring)
_HANDLERS: dict[str, Any] = {}  # RCB reference -> its one report handler for the life of the process
MAX_REQUEST_TIMEOUT_S = 3.0  # a blocking call holds the whole process: keep it well under the heartbeat time-out
GI_TIMEOUT_S = 5.0  # GI reports not in by then: their points are read one by one
KEEPALIVE_S = 2.0  # command association read this often: a silent link is found within KEEPALIVE_S + time-out
_FC = {"ST": iec.IEC61850_FC_ST, "MX": iec.IEC61850_FC_MX}
_ADD_CAUSE = {getattr(iec, k): k[len("ADD_CAUSE_"):].replace("_", "-").lower()
              for k in dir(iec) if k.startswith("ADD_CAUSE_")}
_IED_ERROR = {getattr(iec, k): k[len("IED_ERROR_"):] for k in dir(iec) if k.startswith("IED_ERROR_")}
_LOST = {iec.IED_ERROR_NOT_CONNECTED, iec.IED_ERROR_CONNECTION_LOST, iec.IED_ERROR_TIMEOUT}
_REASON_GI = 16
_REASON_INTEGRITY = 8


class Iec61850AdapterError(FrontendError):
    """The IEC 61850 adapter cannot be built from the configuration it was given."""


@dataclass(frozen=True, slots=True)
class PointMap:
    """How one point is found in an MMS structure read with its FC (positions from the SCL DOType)."""

    point: int
    kind: PointKind
    value_pos: int
    q_pos: int
    t_pos: int
    scale: float
    offset: float

    def row(self, struct: Any) -> tuple[float, int, int]:
        """(engineering value, Quality bits, source time ms) from an FC-filtered data-object structure."""
        value = _number(iec.MmsValue_getElement(struct, self.value_pos), self.kind)
        q = quality_from_61850(iec.Quality_fromMmsValue(iec.MmsValue_getElement(struct, self.q_pos)))
        t = iec.MmsValue_getElement(struct, self.t_pos)
        t_ms = int(iec.MmsValue_getUtcTimeInMs(t))
        q |= quality_from_61850(0, int(iec.MmsValue_getUtcTimeQuality(t)))
        if not self.kind.is_status:
            value = value * self.scale + self.offset
        return value, q, t_ms if t_ms > 0 else -1


def _number(v: Any, kind: PointKind) -> float:
    typ = iec.MmsValue_getType(v)
    while typ == iec.MMS_STRUCTURE:  # mag.f, cVal.mag.f, mxVal.f
        v = iec.MmsValue_getElement(v, 0)
        typ = iec.MmsValue_getType(v)
    if typ == iec.MMS_BOOLEAN:
        return 1.0 if iec.MmsValue_getBoolean(v) else 0.0
    if typ == iec.MMS_BIT_STRING:  # Dbpos: first bit ON, second bit OFF
        return float((int(iec.MmsValue_getBitStringBit(v, 0)) << 1) | int(iec.MmsValue_getBitStringBit(v, 1)))
    if typ == iec.MMS_FLOAT:
        return float(iec.MmsValue_toDouble(v))
    if typ == iec.MMS_INTEGER:
        return float(iec.MmsValue_toInt64(v))
    if typ == iec.MMS_UNSIGNED:
        return float(iec.MmsValue_toUint32(v))
    raise ValueError(f"MMS type {iec.MmsValue_getTypeString(v)} is not a {kind.value} value")


def point_map(doc: SclDocument, rtu: RtuConfig, p: PointDef) -> PointMap:
    ied = doc.ied(rtu.ied_name)
    info = doc.resolve(ied, p.source.reference)
    cdc = p.source.type_id
    attrs = [a.name for a in info.do_type.attributes(VALUE_FC[cdc])]
    try:
        pos = attrs.index(VALUE_ATTRIBUTE[cdc]), attrs.index("q"), attrs.index("t")
    except ValueError:
        raise SclError(f"point {p.name!r}: {p.source.reference} ({info.do_type.id}) lacks "
                       f"{VALUE_ATTRIBUTE[cdc]}/q/t with FC {VALUE_FC[cdc]}") from None
    scaled = not p.kind.is_status
    return PointMap(p.id, p.kind, *pos, p.scale if scaled else 1.0, p.offset if scaled else 0.0)


@dataclass(slots=True)
class _Rcb:
    reference: str  # IEDLD/LLN0.BR.name
    rpt_id: str
    buffered: bool
    members: list[list[PointMap]]  # per data-set index: the points carried there
    entry_id: bytes = b""  # last buffered entry received: resumed from after a reconnect
    conn: Any = None
    values: Any = None  # its ClientReportControlBlock, as enabled
    gi_reports: int = 0  # reports carrying GI members received (written by the report handler)
    gi_mark: int = 0  # gi_reports when the current GI was asked for


@dataclass(slots=True)
class _Ied:
    cfg: RtuConfig
    points: dict[int, PointDef]
    maps: dict[int, PointMap]
    rcbs: list[_Rcb]
    reads: list[tuple[str, int, PointMap]]  # (object reference, FC, map): read one by one (keep-alive, fallback)
    unreported: list[tuple[str, int, PointMap]]  # points in no data set: read at every interrogation
    backoff_s: float
    up: bool = False
    conn: Any = None  # command association
    controls: dict[str, Any] = field(default_factory=dict)  # control reference -> ControlObjectClient
    next_try: float = 0.0
    next_gi: float = math.inf
    next_keepalive: float = math.inf
    pending: list[Any] = field(default_factory=list)  # associations of the connect attempt under way
    gi_deadline: float = 0.0  # a GI is under way until its reports are in (or this time passes)


class Iec61850Master:
    def __init__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        self._channel = channel
        self._adapter = adapter
        self._buf = UpdateBuffer(channel, adapter)
        self._ieds: dict[str, _Ied] = {}
        self._requests = RequestRouter(
            f"IEC 61850 adapter {adapter}", log, control=self._on_control, interrogation=self._on_interrogation,
            clock_sync=self._on_clock_sync, count=self._buf.count, answer=self._answer)
        for name in rtus:
            cfg = config.rtu(name)
            if cfg.protocol is not Protocol.IEC61850:
                raise Iec61850AdapterError(f"RTU {name!r} speaks {cfg.protocol.value}, not iec61850")
            try:
                self._ieds[name] = self._build(config, cfg)
            except SclError as exc:
                raise Iec61850AdapterError(f"RTU {name!r}: {exc}") from None

    def _build(self, config: StationConfig, cfg: RtuConfig) -> _Ied:
        doc = scl_for_rtu(config, cfg)
        ied = doc.ied(cfg.ied_name)
        points = config.points_of_rtu(cfg.name)
        maps = {p.id: point_map(doc, cfg, p) for p in points if p.kind is not PointKind.COMMAND}
        by_ref: dict[tuple[str, str], list[PointMap]] = {}
        for p in points:
            if p.id in maps:
                by_ref.setdefault((p.source.reference, VALUE_FC[p.source.type_id]), []).append(maps[p.id])
        rcbs = []
        want_buffered = cfg.iec61850.buffered_reports
        for ld, ln, ds in doc.datasets(ied):
            rcs = [rc for rc in ln.report_controls if rc.dataset == ds.name]
            rcs.sort(key=lambda rc: rc.buffered != want_buffered)  # the preferred kind first
            if not rcs:
                continue
            rc = rcs[0]
            members = [by_ref.get((_fcda_ref(f), f.fc), []) for f in ds.fcdas]
            kind = "BR" if rc.buffered else "RP"
            rcbs.append(_Rcb(f"{cfg.ied_name}{ld.inst}/{ln.name}.{kind}.{rc.name}", rc.rpt_id or "", rc.buffered,
                             members))
        reads = [(f"{cfg.ied_name}{p.source.reference}", _FC[VALUE_FC[p.source.type_id]], maps[p.id])
                 for p in points if p.id in maps]
        reported = {pm.point for rcb in rcbs for member in rcb.members for pm in member}
        unreported = [r for r in reads if r[2].point not in reported]
        return _Ied(cfg, {p.id: p for p in points}, maps, rcbs, reads, unreported, cfg.reconnect_backoff_s)

    # ----------------------------------------------------------------------------------------------- reports
    def _handler(self, rcb: _Rcb) -> Any:
        """The one report handler of an RCB reference: copies values into the buffer, nothing else."""
        if rcb.reference in _HANDLERS:
            _HANDLERS[rcb.reference].rcb = rcb
            return _HANDLERS[rcb.reference]
        buf = self._buf

        class Handler(iec.RCBHandler):  # type: ignore[misc]
            def trigger(self) -> None:
                try:
                    report = self._client_report
                    target: _Rcb = self.rcb
                    values = iec.ClientReport_getDataSetValues(report)
                    n = min(iec.MmsValue_getArraySize(values), len(target.members))
                    gi = False
                    for i in range(n):
                        reason = iec.ClientReport_getReasonForInclusion(report, i)
                        gi = gi or bool(reason & _REASON_GI)
                        if not reason or not target.members[i]:
                            continue
                        cause = (Cause.INTERROGATED if reason & _REASON_GI else
                                 Cause.PERIODIC if reason & _REASON_INTEGRITY else Cause.SPONTANEOUS)
                        el = iec.MmsValue_getElement(values, i)
                        for pm in target.members[i]:
                            try:
                                value, q, t_ms = pm.row(el)
                            except Exception:
                                buf.add(pm.point, math.nan, Quality.INVALID, -1, cause)
                                buf.count("conversion_errors")
                                continue
                            buf.add(pm.point, value, q, t_ms, cause)
                    if target.buffered:
                        eid = iec.ClientReport_getEntryId(report)
                        if eid is not None:
                            size = iec.MmsValue_getOctetStringSize(eid)
                            target.entry_id = bytes(iec.MmsValue_getOctetStringOctet(eid, k) for k in range(size))
                    if iec.ClientReport_hasBufOvfl(report) and iec.ClientReport_getBufOvfl(report):
                        buf.count("buffer_overflows")
                    if gi:
                        target.gi_reports += 1  # after the values went to the buffer: InterrogationDone follows them
                    buf.count("reports")
                except Exception:
                    buf.count("report_handler_errors")

        h = Handler()
        h.rcb = rcb
        _HANDLERS[rcb.reference] = h
        _KEEP.append(h)
        return h

    # ----------------------------------------------------------------------------------------------- links
    def _new_connection(self, ied: _Ied, timeout_s: float) -> tuple[Any, int]:
        conn = iec.IedConnection_create()
        _KEEP.append(conn)
        ied.pending.append(conn)  # aborted by _retry unless the attempt succeeds
        iec.IedConnection_setConnectTimeout(conn, int(ied.cfg.connect_timeout_s * 1000))
        iec.IedConnection_setRequestTimeout(conn, int(timeout_s * 1000))
        host, _, port = ied.cfg.addresses[0].rpartition(":")
        _, err = iec.IedConnection_connect(conn, host, int(port))
        return conn, err

    def _connect(self, ied: _Ied, now: float) -> None:
        timeout_s = min(MAX_REQUEST_TIMEOUT_S, max(ied.cfg.connect_timeout_s, 0.5))
        conn, err = self._new_connection(ied, timeout_s)
        if err != iec.IED_ERROR_OK:
            self._retry(ied, now, f"connect to {ied.cfg.addresses[0]} failed: {_IED_ERROR.get(err, err)}")
            return
        ied.conn = conn
        ied.controls = {}
        for rcb in ied.rcbs:
            rcb.gi_mark = rcb.gi_reports  # enabling asks for a GI: its report completes the first interrogation
            reason = self._enable_reports(ied, rcb, timeout_s)
            if reason:
                self._retry(ied, now, reason)
                return
        ied.up = True
        ied.pending = []
        ied.backoff_s = ied.cfg.reconnect_backoff_s
        self._buf.count("link_up")
        self._buf.event(LinkEvent(self._adapter, ied.cfg.name, True, address=ied.cfg.addresses[0], time_ms=now_ms()))
        self._read_unreported(ied)
        ied.gi_deadline = time.monotonic() + GI_TIMEOUT_S
        ied.next_gi = time.monotonic() + ied.cfg.gi_period_s
        ied.next_keepalive = time.monotonic() + KEEPALIVE_S

    def _enable_reports(self, ied: _Ied, rcb: _Rcb, timeout_s: float) -> str:
        """Own association per RCB: read it, install the handler, enable with GI (and the entry ID to resume)."""
        conn, err = self._new_connection(ied, timeout_s)
        if err != iec.IED_ERROR_OK:
            return f"report association for {rcb.reference}: {_IED_ERROR.get(err, err)}"
        values = iec.ClientReportControlBlock_create(rcb.reference)
        _KEEP.append(values)
        _, err = iec.IedConnection_getRCBValues(conn, rcb.reference, values)
        if err != iec.IED_ERROR_OK:
            return f"reading {rcb.reference}: {_IED_ERROR.get(err, err)}"
        sub = iec.RCBSubscriber()
        _KEEP.append(sub)
        sub.setIedConnection(conn)
        sub.setRcbReference(rcb.reference)
        sub.setRcbRptId(rcb.rpt_id or iec.ClientReportControlBlock_getRptId(values) or "")
        sub.setEventHandler(self._handler(rcb))
        sub.subscribe()  # "already registered" after a reconnect: the registered one holds the same handler
        mask = iec.RCB_ELEMENT_RPT_ENA | iec.RCB_ELEMENT_GI
        if rcb.buffered and rcb.entry_id:
            eid = iec.MmsValue_newOctetString(len(rcb.entry_id), len(rcb.entry_id))
            _KEEP.append(eid)
            for k, b in enumerate(rcb.entry_id):
                iec.MmsValue_setOctetStringOctet(eid, k, b)
            iec.ClientReportControlBlock_setEntryId(values, eid)
            mask |= iec.RCB_ELEMENT_ENTRY_ID
        iec.ClientReportControlBlock_setRptEna(values, True)
        iec.ClientReportControlBlock_setGI(values, True)
        _, err = iec.IedConnection_setRCBValues(conn, values, mask, True)
        if err != iec.IED_ERROR_OK and mask & iec.RCB_ELEMENT_ENTRY_ID:
            self._buf.count("entry_id_resume_refused")  # the entry left the IED's buffer: the GI covers the state
            rcb.entry_id = b""
            _, err = iec.IedConnection_setRCBValues(conn, values, iec.RCB_ELEMENT_RPT_ENA | iec.RCB_ELEMENT_GI, True)
        if err != iec.IED_ERROR_OK:
            return f"enabling {rcb.reference}: {_IED_ERROR.get(err, err)}"
        rcb.conn, rcb.values = conn, values
        return ""

    def _retry(self, ied: _Ied, now: float, reason: str) -> None:
        log.warning("IEC 61850 IED %s: %s", ied.cfg.name, reason)
        self._buf.count("connect_failures")
        ied.next_try = now + ied.backoff_s
        ied.backoff_s = min(ied.backoff_s * 2, ied.cfg.reconnect_backoff_max_s)
        given_up = {id(c): c for c in [ied.conn, *(r.conn for r in ied.rcbs), *ied.pending] if c is not None}
        for conn in given_up.values():
            _abort(conn)
        ied.conn = None
        ied.pending = []
        for rcb in ied.rcbs:
            rcb.conn = None

    def _link_lost(self, ied: _Ied, now: float, reason: str) -> None:
        ied.up = False
        ied.next_gi = ied.next_keepalive = math.inf
        self._buf.count("link_down")
        self._buf.event(LinkEvent(self._adapter, ied.cfg.name, False, address=ied.cfg.addresses[0], reason=reason,
                                  time_ms=now_ms()))
        self._retry(ied, now, reason)

    def _supervise(self, ied: _Ied, now: float) -> None:
        if not ied.up:
            if now >= ied.next_try:
                self._connect(ied, now)
            return
        for c in [ied.conn] + [r.conn for r in ied.rcbs]:
            if c is None or iec.IedConnection_getState(c) != iec.IED_STATE_CONNECTED:
                self._link_lost(ied, now, f"association with {ied.cfg.addresses[0]} closed")
                return
        if ied.gi_deadline:
            self._gi_progress(ied, now)
        elif now >= ied.next_gi:
            self._interrogate(ied)
        elif now >= ied.next_keepalive and ied.reads:
            ref, fc, _pm = ied.reads[0]
            _, err = iec.IedConnection_readObject(ied.conn, ref, fc)
            if err in _LOST:
                self._link_lost(ied, now, f"keep-alive read: {_IED_ERROR.get(err, err)}")
                return
            ied.next_keepalive = now + KEEPALIVE_S

    def _interrogate(self, ied: _Ied) -> None:
        """Ask every RCB for a GI report (see the module doc); ``_gi_progress`` confirms it when the reports are in."""
        if not ied.up:
            self._buf.count("interrogations_skipped_link_down")
            return
        if ied.gi_deadline:
            return  # one under way already
        now = time.monotonic()
        ied.next_gi = now + ied.cfg.gi_period_s
        for rcb in ied.rcbs:
            rcb.gi_mark = rcb.gi_reports
            iec.ClientReportControlBlock_setGI(rcb.values, True)
            err = _set_rcb_values(rcb.conn, rcb.values, iec.RCB_ELEMENT_GI)
            if err != iec.IED_ERROR_OK:
                if err in _LOST:
                    self._link_lost(ied, now, f"GI of {rcb.reference}: {_IED_ERROR.get(err, err)}")
                    return
                self._buf.count("gi_refused")
                rcb.gi_mark = -1  # read its points instead when the others are in
        self._read_unreported(ied)
        ied.gi_deadline = now + GI_TIMEOUT_S

    def _gi_progress(self, ied: _Ied, now: float) -> None:
        waiting = [r for r in ied.rcbs if r.gi_mark >= 0 and r.gi_reports <= r.gi_mark]
        if waiting and now < ied.gi_deadline:
            return
        ied.gi_deadline = 0.0
        missed = {pm.point for r in ied.rcbs if r.gi_mark < 0 or r in waiting for m in r.members for pm in m}
        if missed:  # a GI report did not come: read those points one by one
            self._buf.count("gi_fallback_reads")
            if not self._read(ied, [x for x in ied.reads if x[2].point in missed]):
                return
        self._buf.count("gi_done")
        self._buf.event(InterrogationDone(self._adapter, ied.cfg.name, now_ms()))

    def _read_unreported(self, ied: _Ied) -> None:
        self._read(ied, ied.unreported)

    def _read(self, ied: _Ied, reads: list[tuple[str, int, PointMap]]) -> bool:
        """Read points on the command association (no reports arrive there); False when the link was lost."""
        for ref, fc, pm in reads:
            value, err = iec.IedConnection_readObject(ied.conn, ref, fc)
            if err != iec.IED_ERROR_OK:
                if err in _LOST:
                    self._link_lost(ied, time.monotonic(), f"interrogation read {ref}: {_IED_ERROR.get(err, err)}")
                    return False
                self._buf.add(pm.point, math.nan, Quality.INVALID, -1, Cause.INTERROGATED)
                self._buf.count("read_errors")
                continue
            try:
                v, q, t_ms = pm.row(value)
                self._buf.add(pm.point, v, q, t_ms, Cause.INTERROGATED)
            except Exception:
                self._buf.add(pm.point, math.nan, Quality.INVALID, -1, Cause.INTERROGATED)
                self._buf.count("conversion_errors")
            finally:
                iec.MmsValue_delete(value)
        return True

    def _answer(self, req: ControlRequest, status: ControlStatus, detail: str, started: float) -> None:
        self._buf.count(f"control_{status.value}")
        self._buf.event(ControlResult(req.request_id, status, detail, (time.monotonic() - started) * 1000.0))

    def _on_control(self, req: ControlRequest) -> None:
        started = time.monotonic()
        ied = self._ieds.get(req.rtu)
        point = ied.points.get(req.point) if ied is not None else None
        if ied is None or point is None or point.control is None:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"no command object for point {req.point} on RTU "
                                                             f"{req.rtu!r}", started)
            return
        control = point.control
        if control.type is not req.type:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"{point.name} is a {control.type.value} command, not "
                                                             f"{req.type.value}", started)
            return
        if not ied.up:
            self._answer(req, ControlStatus.LINK_DOWN, f"IED {req.rtu} is not connected", started)
            return
        error = mode_error(req.action, control.mode.selects, point.name)
        if error is not None:
            self._answer(req, ControlStatus.ERROR, error, started)
            return
        co = ied.controls.get(control.reference)
        if co is None:
            co = iec.ControlObjectClient_create(f"{ied.cfg.ied_name}{control.reference}", ied.conn)
            if co is None:
                self._answer(req, ControlStatus.UNKNOWN_ADDRESS, f"{control.reference} is not a controllable object "
                                                                 f"on IED {ied.cfg.ied_name}", started)
                return
            _KEEP.append(co)
            iec.ControlObjectClient_setOrigin(co, "dscada", iec.CONTROL_ORCAT_REMOTE_CONTROL)
            ied.controls[control.reference] = co
        try:
            ctl_val = _ctl_value(point, req.value)
        except ValueError as exc:
            self._answer(req, ControlStatus.ERROR, str(exc), started)
            return
        _KEEP.append(ctl_val)
        if req.action is ControlAction.SELECT:
            enhanced = control.mode is ControlMode.SBO_ENHANCED
            ok = (iec.ControlObjectClient_selectWithValue(co, ctl_val) if enhanced
                  else iec.ControlObjectClient_select(co))
            what = "selected"
        elif req.action is ControlAction.CANCEL:
            ok, what = iec.ControlObjectClient_cancel(co), "deselected"
        else:
            ok, what = iec.ControlObjectClient_operate(co, ctl_val, 0), "operated"
        if ok:
            self._answer(req, ControlStatus.SUCCESS, what, started)
            return
        err = iec.ControlObjectClient_getLastError(co)
        lae = iec.ControlObjectClient_getLastApplError(co)
        cause = _ADD_CAUSE.get(lae.addCause, str(lae.addCause))
        detail = f"{point.name}: {req.action.value} refused: {_IED_ERROR.get(err, err)}, AddCause {cause}"
        if err in _LOST:
            status = ControlStatus.TIMEOUT if err == iec.IED_ERROR_TIMEOUT else ControlStatus.LINK_DOWN
        else:
            status = ControlStatus.REFUSED_BY_FIELD
        self._answer(req, status, detail, started)

    # ----------------------------------------------------------------------------------------------- main loop
    def run(self) -> None:
        next_beat = 0.0
        while True:
            now = time.monotonic()
            if now >= next_beat:  # from the main loop only: a hung blocking call silences it
                self._channel.send(Heartbeat(self._adapter, now_ms(), self._buf.counters()))
                next_beat = now + HEARTBEAT_PERIOD_S / 2
            for ied in self._ieds.values():
                if time.monotonic() >= next_beat:  # connecting many IEDs in one pass must not look like a hang
                    self._channel.send(Heartbeat(self._adapter, now_ms(), self._buf.counters()))
                    next_beat = time.monotonic() + HEARTBEAT_PERIOD_S / 2
                try:
                    self._supervise(ied, now)
                except Exception:
                    log.exception("IEC 61850 IED %s: supervision failed", ied.cfg.name)
                    self._buf.count("supervision_errors")
                    if ied.up:
                        self._link_lost(ied, now, "adapter error")
                    else:
                        self._retry(ied, now, "adapter error")
            self._buf.flush()
            msg = self._channel.recv(0.005 if self._buf.waiting else 0.02)
            if msg is None:
                continue
            if isinstance(msg, Shutdown) or self._channel.closed:
                break
            self._requests.handle(msg)
        self._buf.flush(force=True)

    def _on_interrogation(self, msg: InterrogationRequest) -> None:
        for ied in ([self._ieds[msg.rtu]] if msg.rtu in self._ieds else
                    list(self._ieds.values()) if not msg.rtu else []):
            self._interrogate(ied)

    def _on_clock_sync(self, msg: ClockSyncRequest) -> None:
        self._buf.count("clock_sync_not_supported")  # 61850 IEDs synchronise by SNTP, not by MMS


def _native_set_rcb_values() -> Any:
    """libiec61850's IedConnection_setRCBValues through ctypes: it releases the GIL while it waits for the IED's
    answer, so a report arriving on the same association meanwhile is handled instead of deadlocking the call."""
    import ctypes
    import glob

    found = glob.glob(os.path.join(os.path.dirname(iec.__file__), "..", "pyiec61850_ng.libs", "libiec61850*.so*"))
    if not found:
        raise Iec61850AdapterError("libiec61850 shared library of pyiec61850-ng not found next to the binding")
    fn = ctypes.CDLL(found[0]).IedConnection_setRCBValues
    fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_void_p, ctypes.c_uint32, ctypes.c_bool]
    fn.restype = None

    def call(conn: Any, values: Any, mask: int) -> int:
        err = ctypes.c_int(0)
        fn(int(conn), ctypes.byref(err), int(values), mask, True)
        return err.value

    return call


_set_rcb_values = _native_set_rcb_values()


def _abort(conn: Any) -> None:
    """Release an association being given up without waiting: an ABRT is sent and nothing awaited (a blocking close
    or release on an association that reports can deadlock). Without it the IED keeps the association, and with it
    the report control block and one of its few association slots: after a few lost links it refuses us for good."""
    if conn is None:
        return
    try:
        if iec.IedConnection_getState(conn) == iec.IED_STATE_CONNECTED:
            iec.IedConnection_abortAsync(conn)
    except Exception:
        log.exception("IEC 61850: aborting an association failed")


def _fcda_ref(f: Fcda) -> str:
    return f"{f.ld_inst}/{f.ln_name}.{f.do_name}"


def _ctl_value(p: PointDef, value: float) -> Any:
    assert p.control is not None
    ctype = p.control.type
    if ctype is ControlType.DOUBLE:
        if value not in (DoubleState.OFF, DoubleState.ON):
            raise ValueError(f"double command {p.name}: value {value} is not OFF (1) or ON (2)")
        return iec.MmsValue_newBoolean(value == DoubleState.ON)
    if ctype is ControlType.SINGLE:
        if value not in (0, 1):
            raise ValueError(f"single command {p.name}: value {value} is not 0 or 1")
        return iec.MmsValue_newBoolean(bool(value))
    raw = (value - p.offset) / p.scale
    struct = iec.MmsValue_createEmptyStructure(1)
    iec.MmsValue_setElement(struct, 0, iec.MmsValue_newFloat(raw))
    return struct


def run_adapter(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    """Adapter process entry point: runs until Shutdown or pipe close, then leaves with ``os._exit``.

    Library teardown never runs (destroying report handlers crashed the binding): the channel is flushed first."""
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # libiec61850 prints a debug line per control on stdout
    code = 0
    try:
        Iec61850Master(channel, config, adapter, rtus).run()
    except Exception:
        log.exception("IEC 61850 adapter %s failed", adapter)
        code = 1
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["Iec61850AdapterError", "Iec61850Master", "PointMap", "point_map", "run_adapter"]
