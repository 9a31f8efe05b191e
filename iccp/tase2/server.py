"""The TASE.2 server (Blocks 1, 2 and 5): publishes points to peer control centres under their bilateral tables.

:class:`Tase2Server` is an :class:`iccp.mms.MmsHandler` on :class:`iccp.mms.MmsServer` (one event-loop thread for
every association). What a peer sees:

* association: accepted only when the calling AP title and AE qualifier are those of a configured peer
  (``IccpConfig.peer``); any other gets an AARE rejection (calling-AP-title-not-recognized);
* VCC scope: ``TASE2_Version`` (2000.8), ``Supported_Features`` (Blocks 1, 2, and 5 when device control is
  configured), the table's VCC-scope points; one domain: the peer's ICC domain;
* its ICC domain: ``Bilateral_Table_ID``, ``Next_DSTransfer_Set``, the transfer sets this association allocated
  (``DSTransferSetNN``), ``Transfer_Report_ACK``, the four transfer-report header members, its points and device
  objects (``<Device>``, ``<Device>_SBO``, ``<Device>_TAG``); name lists show exactly these;
* reads of points: the TASE.2 type of the table entry, value/flags/time from ``iccp.tase2.mapping``; component access
  into any structure (``DSTransferSet01.Status``, ``P.Flags``); anything outside the table: object-access-denied;
  writes: only to the table's writable points (to :meth:`PointSource.write` on the device worker pool: with the RTDB
  source a set-point command or an RTDB value, see ``iccp.tase2.peer_writes``; a value of another TASE.2 type:
  type-inconsistent), transfer sets, ``Transfer_Report_ACK`` and devices; everything else object-access-denied;
* data sets (named variable lists) in its ICC domain (shared by the peer's associations, kept after they end) and in
  association scope (dropped with the association): define/delete/attributes, members checked against the table
  (points and header members, no component access), at most ``limits.max_data_sets`` of at most
  ``limits.max_data_set_size`` members; a data set an enabled transfer set reports is not deleted;
* DS transfer sets: ``iccp.tase2.transfer_sets`` (the exact semantics are documented there); an unknown transfer set
  is object-non-existent, one of another association object-access-denied; they are disabled and freed when their
  association ends, however it ends.

Reports (``Tase2Server.report_shape``): :attr:`ReportShape.VARIABLE_LIST` (default) sends an informationReport on a
list of variables: the four header members ``Transfer_Set_Name``, ``Transfer_Set_Time_Stamp``,
``DSConditions_Detected``, ``Event_Code_Detected`` (named in the ICC domain), then the reported data-set members, each
named. libiec61850's client takes it (it drops reports on a domain-scoped list name) and so does ours, and an RBE
report can carry only the changed members. :attr:`ReportShape.NAMED_LIST` sends whole-data-set reports on the data
set's name (its own scope; results in member order, header members where the data set has them); RBE reports of
changed members still go as a variable list.

Device control: ``devices`` (``iccp.tase2.devices``). Selects (``<Device>_SBO`` reads), operates (``<Device>``
writes), tag reads and tag writes wait for the SCADA command path (the field round trip, up to the control's
time-out) or the tag store, so they run on a small worker pool (``device_workers`` threads, at most
``max_device_jobs`` queued or running; beyond that the item gets temporarily-unavailable) and the request is answered
through the MMS server's deferred responses: the loop keeps serving every association meanwhile. The other items of
the same request are computed on the loop first; the device items of one request run in order in one worker job.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from open61850.data import IECData, IntData, StructureData
from open61850.mms.types import MmsType, StructureType

from iccp.errors import AssociationRefused, IccpError, MmsServiceError
from iccp.mms import (
    AccessResult,
    AssociationHandle,
    AssociationInfo,
    DataAccessCode,
    Deferred,
    DeleteListRequest,
    DeleteResult,
    DeleteScope,
    EndReason,
    ErrorClass,
    Identity,
    ListAttributes,
    MmsServer,
    MmsServerConfig,
    NameListRequest,
    NameScope,
    ObjectClass,
    ObjectName,
    RefusalDiagnostic,
    VariableAccess,
    VariableAttributes,
    VariableSpec,
    codec,
)
from iccp.tase2.bilateral import (
    AccessDenied,
    ApTitle,
    BilateralPoint,
    BilateralTable,
    Operation,
    PeerIdentity,
    check_write,
)
from iccp.tase2.devices import DeviceControl, DeviceRefused
from iccp.tase2.mapping import RtdbValue, from_tase2, to_tase2
from iccp.tase2.model import (
    CHECK_BACK_ID_MMS_TYPE,
    ICC_OBJECTS,
    OUR_FEATURES,
    OUR_VERSION,
    VCC_OBJECTS,
    Block,
    DSTransferSet,
    Scope,
    TagValue,
    Tase2Error,
    TransferReportHeader,
    control_mms_type,
    decode_command,
    decode_point,
    encode_bilateral_table_id,
    encode_features,
    encode_point,
    point_mms_type,
    transfer_set_name,
)
from iccp.tase2.model import ObjectName as Tase2Name
from iccp.tase2.point_source import PointSource, PointSourceError, SourceChange
from iccp.tase2.transfer_sets import PendingReport, TransferSetEngine, TransferSetError
from models.iccp_config import IccpConfig

__all__ = ["ACK_NAME", "ReportShape", "ServerStats", "Tase2Server"]

log = logging.getLogger("iccp.tase2.server")

ACK_NAME = "Transfer_Report_ACK"
HEADER_NAMES = TransferReportHeader.NAMES
_TS_RE = re.compile(r"DSTransferSet(\d+)")
_DENIED = DataAccessCode.OBJECT_ACCESS_DENIED
DEFAULT_IDENTITY = Identity("dscada", "TASE.2 server", "1")
_PDU_MARGIN_BYTES = 64  # MMS/presentation/session headers around an informationReport
_MEMBER_BOUND_BYTES = 56  # variable specification + the largest point value (QTimeTagExtended), BER overhead
_SIZE_CHECK_MEMBERS = 200  # smaller reports fit any PDU size a TASE.2 peer negotiates (>= 8 KiB assumed)


class ReportShape(StrEnum):
    VARIABLE_LIST = "variable_list"
    NAMED_LIST = "named_list"


@dataclass(slots=True)
class ServerStats:
    associations: int = 0
    refused: int = 0
    reads: int = 0
    writes: int = 0
    reports: int = 0
    report_values: int = 0
    denied: int = 0


@dataclass(frozen=True, slots=True)
class _DataSet:
    name: ObjectName
    variables: tuple[VariableSpec, ...]
    members: tuple[str, ...]  # wire item names


@dataclass(eq=False, slots=True)
class _Peer:
    """Per-association context."""

    table: BilateralTable
    handle: AssociationHandle
    engine: TransferSetEngine
    by_point: dict[str, list[BilateralPoint]]
    data_sets: dict[str, _DataSet] = field(default_factory=dict)  # association scope
    timer: asyncio.TimerHandle | None = None
    deadline_s: float = 0.0
    open: bool = True
    reports: int = 0


def _component(value: IECData, mms_type: MmsType, path: Sequence[str | int], what: str) -> AccessResult:
    """Select ``path`` in a structured value (alternate access)."""
    for c in path:
        if not isinstance(mms_type, StructureType) or not isinstance(value, StructureData) or not isinstance(c, str):
            return DataAccessCode.OBJECT_NON_EXISTENT
        names = [n for n, _ in mms_type.components]
        if c not in names or len(value.members) != len(names):
            log.debug("%s: no component %r", what, c)
            return DataAccessCode.OBJECT_NON_EXISTENT
        i = names.index(c)
        value, mms_type = value.members[i], mms_type.components[i][1]
    return value


class Tase2Server:
    """The TASE.2 server; ``start()`` / ``stop()`` (or a ``with`` block). ``config.peers`` are the bilateral tables."""

    def __init__(self, config: IccpConfig, source: PointSource, *, devices: DeviceControl | None = None,
                 mms: MmsServerConfig | None = None, report_shape: ReportShape = ReportShape.VARIABLE_LIST,
                 ack_timeout_s: float = 5.0, ack_retries: int = 2,
                 on_alarm: Callable[[str, str, str], None] | None = None,
                 identity: Identity = DEFAULT_IDENTITY, device_workers: int = 4, max_device_jobs: int = 16) -> None:
        if not config.peers:
            raise Tase2Error("TASE.2 server: no [[iccp.peers]] bilateral table, nobody could associate")
        self.config = config
        self.source = source
        self.devices = devices
        self.report_shape = report_shape
        self.ack_timeout_s = ack_timeout_s
        self.ack_retries = ack_retries
        self.on_alarm = on_alarm
        self.identity = identity
        mms = mms or MmsServerConfig(port=0)
        if mms.local_ap_title is None:
            mms = dataclasses.replace(mms, local_ap_title=config.identity.ap_title.arcs,
                                      local_ae_qualifier=config.identity.ae_qualifier)
        self.mms = MmsServer(self, mms)
        self.features = OUR_FEATURES if devices is not None else frozenset(OUR_FEATURES - {Block.DEVICE_CONTROL})
        self._peers: list[_Peer] = []
        self._domain_sets: dict[str, dict[str, _DataSet]] = {t.domain: {} for t in config.peers}
        self._ts_owner: dict[tuple[str, str], _Peer] = {}
        self._lock = threading.Lock()
        self.stats = ServerStats()
        self._listening = False
        if device_workers < 1 or max_device_jobs < 1:
            raise Tase2Error(f"TASE.2 server: device_workers {device_workers} and max_device_jobs {max_device_jobs} "
                             "must be at least 1")
        self.device_workers = device_workers
        self.max_device_jobs = max_device_jobs
        self._device_jobs = 0  # queued or running on the worker pool (under _lock)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        return self.mms.port

    def start(self) -> None:
        if self.devices is not None or any(bp.writable for t in self.config.peers for bp in t.points):
            self._executor = concurrent.futures.ThreadPoolExecutor(self.device_workers,
                                                                   thread_name_prefix="tase2-device")
        self.mms.start()
        self.source.add_listener(self._on_source_changes)
        self._listening = True
        log.info("TASE.2 server on port %d for %s", self.port, ", ".join(t.peer for t in self.config.peers))

    def stop(self) -> None:
        if self._listening:
            self.source.remove_listener(self._on_source_changes)
            self._listening = False
        self.mms.stop()
        executor, self._executor = self._executor, None
        if executor is not None:  # a running field round trip finishes on its own (its answer is dropped)
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Tase2Server:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def transfer_sets(self) -> dict[str, list[tuple[str, bool]]]:
        """Per peer: (transfer set, enabled) of its open associations (for tests and status pages); read on the
        server loop, where the engines live."""

        def collect() -> dict[str, list[tuple[str, bool]]]:
            out: dict[str, list[tuple[str, bool]]] = {}
            for p in list(self._peers):
                out.setdefault(p.table.peer, []).extend((n, p.engine.enabled(n)) for n in p.engine.names)
            return out

        async def on_loop() -> dict[str, list[tuple[str, bool]]]:
            return collect()

        try:
            return asyncio.run_coroutine_threadsafe(on_loop(), self.mms.loop).result(5.0)
        except IccpError:  # not started
            return collect()

    def engines(self) -> list[TransferSetEngine]:
        with self._lock:
            return [p.engine for p in self._peers]

    # ------------------------------------------------------------------------------------------- association
    def associate(self, info: AssociationInfo) -> _Peer:
        if info.calling_ap_title is None:
            self.stats.refused += 1
            raise AssociationRefused(RefusalDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED, "no calling AP title")
        identity = PeerIdentity(ApTitle(tuple(info.calling_ap_title)), info.calling_ae_qualifier
                                if info.calling_ae_qualifier is not None else -1)
        table = self.config.peer(identity)
        if table is None:
            self.stats.refused += 1
            known_title = any(t.identity.ap_title == identity.ap_title for t in self.config.peers)
            raise AssociationRefused(RefusalDiagnostic.CALLING_AE_QUALIFIER_NOT_RECOGNIZED if known_title
                                     else RefusalDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED,
                                     f"calling {identity} is not a configured peer")
        engine = TransferSetEngine(table.domain, table.limits, header_names=HEADER_NAMES,
                                   layout=table.flags_layout, ack_timeout_s=self.ack_timeout_s,
                                   ack_retries=self.ack_retries,
                                   on_alarm=lambda ts, text, _peer=table.peer: self._alarm(_peer, ts, text))
        by_point: dict[str, list[BilateralPoint]] = {}
        for bp in table.points:
            by_point.setdefault(bp.point, []).append(bp)
        ctx = _Peer(table, info.handle, engine, by_point)
        with self._lock:
            self._peers.append(ctx)
            self._domain_sets.setdefault(table.domain, {})
        self.stats.associations += 1
        log.info("peer %s associated (%s) from %s", table.peer, identity, info.peer_host)
        return ctx

    def _alarm(self, peer: str, transfer_set: str, text: str) -> None:
        if self.on_alarm is not None:
            self.on_alarm(peer, transfer_set, text)

    def released(self, ctx: _Peer) -> None:
        self._end(ctx, "released")

    def aborted(self, ctx: _Peer, reason: EndReason) -> None:
        self._end(ctx, reason.value)

    def _end(self, ctx: _Peer | None, why: str) -> None:
        if ctx is None:
            return
        ctx.open = False
        if ctx.timer is not None:
            ctx.timer.cancel()
        freed = ctx.engine.remove_all()
        with self._lock:
            for n in freed:
                self._ts_owner.pop((ctx.table.domain, n), None)
            if ctx in self._peers:
                self._peers.remove(ctx)
        ctx.data_sets.clear()
        log.info("peer %s association %s: %d transfer sets freed", ctx.table.peer, why, len(freed))

    def identify(self, ctx: _Peer) -> Identity:
        return self.identity

    # ------------------------------------------------------------------------------------------- names
    def get_name_list(self, ctx: _Peer, request: NameListRequest) -> Sequence[str]:
        t = ctx.table
        if request.object_class is ObjectClass.DOMAIN:
            return [t.domain]
        if request.scope is NameScope.VCC:
            if request.object_class is ObjectClass.NAMED_VARIABLE:
                return [*VCC_OBJECTS, *t.names(Scope.VCC)]
            return []
        if request.scope is NameScope.ASSOCIATION:
            return list(ctx.data_sets) if request.object_class is ObjectClass.NAMED_VARIABLE_LIST else []
        if request.domain != t.domain:
            raise MmsServiceError(ErrorClass.ACCESS, 2, f"peer {t.peer!r}: no domain {request.domain!r}")
        if request.object_class is ObjectClass.NAMED_VARIABLE:
            return [*ICC_OBJECTS, ACK_NAME, *HEADER_NAMES, *ctx.engine.names, *t.names(Scope.ICC)]
        if request.object_class is ObjectClass.NAMED_VARIABLE_LIST:
            return list(self._domain_sets[t.domain])
        return []

    def _mms_type(self, ctx: _Peer, name: ObjectName) -> MmsType | None:
        t = ctx.table
        if name.scope is NameScope.VCC:
            if name.item in VCC_OBJECTS:
                return VCC_OBJECTS[name.item]
            bp = t.point(name.item, Scope.VCC)
            return point_mms_type(bp.type, t.state_encoding) if bp else None
        if name.scope is not NameScope.DOMAIN or name.domain != t.domain:
            return None
        item = name.item
        if item in ICC_OBJECTS:
            return ICC_OBJECTS[item]
        if item in TransferReportHeader.MMS_TYPES:
            return TransferReportHeader.MMS_TYPES[item]
        if item == ACK_NAME:
            return Tase2Name.MMS_TYPE
        if item in ctx.engine:
            return DSTransferSet.MMS_TYPE
        dev = t.device_object(item)
        if dev is not None:
            d, op = dev
            special = {Operation.SELECT: CHECK_BACK_ID_MMS_TYPE, Operation.TAG: TagValue.MMS_TYPE}
            return special.get(op, control_mms_type(d.device.kind))
        bp = t.point(item)
        return point_mms_type(bp.type, t.state_encoding) if bp else None

    def get_variable_access_attributes(self, ctx: _Peer, name: ObjectName) -> VariableAttributes:
        mms_type = self._mms_type(ctx, name)
        if mms_type is None:
            self.stats.denied += 1
            raise MmsServiceError(ErrorClass.ACCESS, 3, f"peer {ctx.table.peer!r}: {name} not in its bilateral table")
        return VariableAttributes(mms_type)

    # ------------------------------------------------------------------------------------------- reads
    def read(self, ctx: _Peer, variables: Sequence[VariableSpec]) -> Sequence[AccessResult] | Deferred:
        self.stats.reads += len(variables)
        now = int(time.time() * 1000)
        points: list[tuple[int, BilateralPoint]] = []
        out: list[AccessResult] = []
        devices: list[tuple[int, Callable[[], AccessResult]]] = []
        for i, spec in enumerate(variables):
            bp = self._readable_point(ctx, spec.name)
            if bp is not None:
                points.append((i, bp))
                out.append(DataAccessCode.TEMPORARILY_UNAVAILABLE)
                continue
            call = self._device_read(ctx, spec)
            if call is not None:
                devices.append((i, call))
                out.append(DataAccessCode.TEMPORARILY_UNAVAILABLE)
            else:
                out.append(self._read_object(ctx, spec))
        if points:  # one source call for every point of the request
            values = self.source.values([bp.point for _, bp in points])
            for (i, bp), v in zip(points, values, strict=True):
                encoded = self._encode(ctx.table, bp, v, now)
                comp = variables[i].component
                out[i] = (_component(encoded, point_mms_type(bp.type, ctx.table.state_encoding), comp,
                                     bp.name) if comp and not isinstance(encoded, DataAccessCode) else encoded)
        if devices:
            return Deferred(self._complete_on_worker(out, devices))
        self.stats.denied += sum(1 for r in out if r is _DENIED)
        return out

    def _readable_point(self, ctx: _Peer, name: ObjectName) -> BilateralPoint | None:
        t = ctx.table
        if name.scope is NameScope.VCC and name.item not in VCC_OBJECTS:
            return t.point(name.item, Scope.VCC)
        if name.scope is NameScope.DOMAIN and name.domain == t.domain:
            return t.point(name.item)
        return None

    def _encode(self, table: BilateralTable, bp: BilateralPoint, v: Any, now_ms: int) -> AccessResult:
        pdef = self.source.definition(bp.point)
        if pdef is None:
            return DataAccessCode.TEMPORARILY_UNAVAILABLE
        try:
            pv = to_tase2(pdef, bp.type, v.value, v.quality, v.source_time_ms, now_ms)
            return encode_point(bp.type, pv, name=bp.name, layout=table.flags_layout, state=table.state_encoding)
        except Tase2Error as exc:
            log.warning("peer %s: %s", table.peer, exc)
            return DataAccessCode.OBJECT_VALUE_INVALID

    def _read_object(self, ctx: _Peer, spec: VariableSpec) -> AccessResult:
        t = ctx.table
        name = spec.name
        value: IECData | None = None
        if name.scope is NameScope.VCC:
            if name.item == "TASE2_Version":
                value = OUR_VERSION.encode()
            elif name.item == "Supported_Features":
                value = encode_features(self.features)
            else:
                return _DENIED
        elif name.scope is NameScope.ASSOCIATION:
            return DataAccessCode.OBJECT_NON_EXISTENT
        elif name.domain != t.domain:
            return _DENIED
        else:
            item = name.item
            if item == "Bilateral_Table_ID":
                value = encode_bilateral_table_id(t.table_id)
            elif item == "Next_DSTransfer_Set":
                allocated = self._allocate(ctx)
                if isinstance(allocated, DataAccessCode):
                    return allocated
                value = Tase2Name(Scope.ICC, t.domain, allocated).encode()
            elif _TS_RE.fullmatch(item):
                if item in ctx.engine:
                    value = ctx.engine.value(item)
                else:
                    return self._foreign_ts(ctx, item)
            elif item in HEADER_NAMES:
                return DataAccessCode.TEMPORARILY_UNAVAILABLE  # has a value only inside a transfer report
            elif item == ACK_NAME:
                return _DENIED  # write-only
            else:
                dev = t.device_object(item)
                if dev is None:
                    return _DENIED
                return self._read_device(ctx, spec, *dev)
        mms_type = self._mms_type(ctx, name)
        return _component(value, mms_type, spec.component, str(name)) if spec.component and mms_type else value

    def _read_device(self, ctx: _Peer, spec: VariableSpec, device: Any, op: Operation) -> AccessResult:
        """A ``<Device>`` object read that does not reach device control (those go through _device_read)."""
        return _DENIED  # no device control, or <Device> itself: written to operate, not read

    def _device_read(self, ctx: _Peer, spec: VariableSpec) -> Callable[[], AccessResult] | None:
        """The worker job of a ``<Device>_SBO`` / ``<Device>_TAG`` read, None when ``spec`` is not one."""
        t, devices, name = ctx.table, self.devices, spec.name
        if devices is None or name.scope is not NameScope.DOMAIN or name.domain != t.domain:
            return None
        dev = t.device_object(name.item)
        if dev is None or dev[1] not in (Operation.SELECT, Operation.TAG):
            return None
        device, op = dev
        mms_type = self._mms_type(ctx, name)  # on the loop: it looks at the transfer-set engine

        def call() -> AccessResult:
            try:
                if op is Operation.SELECT:
                    value: IECData = IntData(devices.select(t, device))
                else:
                    value = devices.tag(t, device).encode(t.flags_layout)
            except DeviceRefused as exc:
                log.info("peer %s: %s", t.peer, exc)
                return exc.code
            except Tase2Error as exc:
                log.warning("peer %s: %s", t.peer, exc)
                return DataAccessCode.OBJECT_VALUE_INVALID
            if spec.component and mms_type is not None:
                return _component(value, mms_type, spec.component, str(name))
            return value

        return call

    @property
    def device_jobs(self) -> int:
        """Device operations queued or running on the worker pool."""
        return self._device_jobs

    def _take_device_slot(self) -> bool:
        with self._lock:
            if self._device_jobs >= self.max_device_jobs:
                return False
            self._device_jobs += 1
            return True

    def _release_device_slot(self) -> None:
        with self._lock:
            self._device_jobs -= 1

    async def _complete_on_worker(self, out: list[Any], jobs: list[tuple[int, Callable[[], Any]]]) -> list[Any]:
        """Run the device items of one request in order on a worker; fill them into ``out`` (on the loop)."""
        executor = self._executor
        if executor is None or not self._take_device_slot():
            log.warning("TASE.2 server: %d device operations queued or running already: refused",
                        self.max_device_jobs)
            results: list[Any] = [DataAccessCode.TEMPORARILY_UNAVAILABLE] * len(jobs)
        else:
            def run() -> list[Any]:
                done: list[Any] = []
                for _, job in jobs:
                    try:
                        done.append(job())
                    except Exception:  # noqa: BLE001 - one failing device item must not fail the others
                        log.exception("TASE.2 server: device operation failed")
                        done.append(DataAccessCode.TEMPORARILY_UNAVAILABLE)
                return done

            try:
                future = executor.submit(run)
            except RuntimeError:  # stopping
                self._release_device_slot()
                future = None
            if future is None:
                results = [DataAccessCode.TEMPORARILY_UNAVAILABLE] * len(jobs)
            else:
                future.add_done_callback(lambda _f: self._release_device_slot())
                results = await asyncio.wrap_future(future)
        for (i, _), r in zip(jobs, results, strict=True):
            out[i] = r
        self.stats.denied += sum(1 for r in out if r is _DENIED)
        return out

    def _foreign_ts(self, ctx: _Peer, item: str) -> DataAccessCode:
        with self._lock:
            owner = self._ts_owner.get((ctx.table.domain, item))
        return _DENIED if owner is not None else DataAccessCode.OBJECT_NON_EXISTENT

    def _allocate(self, ctx: _Peer) -> str | DataAccessCode:
        domain = ctx.table.domain
        with self._lock:
            n = 1
            while (domain, transfer_set_name(n)) in self._ts_owner:
                n += 1
            name = transfer_set_name(n)
            try:
                ctx.engine.add(name)
            except TransferSetError as exc:
                log.info("peer %s: %s", ctx.table.peer, exc)
                return DataAccessCode.TEMPORARILY_UNAVAILABLE
            self._ts_owner[(domain, name)] = ctx
        log.info("peer %s: %s/%s allocated", ctx.table.peer, domain, name)
        return name

    def read_list(self, ctx: _Peer, list_name: ObjectName) -> Sequence[AccessResult]:
        ds = self._data_set(ctx, list_name)
        if ds is None:
            raise MmsServiceError(ErrorClass.ACCESS, 2, f"peer {ctx.table.peer!r}: no data set {list_name}")
        return self.read(ctx, ds.variables)

    # ------------------------------------------------------------------------------------------- writes
    def write(self, ctx: _Peer, variables: Sequence[VariableSpec],
              values: Sequence[IECData]) -> Sequence[DataAccessCode | None] | Deferred:
        self.stats.writes += len(variables)
        out: list[DataAccessCode | None] = []
        devices: list[tuple[int, Callable[[], DataAccessCode | None]]] = []
        for i, (spec, value) in enumerate(zip(variables, values, strict=True)):
            call = self._device_write(ctx, spec, value)
            done = self._write_one(ctx, spec, value) if call is None else None
            if callable(done):  # a point write for the source: may wait for the field (a set-point command)
                call, done = done, None
            if call is not None:
                devices.append((i, call))
                out.append(DataAccessCode.TEMPORARILY_UNAVAILABLE)
            else:
                out.append(done)
        if devices:
            return Deferred(self._complete_on_worker(out, devices))
        self.stats.denied += sum(1 for r in out if r is _DENIED)
        return out

    def _device_write(self, ctx: _Peer, spec: VariableSpec,
                      value: IECData) -> Callable[[], DataAccessCode | None] | None:
        """The worker job of a ``<Device>`` (operate) or ``<Device>_TAG`` write, None when ``spec`` is not one."""
        t, name = ctx.table, spec.name
        if (self.devices is None or spec.component or name.scope is not NameScope.DOMAIN or name.domain != t.domain):
            return None
        dev = t.device_object(name.item)
        if dev is None or dev[1] is Operation.SELECT:
            return None
        return lambda: self._write_device(ctx, value, *dev)

    def _write_one(self, ctx: _Peer, spec: VariableSpec,
                   value: IECData) -> DataAccessCode | None | Callable[[], DataAccessCode | None]:
        """The outcome of one written variable, or the worker job of a point write that passed the checks."""
        t = ctx.table
        name = spec.name
        if name.scope is not NameScope.DOMAIN or name.domain != t.domain:
            return _DENIED if name.scope is not NameScope.ASSOCIATION else DataAccessCode.OBJECT_NON_EXISTENT
        item = name.item
        if _TS_RE.fullmatch(item):
            if item not in ctx.engine:
                return self._foreign_ts(ctx, item)
            result = ctx.engine.write(item, spec.component, value, time.time(), lambda n: self._members_of(ctx, n))
            self._schedule(ctx)
            return result
        if spec.component:
            return _DENIED  # no partial writes of points or devices
        if item == ACK_NAME:
            return self._acknowledge(ctx, value)
        dev = t.device_object(item)
        if dev is not None:
            return self._write_device(ctx, value, *dev)
        try:
            bp = check_write(t, item)
        except AccessDenied as exc:
            log.info("%s", exc)
            return _DENIED
        pdef = self.source.definition(bp.point)
        if pdef is None:
            return DataAccessCode.TEMPORARILY_UNAVAILABLE
        try:  # the value must have the entry's TASE.2 type and fit the point (mapping.value_fits)
            written = from_tase2(pdef, bp.type, decode_point(bp.type, value, name=bp.name, layout=t.flags_layout))
        except Tase2Error as exc:
            log.info("peer %s: write of %s refused: %s", t.peer, item, exc)
            return DataAccessCode.TYPE_INCONSISTENT
        return lambda: self._write_point(t, bp, written)

    def _write_point(self, t: BilateralTable, bp: BilateralPoint, written: RtdbValue) -> DataAccessCode | None:
        """Hand a peer's write to the source, on a worker: a set-point write waits for the field round trip."""
        try:
            self.source.write(bp.point, written, table=t)
        except PointSourceError as exc:
            log.info("peer %s: write of %s refused: %s", t.peer, bp.name, exc)
            return exc.code
        return None

    def _acknowledge(self, ctx: _Peer, value: IECData) -> DataAccessCode | None:
        try:
            ts = Tase2Name.decode(value, ACK_NAME)
        except Tase2Error:
            return DataAccessCode.TYPE_INCONSISTENT
        if ts.domain != ctx.table.domain or ts.name not in ctx.engine:
            return self._foreign_ts(ctx, ts.name) if ts.domain == ctx.table.domain else _DENIED
        ctx.engine.acknowledge(ts.name)
        self._schedule(ctx)
        return None

    def _write_device(self, ctx: _Peer, value: IECData, device: Any, op: Operation) -> DataAccessCode | None:
        if self.devices is None or op is Operation.SELECT:
            return _DENIED
        try:
            if op is Operation.TAG:
                self.devices.set_tag(ctx.table, device, TagValue.decode(value, ctx.table.flags_layout))
            else:
                self.devices.operate(ctx.table, device, decode_command(device.device.kind, value))
        except DeviceRefused as exc:
            log.info("peer %s: %s", ctx.table.peer, exc)
            return exc.code
        except Tase2Error as exc:
            log.info("peer %s: %s", ctx.table.peer, exc)
            return DataAccessCode.OBJECT_VALUE_INVALID
        return None

    # ------------------------------------------------------------------------------------------- data sets
    def _data_set(self, ctx: _Peer, name: ObjectName) -> _DataSet | None:
        if name.scope is NameScope.ASSOCIATION:
            return ctx.data_sets.get(name.item)
        if name.scope is NameScope.DOMAIN and name.domain == ctx.table.domain:
            return self._domain_sets[ctx.table.domain].get(name.item)
        return None

    def _members_of(self, ctx: _Peer, name: Tase2Name) -> tuple[str, ...] | None:
        if name.scope is Scope.ICC and name.domain == ctx.table.domain:
            ds = self._domain_sets[ctx.table.domain].get(name.name) or ctx.data_sets.get(name.name)
        else:
            ds = ctx.data_sets.get(name.name)  # a VCC-scope DataSetName: association-scope lists are looked up too
        return ds.members if ds is not None else None

    def define_named_variable_list(self, ctx: _Peer, name: ObjectName, variables: Sequence[VariableSpec]) -> None:
        t = ctx.table
        if name.scope is NameScope.VCC or (name.scope is NameScope.DOMAIN and name.domain != t.domain):
            raise MmsServiceError(ErrorClass.ACCESS, 3, f"peer {t.peer!r}: may not define {name}")
        store = ctx.data_sets if name.scope is NameScope.ASSOCIATION else self._domain_sets[t.domain]
        if name.item in store:
            raise MmsServiceError(ErrorClass.DEFINITION, 5, f"data set {name} exists")
        total = len(self._domain_sets[t.domain]) + len(ctx.data_sets)
        if total >= t.limits.max_data_sets:
            raise MmsServiceError(ErrorClass.RESOURCE, 3, f"peer {t.peer!r}: {t.limits.max_data_sets} data sets")
        if not variables or len(variables) > t.limits.max_data_set_size:
            raise MmsServiceError(ErrorClass.DEFINITION, 6, f"data set {name}: {len(variables)} members, allowed "
                                  f"1..{t.limits.max_data_set_size}")
        members = []
        for v in variables:
            n = v.name
            ok = not v.component and (
                (n.scope is NameScope.DOMAIN and n.domain == t.domain
                 and (n.item in HEADER_NAMES or t.point(n.item) is not None))
                or (n.scope is NameScope.VCC and t.point(n.item, Scope.VCC) is not None))
            if not ok:
                self.stats.denied += 1
                raise MmsServiceError(ErrorClass.ACCESS, 3, f"data set {name}: member {v} is not in the bilateral "
                                      f"table of {t.peer!r}")
            members.append(n.item)
        store[name.item] = _DataSet(name, tuple(variables), tuple(members))
        log.info("peer %s: data set %s defined (%d members)", t.peer, name, len(members))

    def delete_named_variable_list(self, ctx: _Peer, request: DeleteListRequest) -> DeleteResult:
        t = ctx.table
        if request.scope is DeleteScope.SPECIFIC:
            names = list(request.names)
        elif request.scope is DeleteScope.ASSOCIATION:
            names = [ds.name for ds in ctx.data_sets.values()]
        elif request.scope is DeleteScope.DOMAIN and request.domain == t.domain:
            names = [ds.name for ds in self._domain_sets[t.domain].values()]
        else:
            names = []
        matched = deleted = 0
        with self._lock:
            peers = list(self._peers)
        for name in names:
            ds = self._data_set(ctx, name)
            if ds is None:
                continue
            matched += 1
            tname = (Tase2Name(Scope.ICC, t.domain, name.item) if name.scope is NameScope.DOMAIN
                     else Tase2Name(Scope.VCC, "", name.item))
            users = [p for p in peers if p.table.domain == t.domain] if name.scope is NameScope.DOMAIN else [ctx]
            if any(p.engine.uses(tname) for p in users):
                log.info("peer %s: data set %s in use by an enabled transfer set: not deleted", t.peer, name)
                continue
            store = ctx.data_sets if name.scope is NameScope.ASSOCIATION else self._domain_sets[t.domain]
            del store[name.item]
            deleted += 1
        return DeleteResult(matched, deleted)

    def get_named_variable_list_attributes(self, ctx: _Peer, name: ObjectName) -> ListAttributes:
        ds = self._data_set(ctx, name)
        if ds is None:
            raise MmsServiceError(ErrorClass.ACCESS, 2, f"peer {ctx.table.peer!r}: no data set {name}")
        return ListAttributes(ds.variables, deletable=True)

    # ------------------------------------------------------------------------------------------- reports
    def _on_source_changes(self, changes: Sequence[SourceChange]) -> None:
        """From the source's thread: hand over to the loop."""
        try:
            self.mms.loop.call_soon_threadsafe(self._apply_changes, changes)
        except (RuntimeError, IccpError):  # the server is stopping
            pass

    def _apply_changes(self, changes: Sequence[SourceChange]) -> None:
        now = time.time()
        with self._lock:
            peers = list(self._peers)
        for ctx in peers:
            if not ctx.open:
                continue
            entries = [(bp.name, c.value) for c in changes for bp in ctx.by_point.get(c.point, ())]
            if entries and ctx.engine.on_changes(entries, now):
                self._schedule(ctx)

    def _schedule(self, ctx: _Peer) -> None:
        if ctx.timer is not None:
            ctx.timer.cancel()
            ctx.timer = None
        if not ctx.open:
            return
        deadline = ctx.engine.next_deadline()
        if deadline is None:
            return
        ctx.deadline_s = deadline
        ctx.timer = self.mms.loop.call_later(max(0.0, deadline - time.time()), self._tick, ctx)

    def _tick(self, ctx: _Peer) -> None:
        ctx.timer = None
        if not ctx.open:
            return
        now = max(time.time(), ctx.deadline_s)  # a timer may fire a hair early
        try:
            for report in ctx.engine.due(now):
                self._send(ctx, report)
        except Exception:  # noqa: BLE001 - a failed report must not stop the timer chain
            log.exception("peer %s: sending reports failed", ctx.table.peer)
        self._schedule(ctx)

    def _send(self, ctx: _Peer, report: PendingReport) -> None:
        if not ctx.open or not ctx.handle.is_open:
            return
        t = ctx.table
        now = time.time()
        if ctx.engine.expired(report, now):
            return
        header = TransferReportHeader(Tase2Name(Scope.ICC, t.domain, report.transfer_set), int(now),
                                      report.conditions).encode(t.flags_layout)
        now_ms = int(now * 1000)
        bps = [self._member_point(t, e.member) for e in report.entries]
        fetched = iter(self.source.values([bp.point for bp, e in zip(bps, report.entries, strict=True)
                                           if e.value is None and bp is not None]))
        results: list[AccessResult] = []
        for bp, e in zip(bps, report.entries, strict=True):
            if bp is None:
                results.append(DataAccessCode.OBJECT_NON_EXISTENT)
                continue
            v = e.value if e.value is not None else next(fetched)
            results.append(self._encode(t, bp, v, now_ms))
        ds = self._data_set_of(ctx, report.data_set)
        limit = (ctx.handle.info.max_pdu_size_bytes if ctx.handle.info is not None else 65000) - _PDU_MARGIN_BYTES
        if self.report_shape is ReportShape.NAMED_LIST and report.whole and ds is not None:
            by_member = dict(zip((e.member for e in report.entries), results, strict=True))
            ordered = [header[m] if m in header else by_member.get(m, DataAccessCode.OBJECT_NON_EXISTENT)
                       for m in ds.members]
            if len(ordered) < _SIZE_CHECK_MEMBERS or len(
                    codec.encode_information_report(VariableAccess(list_name=ds.name), ordered)) <= limit:
                ctx.handle.send_information_report(ds.name, ordered)
                self._count(ctx, len(results))
                return
            log.warning("peer %s: report of %s exceeds the PDU size: sent as variable lists", t.peer, ds.name)
        head = [VariableSpec(ObjectName.in_domain(t.domain, h)) for h in HEADER_NAMES]
        head_values: list[AccessResult] = [header[h] for h in HEADER_NAMES]
        variables = [VariableSpec(self._member_name(t, bp, e.member)) for bp, e in
                     zip(bps, report.entries, strict=True)]
        parts = 1
        # split a report the peer's PDU size cannot take (header in each part); encode to measure only when a
        # generous per-member bound says it might not fit
        bound = sum(len(e.member) + len(t.domain) + _MEMBER_BOUND_BYTES for e in report.entries) + 200
        if len(variables) >= _SIZE_CHECK_MEMBERS and bound > limit:
            size = len(codec.encode_information_report(VariableAccess(tuple(head + variables)), head_values + results))
            parts = -(-size // limit) + (1 if size > limit else 0)
        step = -(-len(variables) // parts) if variables else 0
        for k in range(0, max(len(variables), 1), max(step, 1)):
            ctx.handle.send_information_report(head + variables[k:k + step], head_values + results[k:k + step])
        self._count(ctx, len(results))

    def _count(self, ctx: _Peer, values: int) -> None:
        ctx.reports += 1
        self.stats.reports += 1
        self.stats.report_values += values

    def _data_set_of(self, ctx: _Peer, name: Tase2Name) -> _DataSet | None:
        if name.scope is Scope.ICC and name.domain == ctx.table.domain:
            return self._domain_sets[ctx.table.domain].get(name.name) or ctx.data_sets.get(name.name)
        return ctx.data_sets.get(name.name)

    @staticmethod
    def _member_point(t: BilateralTable, member: str) -> BilateralPoint | None:
        return t.point(member) or t.point(member, Scope.VCC)

    @staticmethod
    def _member_name(t: BilateralTable, bp: BilateralPoint | None, member: str) -> ObjectName:
        if bp is not None and bp.scope is Scope.VCC:
            return ObjectName.vcc(member)
        return ObjectName.in_domain(t.domain, member)
