"""The TASE.2 client of the control centre: imports the points of one remote control centre (``[[iccp.remotes]]``).

One :class:`Tase2Client` per remote centre runs one worker thread that owns the association:

1. associate with the remote's addresses in order (primary, then backup), our AP title/AE qualifier as calling,
   the remote's as called;
2. read ``TASE2_Version`` and ``Supported_Features`` (VCC) and ``Bilateral_Table_ID`` (ICC domain); a table id other
   than the configured one is :class:`BilateralTableMismatch`: the association is released, no data set is defined,
   no value flows, and the link stays down (retried with the maximum back-off, the reason named in the link event);
3. define the data sets of the imported points in the ICC domain (``<prefix>01``..., at most ``max_data_set_size``
   points each, the four transfer-report header members first when the remote accepts them);
4. per data set: read ``Next_DSTransfer_Set`` (the remote allocates a ``DSTransferSetNN``), write its attributes
   (DataSetName, StartTime 0, Interval, TLE, BufferTime, IntegrityCheck, DSConditionsRequested, BlockData, Critical,
   RBE, AllChangesReported, EventCodeRequested) in one write with component access, then ``Status`` = true;
5. read every data set once (the TASE.2 counterpart of a general interrogation), then report
   :meth:`Tase2ClientSink.on_interrogated`; an ``InterrogationRequest`` repeats it;
6. while associated: information reports -> :class:`ImportMap` -> rows; a keep-alive read of ``Bilateral_Table_ID``
   every ``keepalive_s`` (of the remote's configuration) finds a silent link within ``keepalive_s +
   request_timeout_s``.

On link loss the sink hears ``on_link(False, ...)`` (the RTDB marks the points COMM_LOST) and the worker starts again
at step 1 with exponential back-off (``reconnect_backoff_s`` .. ``reconnect_backoff_max_s``), recreating data sets
and transfer sets. Data sets left from an earlier association (same names) are deleted before being defined.

Reports are accepted in both shapes a TASE.2 server may send: on the data set's name (results in member order, all
members) or on a list of variables (the members carried, e.g. only the changed points of an RBE report, each named).
Cause: a report whose ``DSConditions_Detected`` has IntegrityTimeOut refreshes everything (``Cause.INTERROGATED``;
once every transfer set sent one, the sink hears ``on_interrogated``, so unchanged points are confirmed current),
IntervalTimeOut -> ``PERIODIC``, otherwise ``SPONTANEOUS``. A member whose value is a DataAccessError becomes an
INVALID row. A report without the header members is treated as spontaneous.

Critical transfer sets (``critical = true``) are acknowledged by writing ``Transfer_Report_ACK`` in the ICC domain
with the report's ``Transfer_Set_Name`` (best effort: a refusal is counted, not fatal).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from open61850.data import BoolData, IECData

from iccp.errors import IccpError, MmsError
from iccp.mms.client import AeTitle, MmsAssociation, MmsClientConfig, MmsEndpoint
from iccp.mms.client_codec import InformationReport
from iccp.mms.codec import DataAccessCode, ObjectName, VariableSpec
from iccp.tase2.bilateral import PeerIdentity
from iccp.tase2.mapping import from_tase2
from iccp.tase2.model import (
    DSConditions,
    DSTransferSet,
    PointType,
    Scope,
    Tase2Error,
    Tase2Version,
    TransferReportHeader,
    decode_bilateral_table_id,
    decode_features,
    decode_point,
)
from iccp.tase2.model import (
    ObjectName as Tase2Name,
)
from models.iccp_config import RemoteCentre
from models.points import PointDef, Quality
from models.protocols.iccp import point_type_name
from models.timebase import now_ms
from models.updates import Cause

__all__ = [
    "BilateralTableMismatch",
    "ImportMap",
    "ImportRow",
    "ImportedPoint",
    "Tase2Client",
    "Tase2ClientError",
    "Tase2ClientSink",
    "data_set_names",
]

log = logging.getLogger(__name__)

HEADER_NAMES = TransferReportHeader.NAMES
ACK_NAME = "Transfer_Report_ACK"
DEFAULT_PREFIX = "DSCADA_DS"
_ADVANCE_S = 60.0  # a session that lived this long resets the back-off


class Tase2ClientError(IccpError):
    """The remote centre answered, but not as a TASE.2 server we can import from (names the remote and why)."""


class BilateralTableMismatch(Tase2ClientError):
    """The remote's ``Bilateral_Table_ID`` is not the one our configuration agreed: no data flows."""


@dataclass(frozen=True, slots=True)
class ImportedPoint:
    """An RTDB point fed from a TASE.2 object of the remote's ICC domain."""

    point: PointDef
    name: str  # TASE.2 name (``source.reference``)
    type: PointType


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One value for the RTDB (``models.updates.UPDATE_DTYPE`` columns)."""

    point: int
    value: float
    quality: int
    source_time_ms: int
    cause: Cause


class ImportMap:
    """TASE.2 names of one remote -> RTDB points; turns MMS values into :class:`ImportRow` s. Thread-safe for one
    report at a time per point (the last value of single points is kept for a state without 0/1)."""

    def __init__(self, remote: RemoteCentre, points: Sequence[PointDef]) -> None:
        self.remote = remote
        self.points: tuple[ImportedPoint, ...] = tuple(
            ImportedPoint(p, p.source.reference, PointType(point_type_name(p))) for p in points)
        self._by_name: dict[str, list[ImportedPoint]] = {}
        for ip in self.points:
            self._by_name.setdefault(ip.name, []).append(ip)
        self._last: dict[int, float] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        """Distinct TASE.2 names, in configuration order."""
        return tuple(self._by_name)

    def rows(self, name: str, data: IECData | DataAccessCode, cause: Cause) -> list[ImportRow]:
        """The rows of one received value of ``name``; unknown names give none. A value that does not decode as the
        point's type, or a DataAccessError, gives an INVALID row keeping the last value."""
        out = []
        for ip in self._by_name.get(name, ()):
            pid = ip.point.id
            with self._lock:
                last = self._last.get(pid, math.nan)
                try:
                    if isinstance(data, DataAccessCode):
                        raise Tase2Error(f"{name}: data access error {data.name}")
                    pv = decode_point(ip.type, data, name=name, layout=self.remote.flags_layout)
                    v = from_tase2(ip.point, ip.type, pv, last)
                    row = ImportRow(pid, v.value, int(v.quality), v.source_time_ms, cause)
                except Tase2Error:
                    row = ImportRow(pid, last, int(Quality.INVALID), -1, cause)
                if not math.isnan(row.value):
                    self._last[pid] = row.value
            out.append(row)
        return out

    def report_rows(self, members: Sequence[tuple[str, IECData | DataAccessCode]]) -> tuple[
            TransferReportHeader | None, list[ImportRow]]:
        """Header (None if the report has none) and rows of a transfer report given as (member name, value)."""
        header_values = {n: v for n, v in members if n in HEADER_NAMES and not isinstance(v, DataAccessCode)}
        header = None
        cause = Cause.SPONTANEOUS
        if "Transfer_Set_Name" in header_values:
            try:
                header = TransferReportHeader.decode(header_values, self.remote.flags_layout)  # type: ignore[arg-type]
            except Tase2Error:
                header = None
        if header is not None:
            if header.conditions & DSConditions.INTEGRITY:
                cause = Cause.INTERROGATED
            elif header.conditions & DSConditions.INTERVAL:
                cause = Cause.PERIODIC
        rows: list[ImportRow] = []
        for name, value in members:
            if name not in HEADER_NAMES:
                rows.extend(self.rows(name, value, cause))
        return header, rows


def data_set_names(names: Sequence[str], max_size: int, prefix: str = DEFAULT_PREFIX, *, header: bool = True
                   ) -> list[tuple[str, tuple[str, ...]]]:
    """Split the imported names into data sets ``<prefix>01``...: (data set name, member names), each at most
    ``max_size`` members counting the four header members when ``header``."""
    room = max_size - (len(HEADER_NAMES) if header else 0)
    if room < 1:
        raise Tase2ClientError(f"max_data_set_size {max_size} leaves no room for points after the "
                               f"{len(HEADER_NAMES)} transfer-report header members")
    out = []
    for i in range(0, len(names), room):
        members = (HEADER_NAMES if header else ()) + tuple(names[i:i + room])
        out.append((f"{prefix}{len(out) + 1:02d}", members))
    return out


class Tase2ClientSink(Protocol):
    """Where a client's output goes (the adapter's UpdateBuffer). Called from the client's threads."""

    def on_rows(self, remote: str, rows: Sequence[ImportRow]) -> None: ...

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None: ...

    def on_interrogated(self, remote: str, time_ms: int) -> None: ...

    def count(self, name: str, n: float = 1.0) -> None: ...


@dataclass(slots=True)
class _DataSet:
    name: ObjectName
    members: tuple[str, ...]
    transfer_set: ObjectName | None = None


@dataclass(frozen=True, slots=True)
class RemoteInfo:
    """What the remote said about itself when last associated."""

    address: str
    version: Tase2Version
    features: frozenset[int]
    bilateral_table_id: str


class Tase2Client:
    """Imports the points of one remote centre; see the module docstring. ``start`` / ``stop``; thread-safe."""

    def __init__(self, remote: RemoteCentre, local: PeerIdentity, points: Sequence[PointDef], sink: Tase2ClientSink,
                 *, prefix: str = DEFAULT_PREFIX, tle_s: int = 0) -> None:
        if not points:
            raise Tase2ClientError(f"ICCP remote {remote.name!r}: no imported points")
        self.remote = remote
        self.local = local
        self.map = ImportMap(remote, points)
        self.sink = sink
        self.prefix = prefix
        self.tle_s = tle_s
        self.info: RemoteInfo | None = None
        self.data_sets: list[_DataSet] = []
        self._assoc: MmsAssociation | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._interrogate = threading.Event()
        self._thread: threading.Thread | None = None
        self._up = False
        self._ds_by_name: dict[ObjectName, _DataSet] = {}
        self._integrity: set[tuple[str | None, str]] = set()  # transfer sets with an integrity report since the last
        self._integrity_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"TASE.2 client of {self.remote.name!r} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"tase2-client-{self.remote.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """The worker releases the association (the remote frees our transfer sets) and ends; a worker still busy
        after ``timeout_s`` (blocked in a request to a silent remote) is interrupted by aborting the association."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                assoc = self._assoc
                if assoc is not None:
                    assoc.abort()
                self._thread.join(timeout_s)
            self._thread = None

    def interrogate(self) -> None:
        """Read every data set again (asynchronously); ``on_interrogated`` follows when done."""
        self._interrogate.set()
        self._wake.set()

    @property
    def up(self) -> bool:
        return self._up

    def _mms_config(self) -> MmsClientConfig:
        r = self.remote
        endpoints = []
        for a in r.addresses:
            host, _, port = a.rpartition(":")
            endpoints.append(MmsEndpoint(host, int(port)))
        return MmsClientConfig(
            endpoints=tuple(endpoints),
            calling=AeTitle(self.local.ap_title.arcs, self.local.ae_qualifier),
            called=AeTitle(r.identity.ap_title.arcs, r.identity.ae_qualifier),
            connect_timeout_s=r.connect_timeout_s, request_timeout_s=r.request_timeout_s,
            # a release waits while reports still drain ahead of the Conclude, but inside stop()'s 5 s join
            release_timeout_s=min(r.request_timeout_s, 2.0), release_drain_max_s=4.0)

    # ----------------------------------------------------------------------------------------------- worker
    def _run(self) -> None:
        backoff = self.remote.reconnect_backoff_s
        while not self._stop.is_set():
            started = time.monotonic()
            reason = ""
            mismatch = False
            try:
                reason = self._session()
            except BilateralTableMismatch as exc:
                reason, mismatch = str(exc), True
                log.error("%s", exc)
                self.sink.count("bilateral_table_mismatch")
            except (MmsError, Tase2Error, Tase2ClientError) as exc:
                reason = str(exc)
                log.warning("ICCP remote %s: %s", self.remote.name, exc)
            except Exception as exc:  # a bug must not end the worker: the link is reported down and retried
                reason = f"client error: {type(exc).__name__}: {exc}"
                log.exception("ICCP remote %s: client error", self.remote.name)
                self.sink.count("client_errors")
            finally:
                # Only this thread ends its association (a release from stop() would race this abort): an orderly
                # release when stopping, an abort after a failure.
                assoc, self._assoc = self._assoc, None
                if assoc is not None and assoc.is_open:
                    if self._stop.is_set():
                        try:
                            assoc.release(2.0)
                        except MmsError:
                            assoc.abort()
                    else:
                        assoc.abort()
            if self._up:
                self._up = False
                self.sink.count("link_down")
                self.sink.on_link(self.remote.name, False, self.info.address if self.info else "", reason, now_ms())
            if self._stop.is_set():
                break
            self.sink.count("connect_failures")
            if time.monotonic() - started > _ADVANCE_S:
                backoff = self.remote.reconnect_backoff_s
            delay = self.remote.reconnect_backoff_max_s if mismatch else backoff
            self._wake.clear()
            if self._stop.wait(delay):
                break
            backoff = min(backoff * 2, self.remote.reconnect_backoff_max_s)

    def _session(self) -> str:
        """One association from connect to loss; returns why it ended."""
        r = self.remote
        assoc = MmsAssociation.connect(self._mms_config(), on_information_report=self._on_report,
                                       on_closed=lambda *_: self._wake.set())
        self._assoc = assoc
        if self._stop.is_set():
            return "stopped"
        address = str(assoc.endpoint)
        version = Tase2Version.decode(assoc.read_one(ObjectName.vcc("TASE2_Version")))
        features = decode_features(assoc.read_one(ObjectName.vcc("Supported_Features")))
        table_id = decode_bilateral_table_id(assoc.read_one(ObjectName.in_domain(r.domain, "Bilateral_Table_ID")))
        if table_id != r.bilateral_table_id:
            try:
                assoc.release()
            except MmsError:
                pass
            raise BilateralTableMismatch(
                f"ICCP remote {r.name!r} at {address}: Bilateral_Table_ID is {table_id!r} in domain {r.domain!r}, "
                f"our configuration agreed {r.bilateral_table_id!r}: no data is exchanged until both sides match")
        self.info = RemoteInfo(address, version, frozenset(int(b) for b in features), table_id)
        self._up = True
        self.sink.count("link_up")
        self.sink.on_link(r.name, True, address, "", now_ms())
        self._define_data_sets(assoc)
        for ds in self.data_sets:
            self._start_transfer_set(assoc, ds)
        self._read_all(assoc)
        next_keepalive = time.monotonic() + r.keepalive_s
        while not self._stop.is_set():
            if not assoc.is_open:
                return f"association with {address} ended ({assoc.close_reason.value if assoc.close_reason else '?'})"
            if self._interrogate.is_set():
                self._interrogate.clear()
                self._read_all(assoc)
            if time.monotonic() >= next_keepalive:
                assoc.read_one(ObjectName.in_domain(r.domain, "Bilateral_Table_ID"))
                next_keepalive = time.monotonic() + r.keepalive_s
            self._wake.wait(min(0.5, r.keepalive_s))
            self._wake.clear()
        return "stopped"

    def _define_data_sets(self, assoc: MmsAssociation) -> None:
        r = self.remote
        header = True
        sets = data_set_names(self.map.names, r.max_data_set_size, self.prefix, header=header)
        # Data sets of an earlier association (the remote may keep domain-scope ones): delete, ignore refusals.
        for ds_name, _ in sets:
            try:
                assoc.delete_named_variable_list(ObjectName.in_domain(r.domain, ds_name))
            except MmsError:
                pass
        self.data_sets = []
        for i, (ds_name, members) in enumerate(sets):
            name = ObjectName.in_domain(r.domain, ds_name)
            try:
                assoc.define_named_variable_list(name, [ObjectName.in_domain(r.domain, m) for m in members])
            except MmsError:
                if not (header and i == 0):
                    raise
                # The remote does not take the header members into data sets: points only from here on.
                header = False
                sets = data_set_names(self.map.names, r.max_data_set_size, self.prefix, header=False)
                self.sink.count("data_sets_without_header")
                self._define_plain(assoc, sets)
                return
            self.data_sets.append(_DataSet(name, members))
        self._ds_by_name = {ds.name: ds for ds in self.data_sets}
        self.sink.count("data_sets_defined", len(self.data_sets))

    def _define_plain(self, assoc: MmsAssociation, sets: list[tuple[str, tuple[str, ...]]]) -> None:
        r = self.remote
        self.data_sets = []
        for ds_name, members in sets:
            name = ObjectName.in_domain(r.domain, ds_name)
            assoc.define_named_variable_list(name, [ObjectName.in_domain(r.domain, m) for m in members])
            self.data_sets.append(_DataSet(name, members))
        self._ds_by_name = {ds.name: ds for ds in self.data_sets}
        self.sink.count("data_sets_defined", len(self.data_sets))

    def _start_transfer_set(self, assoc: MmsAssociation, ds: _DataSet) -> None:
        r = self.remote
        raw = assoc.read_one(ObjectName.in_domain(r.domain, "Next_DSTransfer_Set"))
        ts = Tase2Name.decode(raw, "Next_DSTransfer_Set")
        ts_name = ObjectName.in_domain(ts.domain, ts.name) if ts.scope is Scope.ICC else ObjectName.vcc(ts.name)
        conditions = DSConditions.INTERVAL
        if r.integrity_s:
            conditions |= DSConditions.INTEGRITY
        if r.rbe:
            conditions |= DSConditions.CHANGE
        attrs = DSTransferSet(Tase2Name(Scope.ICC, r.domain, ds.name.item), start_time_s=0, interval_s=r.interval_s,
                              tle_s=self.tle_s, buffer_time_s=r.buffer_time_s, integrity_check_s=r.integrity_s,
                              conditions=conditions, critical=r.critical, rbe=r.rbe,
                              all_changes_reported=r.all_changes_reported)
        encoded = attrs.encode(r.flags_layout).members
        comps = [(n, v) for n, v in zip(DSTransferSet.COMPONENTS, encoded, strict=True) if n != "Status"]
        failures = assoc.write([VariableSpec(ts_name, (n,)) for n, _ in comps], [v for _, v in comps])
        refused = [f"{n}: {f.name}" for (n, _), f in zip(comps, failures, strict=True) if f is not None]
        if refused:
            raise Tase2ClientError(f"ICCP remote {r.name!r}: writing {ts_name} refused ({', '.join(refused)})")
        failure = assoc.write([VariableSpec(ts_name, ("Status",))], [BoolData(True)])[0]
        if failure is not None:
            raise Tase2ClientError(f"ICCP remote {r.name!r}: enabling {ts_name} refused ({failure.name})")
        ds.transfer_set = ts_name
        self.sink.count("transfer_sets_enabled")

    def _read_all(self, assoc: MmsAssociation) -> None:
        """Read every data set (the interrogation); ``on_interrogated`` once all values are handed over."""
        for ds in self.data_sets:
            results = assoc.read_list(ds.name)
            if len(results) != len(ds.members):
                raise Tase2ClientError(f"ICCP remote {self.remote.name!r}: reading {ds.name} gave {len(results)} "
                                       f"values for {len(ds.members)} members")
            rows: list[ImportRow] = []
            for name, value in zip(ds.members, results, strict=True):
                if name not in HEADER_NAMES:
                    rows.extend(self.map.rows(name, value, Cause.INTERROGATED))
            self.sink.on_rows(self.remote.name, rows)
        self.sink.count("interrogations")
        self.sink.on_interrogated(self.remote.name, now_ms())

    # ----------------------------------------------------------------------------------------------- reports
    def _on_report(self, report: InformationReport) -> None:
        """On the association's receive thread: decode, hand the rows over, acknowledge critical reports."""
        try:
            members = self._members(report)
            if members is None:
                self.sink.count("reports_unknown")
                return
            header, rows = self.map.report_rows(members)
            if rows:
                self.sink.on_rows(self.remote.name, rows)
            self.sink.count("reports")
            if header is not None and header.conditions & DSConditions.INTEGRITY:
                self._integrity_seen(header)
            if header is not None and self.remote.critical:
                self._ack(header)
        except Exception:
            log.exception("ICCP remote %s: report handling failed", self.remote.name)
            self.sink.count("report_errors")

    def _members(self, report: InformationReport) -> list[tuple[str, IECData | DataAccessCode]] | None:
        if report.variables:
            return [(v.name.item, res) for v, res in zip(report.variables, report.results, strict=False)
                    if not v.component]
        if report.list_name is not None:
            ds = self._ds_by_name.get(report.list_name)
            if ds is None:  # the same item in another scope: some servers report association- or VCC-scope names
                ds = next((d for d in self.data_sets if d.name.item == report.list_name.item), None)
            if ds is None or len(report.results) != len(ds.members):
                return None
            return list(zip(ds.members, report.results, strict=True))
        return None

    def _integrity_seen(self, header: TransferReportHeader) -> None:
        """Once every transfer set has sent an integrity report since the last time, every point was confirmed:
        the RTDB hears an interrogation end (points that did not change are current, not stale)."""
        ts = header.transfer_set
        with self._integrity_lock:
            self._integrity.add((ts.domain, ts.name))
            wanted = {(d.transfer_set.domain, d.transfer_set.item) for d in self.data_sets if d.transfer_set}
            if not wanted or not wanted <= self._integrity:
                return
            self._integrity.clear()
        self.sink.on_interrogated(self.remote.name, now_ms())

    def _ack(self, header: TransferReportHeader) -> None:
        assoc = self._assoc
        if assoc is None:
            return

        def send() -> None:  # not on the receive thread: it must stay free to deliver the write response
            try:
                assoc.write_one(ObjectName.in_domain(self.remote.domain, ACK_NAME), header.transfer_set.encode())
                self.sink.count("critical_acks")
            except MmsError:
                self.sink.count("critical_ack_failures")

        threading.Thread(target=send, name=f"tase2-ack-{self.remote.name}", daemon=True).start()

