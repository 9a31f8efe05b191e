"""One simulated IEC 61850 IED (protection IED role) on libiec61850's IedServer: the protocol side of
``rtu_sim.outstation.Outstation``.

The server's data model is built in code from the project's SCL (``models.scl.scl_for_points``: the IED's file or
the one generated from its points) with ``IedModel_create``/``LogicalDevice_create``/``CDC_*_create``/
``DataSet_create``/``ReportControlBlock_create``; one IedServer per configured address. Commands arrive on
libiec61850's thread through ``ControlSubscriberForPython`` handlers: the select (and the check of an operate) asks
``check_command``, the operate ``execute_command``; a refusal carries an AddCause (Blocked-by-process when blocked,
Blocked-by-switching-hierarchy in local). Status changes go out as reports through ``_report`` under
``IedServer_lockDataModel``.

Hazards of the binding, contained here:
- destroying handler objects or servers can crash, so every library object is kept referenced for the life of the
  process (``_KEEP``), and at interpreter exit they are leaked on purpose (one extra reference each) so finalisation
  never destroys them: without that a process that ever served an IED ends with a segmentation fault;
- control subscribers are registered by object reference process-wide, and a later subscription of the same
  reference may reach the first one's handlers. So the handlers only dispatch through ``_ROUTES`` (reference -> the
  live outstation and slot), which every new outstation updates: a simulator built after another in one process
  (tests, restarts) gets its own commands. Two live IEDs with one IED name in one process are refused.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import pyiec61850.pyiec61850 as iec

from models.config import RtuConfig, SimProfile
from models.points import ControlType, DoubleState, PointDef, PointKind, Quality
from models.protocols.iec61850 import SUPPORTED_QUALITY, VALUE_ATTRIBUTE, quality_to_61850
from models.scl import CtlModel, DoType, Ied, LNode, SclDocument, SclError, check_point_list, scl_for_points
from models.updates import Cause
from rtu_sim.errors import SimulatorError
from rtu_sim.outstation import CommandAnswer, Outstation, SharedResources, Slot

log = logging.getLogger(__name__)

#: Library objects that must outlive every caller (the binding crashes when some of them are destroyed).
_KEEP: list[Any] = []
_IED_NAMES: set[str] = set()  # IED names of the live outstations of this process
_ROUTES: dict[str, tuple[Outstation61850, Slot]] = {}  # "<ied><ref>" of a control -> who handles it now


def _native_library() -> ctypes.CDLL:
    """libiec61850 itself, for the calls that may wait for a lock its own threads hold while they call back into
    Python: through ctypes they release the GIL while waiting; through the SWIG binding they would keep it, and the
    library thread running a control handler would wait for the GIL forever (a deadlock seen here under load)."""
    import glob
    import os

    found = glob.glob(os.path.join(os.path.dirname(iec.__file__), "..", "pyiec61850_ng.libs", "libiec61850*.so*"))
    if not found:
        raise SimulatorError("libiec61850 shared library of pyiec61850-ng not found next to the binding")
    lib = ctypes.CDLL(found[0])
    for name in ("IedServer_lockDataModel", "IedServer_unlockDataModel", "IedServer_stop"):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = [ctypes.c_void_p], None
    return lib


_NATIVE = _native_library()


@atexit.register
def _leak_library_objects() -> None:
    for obj in _KEEP:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))

_CTL = {CtlModel.STATUS_ONLY: 0, CtlModel.DIRECT_NORMAL: iec.CDC_CTL_MODEL_DIRECT_NORMAL,
        CtlModel.SBO_NORMAL: iec.CDC_CTL_MODEL_SBO_NORMAL | iec.CDC_CTL_MODEL_HAS_CANCEL,
        CtlModel.DIRECT_ENHANCED: iec.CDC_CTL_MODEL_DIRECT_ENHANCED,
        CtlModel.SBO_ENHANCED: iec.CDC_CTL_MODEL_SBO_ENHANCED | iec.CDC_CTL_MODEL_HAS_CANCEL}
_REFUSAL = {CommandAnswer.BLOCKED: (iec.CONTROL_OBJECT_ACCESS_DENIED, iec.ADD_CAUSE_BLOCKED_BY_PROCESS),
            CommandAnswer.LOCAL: (iec.CONTROL_OBJECT_ACCESS_DENIED, iec.ADD_CAUSE_BLOCKED_BY_SWITCHING_HIERARCHY),
            CommandAnswer.INVALID: (iec.CONTROL_VALUE_INVALID, iec.ADD_CAUSE_INCONSISTENT_PARAMETERS)}


def _mn(x: Any) -> Any:
    return iec.toModelNode(x)


def _create_do(doc: SclDocument, parent: Any, name: str, dot: DoType) -> None:
    """One data object as libiec61850 builds its common data class (the generator writes the same attributes)."""
    cdc = dot.cdc
    if cdc == "SPS":
        iec.CDC_SPS_create(name, parent, 0)
    elif cdc == "DPS":
        iec.CDC_DPS_create(name, parent, 0)
    elif cdc == "INS":
        iec.CDC_INS_create(name, parent, 0)
    elif cdc == "ENS":
        iec.CDC_ENS_create(name, parent, 0)
    elif cdc == "BCR":
        iec.CDC_BCR_create(name, parent, 0)
    elif cdc == "MV":
        iec.CDC_MV_create(name, parent, 0, False)
    elif cdc == "CMV":
        iec.CDC_CMV_create(name, parent, 0)
    elif cdc == "WYE":
        iec.CDC_WYE_create(name, parent, 0)
    elif cdc == "SPC":
        iec.CDC_SPC_create(name, parent, 0, _CTL[dot.ctl_model()])
    elif cdc == "DPC":
        iec.CDC_DPC_create(name, parent, 0, _CTL[dot.ctl_model()])
    elif cdc == "APC":
        iec.CDC_APC_create(name, parent, 0, _CTL[dot.ctl_model()], False)
    elif dot.sdos:
        container = _mn(iec.DataObject_create(name, parent, 0))
        for sdo in dot.sdos:
            sub = doc.do_type(sdo.type)
            if sub is not None:
                _create_do(doc, container, sdo.name, sub)
    else:
        log.debug("data object %s of CDC %s is not simulated", name, cdc)


def _build_model(doc: SclDocument, ied: Ied) -> Any:
    model = iec.IedModel_create(ied.name)
    for ld in ied.ldevices:
        ld_obj = iec.LogicalDevice_create(ld.inst, model)
        lln0: Any = None
        for ln in ld.lns:
            ln_obj = iec.LogicalNode_create(ln.name, ld_obj)
            if ln.ln_class == "LLN0":
                lln0 = ln_obj
            lnt = doc.lnode_type(ln.ln_type)
            assert lnt is not None  # the parser checked every type id
            for d in lnt.dos:
                dot = doc.do_type(d.type)
                assert dot is not None
                _create_do(doc, _mn(ln_obj), d.name, dot)
        for ln in ld.lns:
            _add_datasets(ln, lln0 if ln.ln_class == "LLN0" else None, ld.inst)
    return model


def _add_datasets(ln: LNode, ln_obj: Any, ld_inst: str) -> None:
    if ln_obj is None:
        return
    all_opts = (iec.RPT_OPT_SEQ_NUM | iec.RPT_OPT_TIME_STAMP | iec.RPT_OPT_REASON_FOR_INCLUSION
                | iec.RPT_OPT_DATA_SET | iec.RPT_OPT_ENTRY_ID | iec.RPT_OPT_BUFFER_OVERFLOW | iec.RPT_OPT_CONF_REV)
    for ds in ln.datasets:
        ds_obj = iec.DataSet_create(ds.name, ln_obj)
        for f in ds.fcdas:
            var = f"{f.ln_name}${f.fc}${f.do_name.replace('.', '$')}"
            if f.da_name:
                var += "$" + f.da_name.replace(".", "$")
            if f.ld_inst != ld_inst:
                var = f"{f.ld_inst}/{var}"
            iec.DataSetEntry_create(ds_obj, var, -1, None)
    for rc in ln.report_controls:
        trg = ((iec.TRG_OPT_DATA_CHANGED if rc.dchg else 0) | (iec.TRG_OPT_QUALITY_CHANGED if rc.qchg else 0)
               | (iec.TRG_OPT_DATA_UPDATE if rc.dupd else 0) | (iec.TRG_OPT_INTEGRITY if rc.period else 0)
               | (iec.TRG_OPT_GI if rc.gi else 0))
        iec.ReportControlBlock_create(rc.name, ln_obj, rc.rpt_id or None, rc.buffered, rc.dataset, rc.conf_rev, trg,
                                      all_opts, rc.buf_time_ms, rc.intg_pd_ms)


class _Attrs:
    """The model attributes one point writes on one server."""

    __slots__ = ("value", "q", "t", "kind")

    def __init__(self, value: Any, q: Any, t: Any, kind: str) -> None:
        self.value, self.q, self.t, self.kind = value, q, t, kind


class Outstation61850(Outstation):
    """One IED of the station configuration served by libiec61850 on every one of its addresses."""

    def __init__(self, rtu: RtuConfig, points: Sequence[PointDef], sims: Sequence[SimProfile], *,
                 rng: random.Random, shared: SharedResources | None = None, max_queue: int = 200_000) -> None:
        super().__init__(rtu, points, sims, rng=rng, shared=shared, max_queue=max_queue)
        name = rtu.ied_name
        if name in _IED_NAMES:
            raise SimulatorError(f"RTU {rtu.name!r}: IED name {name!r} is already served in this process "
                                 f"(IEC 61850 controls are registered by object reference: give each IED its own "
                                 f"iec61850.ied_name)")
        self._ied_name = name
        try:
            doc = scl_for_points(rtu, points)
            ied = doc.ied(name)
            check_point_list(rtu, points, doc)
        except SclError as exc:
            raise SimulatorError(f"RTU {rtu.name!r}: {exc}") from None
        self._servers: list[Any] = []
        self._models: list[Any] = []
        self._ts = iec.Timestamp_create()
        _KEEP.append(self._ts)
        for _address in rtu.addresses:
            model = _build_model(doc, ied)
            # IedServer_createWithConfig needs a TLS configuration (None is refused): the defaults serve 5
            # associations (the MMS client takes 1 + 1 per report control block) and a 64 kB BRCB buffer
            server = iec.IedServer_create(model)
            _KEEP.extend((model, server))
            self._models.append(model)
            self._servers.append(server)
            for s in self.slots:
                s.handles.append(self._attrs(s, model, name) if s.monitored else None)
            for s in self.slots:
                if s.point.control is not None:
                    self._subscribe_control(s, server, model, name)
        _IED_NAMES.add(name)
        self._store_all()

    # ------------------------------------------------------------------------------------------- building

    def _node(self, model: Any, ied: str, ref: str, p: PointDef) -> Any:
        node = iec.IedModel_getModelNodeByObjectReference(model, f"{ied}{ref}")
        if node is None:
            raise SimulatorError(f"RTU {self.name!r} point {p.name!r}: {ied}{ref} is not in the IED's data model "
                                 f"(CDC not simulated?)")
        return node

    def _attrs(self, s: Slot, model: Any, ied: str) -> _Attrs:
        p = s.point
        cdc = p.source.type_id
        base = p.source.reference
        attr = VALUE_ATTRIBUTE[cdc]
        path = {"mag": "mag.f", "cVal": "cVal.mag.f", "mxVal": "mxVal.f"}.get(attr, attr)
        kind = {"SPS": "bool", "SPC": "bool", "DPS": "dbpos", "DPC": "dbpos", "INS": "int32", "BCR": "int64"}.get(
            cdc, "float")
        da = iec.toDataAttribute(self._node(model, ied, f"{base}.{path}", p))
        q = iec.toDataAttribute(self._node(model, ied, f"{base}.q", p))
        t = iec.toDataAttribute(self._node(model, ied, f"{base}.t", p))
        return _Attrs(da, q, t, kind)

    def _subscribe_control(self, s: Slot, server: Any, model: Any, ied: str) -> None:
        p = s.point
        assert p.control is not None
        node = self._node(model, ied, p.control.reference, p)
        key = f"{ied}{p.control.reference}"
        _ROUTES[key] = (self, s)

        class Check(iec.CheckHandlerForPython):  # type: ignore[misc]
            def trigger(self) -> None:
                try:
                    route = _ROUTES.get(key)
                    if route is None:  # the outstation was closed
                        self._libiec61850_check_handler_result = iec.CONTROL_HARDWARE_FAULT
                        return
                    outstation, slot = route
                    answer = outstation.check_command(slot)
                    if answer is CommandAnswer.ACCEPTED:
                        self._libiec61850_check_handler_result = iec.CONTROL_ACCEPTED
                        return
                    result, cause = _REFUSAL[answer]
                    iec.ControlAction_setAddCause(self._libiec61850_control_action, cause)
                    self._libiec61850_check_handler_result = result
                except Exception:  # never let an exception into the library's thread
                    log.exception("IEC 61850 control %s: check failed", key)
                    self._libiec61850_check_handler_result = iec.CONTROL_HARDWARE_FAULT

        class Operate(iec.ControlHandlerForPython):  # type: ignore[misc]
            def trigger(self) -> None:
                route = _ROUTES.get(key)
                try:
                    if route is None:
                        self._libiec61850_control_handler_result = iec.CONTROL_RESULT_FAILED
                        return
                    outstation, slot = route
                    value = outstation._command_value(slot, self._libiec61850_mms_value)
                    answer = outstation.execute_command(slot, value)
                    if answer is CommandAnswer.ACCEPTED:
                        self._libiec61850_control_handler_result = iec.CONTROL_RESULT_OK
                        return
                    iec.ControlAction_setAddCause(self._libiec61850_control_action, _REFUSAL[answer][1])
                    self._libiec61850_control_handler_result = iec.CONTROL_RESULT_FAILED
                except Exception:
                    log.exception("IEC 61850 control %s: operate failed", key)
                    if route is not None:
                        route[0].count_refused()
                    self._libiec61850_control_handler_result = iec.CONTROL_RESULT_FAILED

        sub = iec.ControlSubscriberForPython()
        sub.setIedServer(server)
        sub.setControlObject(iec.toDataObject(node))
        check, operate = Check(), Operate()
        sub.setCheckHandler(check)
        sub.setControlHandler(operate)
        sub.subscribe()  # the library may route this reference to an earlier subscription: _ROUTES decides
        _KEEP.extend((sub, check, operate))

    def _command_value(self, s: Slot, mms: Any) -> float:
        ctype = s.point.control.type if s.point.control else ControlType.SINGLE
        kind = iec.MmsValue_getType(mms)
        if ctype is ControlType.DOUBLE:
            return float(DoubleState.ON if iec.MmsValue_getBoolean(mms) else DoubleState.OFF)
        if ctype is ControlType.SINGLE:
            return 1.0 if iec.MmsValue_getBoolean(mms) else 0.0
        if kind == iec.MMS_STRUCTURE:
            mms = iec.MmsValue_getElement(mms, 0)
            kind = iec.MmsValue_getType(mms)
        return float(iec.MmsValue_toFloat(mms) if kind == iec.MMS_FLOAT else iec.MmsValue_toInt64(mms))

    # ------------------------------------------------------------------------------------------- protocol hooks

    @classmethod
    def supported_quality(cls, kind: PointKind) -> Quality:
        return SUPPORTED_QUALITY

    def _start_link(self, index: int, timeout_s: float) -> None:
        server = self._servers[index]
        host, _, port = self.rtu.addresses[index].rpartition(":")
        iec.IedServer_setLocalIpAddress(server, host)
        iec.IedServer_start(server, int(port))
        deadline = time.monotonic() + timeout_s
        while not iec.IedServer_isRunning(server):
            if time.monotonic() > deadline:
                raise SimulatorError(f"RTU {self.name!r}: IEC 61850 server on {self.rtu.addresses[index]} did not "
                                     f"start within {timeout_s} s (port in use?)")
            time.sleep(0.01)

    def _stop_link(self, index: int) -> None:
        _NATIVE.IedServer_stop(int(self._servers[index]))  # joins the server thread: without the GIL (see _NATIVE)

    def _report(self, s: Slot, value: float, quality: Quality, time_ms: int, cause: Cause, links: list[int]
                ) -> list[int]:
        for i in links:
            self._write(s, value, quality, time_ms, i)
        return list(links)

    def _store(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        # 61850 has no "static only" write: a change of a data-set member is reported (a stopped server's BRCB
        # buffers it, so a master resuming with its entry ID gets it)
        self._write(s, value, quality, time_ms, link)

    def _write(self, s: Slot, value: float, quality: Quality, time_ms: int, link: int) -> None:
        a: _Attrs | None = s.handles[link]
        if a is None:
            return
        p = s.point
        server = self._servers[link]
        iec.Timestamp_clearFlags(self._ts)
        iec.Timestamp_setTimeInMilliseconds(self._ts, max(0, time_ms))
        iec.Timestamp_setClockNotSynchronized(self._ts, bool(quality & Quality.TIME_INVALID))
        _NATIVE.IedServer_lockDataModel(int(server))  # waits without the GIL (see _native_library)
        try:
            if a.kind == "bool":
                iec.IedServer_updateBooleanAttributeValue(server, a.value, bool(value))
            elif a.kind == "dbpos":
                iec.IedServer_updateDbposValue(server, a.value, int(value) & 3)
            elif a.kind == "int32":
                iec.IedServer_updateInt32AttributeValue(server, a.value, round((value - p.offset) / p.scale))
            elif a.kind == "int64":
                iec.IedServer_updateInt64AttributeValue(server, a.value, round((value - p.offset) / p.scale))
            else:
                iec.IedServer_updateFloatAttributeValue(server, a.value, (value - p.offset) / p.scale)
            iec.IedServer_updateQuality(server, a.q, quality_to_61850(quality))
            iec.IedServer_updateTimestampAttributeValue(server, a.t, self._ts)
        finally:
            _NATIVE.IedServer_unlockDataModel(int(server))

    def _dispose(self) -> None:
        for s in self.slots:
            s.handles.clear()
        for key in [k for k, (o, _) in _ROUTES.items() if o is self]:
            del _ROUTES[key]
        _IED_NAMES.discard(self._ied_name)
        # the servers, models and handlers stay referenced in _KEEP: destroying them can crash the process

    def _client_count(self) -> int:
        return sum(iec.IedServer_getNumberOfOpenConnections(srv)
                   for srv, up in zip(self._servers, self._running, strict=True) if up)
