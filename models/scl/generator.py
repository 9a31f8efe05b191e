"""Generate an IED's SCL from its RTU's point list (when ``iec61850.scl`` is empty).

Each point reference ``LDinst/LN.DO`` or ``LDinst/LN.DO.phsX`` becomes a logical node with that data object; the
common data class is the point's ``type`` (SPS/SPC/DPS/DPC/INS/BCR/MV/CMV/APC), a control adds a controllable
object (SPC/DPC/APC) with its control model. Sub-objects of WYE (``phsA``...) give a WYE with its six CMVs, the way
libiec61850 builds one. Per logical device, LLN0 holds a data set per kind — ``Status`` (FC ST) and
``Measurements`` (FC MX) — each with a buffered and an unbuffered report control block (``brcb``/``urcb`` + name).

The attribute lists in ``DataTypeTemplates`` follow the order libiec61850's ``CDC_*_create`` builds, which is the
order of the MMS structures on the wire (the simulator checks it when it builds its server).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from models.points import ControlDef, ControlMode, ControlType, PointDef, PointKind
from models.scl.model import (
    CtlModel,
    DaDef,
    DataSet,
    DaType,
    DoDef,
    DoType,
    EnumType,
    Fcda,
    Ied,
    LDevice,
    LNode,
    LNodeType,
    ReportControl,
    SclDocument,
    SclError,
    SdoDef,
)

WYE_PARTS = ("phsA", "phsB", "phsC", "neut", "net", "res")
LN_NAME_RE = re.compile(r"([A-Za-z0-9_]*?)([A-Z]{4})(\d*)")
DATASET_FC = {"Status": "ST", "Measurements": "MX"}
_MX_CDC = frozenset({"MV", "CMV", "APC"})
_CTL_OF_MODE = {ControlMode.DIRECT: CtlModel.DIRECT_NORMAL, ControlMode.SELECT_BEFORE_OPERATE: CtlModel.SBO_NORMAL,
                ControlMode.SBO_ENHANCED: CtlModel.SBO_ENHANCED}
_CTL_CDC = {ControlType.SINGLE: "SPC", ControlType.DOUBLE: "DPC", ControlType.SETPOINT_FLOAT: "APC",
            ControlType.SETPOINT_SCALED: "APC"}
_SHORT = {CtlModel.STATUS_ONLY: "status", CtlModel.DIRECT_NORMAL: "direct", CtlModel.SBO_NORMAL: "sbo",
          CtlModel.DIRECT_ENHANCED: "direct_enh", CtlModel.SBO_ENHANCED: "sbo_enh"}

_ST = (DaDef("q", "Quality", "ST", qchg=True), DaDef("t", "Timestamp", "ST"))
_MX = (DaDef("q", "Quality", "MX", qchg=True), DaDef("t", "Timestamp", "MX"))
_PLAIN: dict[str, tuple[DaDef, ...]] = {
    "SPS": (DaDef("stVal", "BOOLEAN", "ST", dchg=True), *_ST),
    "DPS": (DaDef("stVal", "Dbpos", "ST", dchg=True), *_ST),
    "INS": (DaDef("stVal", "INT32", "ST", dchg=True), *_ST),
    "BCR": (DaDef("actVal", "INT64", "ST", dchg=True), *_ST, DaDef("pulsQty", "FLOAT32", "CF")),
    "MV": (DaDef("mag", "Struct", "MX", "AnalogueValue", dchg=True), *_MX),
    "CMV": (DaDef("cVal", "Struct", "MX", "Vector", dchg=True), *_MX),
}
_CONTROLLABLE: dict[str, tuple[DaDef, ...]] = {
    "SPC": (DaDef("stVal", "BOOLEAN", "ST", dchg=True), *_ST),
    "DPC": (DaDef("stVal", "Dbpos", "ST", dchg=True), *_ST),
    "APC": (DaDef("mxVal", "Struct", "MX", "AnalogueValue", dchg=True), *_MX),
}
_OPERATE = {"SPC": "SPCOperate", "DPC": "SPCOperate", "APC": "APCOperate"}


def _operate_type(id_: str, ctl_val: DaDef, *, cancel: bool) -> DaType:
    bdas = [ctl_val, DaDef("origin", "Struct", type="Originator"), DaDef("ctlNum", "INT8U"),
            DaDef("T", "Timestamp"), DaDef("Test", "BOOLEAN")]
    if not cancel:
        bdas.append(DaDef("Check", "Check"))
    return DaType(id_, tuple(bdas))


_DA_TYPES = (
    DaType("AnalogueValue", (DaDef("f", "FLOAT32"),)),
    DaType("Vector", (DaDef("mag", "Struct", type="AnalogueValue"),)),
    DaType("Originator", (DaDef("orCat", "Enum", type="orCategory"), DaDef("orIdent", "Octet64"))),
    _operate_type("SPCOperate", DaDef("ctlVal", "BOOLEAN"), cancel=False),
    _operate_type("SPCCancel", DaDef("ctlVal", "BOOLEAN"), cancel=True),
    _operate_type("APCOperate", DaDef("ctlVal", "Struct", type="AnalogueValue"), cancel=False),
    _operate_type("APCCancel", DaDef("ctlVal", "Struct", type="AnalogueValue"), cancel=True),
)
_ENUM_TYPES = (
    EnumType("CtlModels", tuple(enumerate(m.value for m in CtlModel))),
    EnumType("orCategory", tuple(enumerate((
        "not-supported", "bay-control", "station-control", "remote-control", "automatic-bay", "automatic-station",
        "automatic-remote", "maintenance", "process")))),
)


def control_do_type(cdc: str, model: CtlModel) -> DoType:
    """A controllable DOType (SPC/DPC/APC) with the attributes libiec61850 builds for ``model``."""
    das = list(_CONTROLLABLE[cdc]) + [DaDef("ctlModel", "Enum", "CF", "CtlModels", value=model.value)]
    op = _OPERATE[cdc]
    cancel = op.replace("Operate", "Cancel")
    if model is CtlModel.SBO_NORMAL:
        das.append(DaDef("SBO", "VisString65", "CO"))
    elif model is CtlModel.SBO_ENHANCED:
        das.append(DaDef("SBOw", "Struct", "CO", op))
    if model is not CtlModel.STATUS_ONLY:
        das.append(DaDef("Oper", "Struct", "CO", op))
    if model in (CtlModel.SBO_NORMAL, CtlModel.SBO_ENHANCED):
        das.append(DaDef("Cancel", "Struct", "CO", cancel))
    return DoType(f"{cdc}_{_SHORT[model]}", cdc, tuple(das))


def split_ln_name(name: str) -> tuple[str, str, str]:
    """(prefix, lnClass, inst) of a logical-node name such as ``XCBR1`` or ``Q0XCBR1``."""
    m = LN_NAME_RE.fullmatch(name)
    if m is None:
        raise SclError(f"logical node name {name!r} is not prefix + 4-letter class + instance (e.g. XCBR1)")
    return m.group(1), m.group(2), m.group(3)


def generate_scl(ied_name: str, points: Sequence[PointDef], *, integrity_period_ms: int = 0) -> SclDocument:
    """The SCL of one IED serving ``points`` (the RTU's points, in configuration order)."""
    # (ld, ln) -> {do name: DOType id}; first use decides the order
    lns: dict[str, dict[str, dict[str, str]]] = {}
    do_types: dict[str, DoType] = {}
    members: dict[str, dict[str, list[Fcda]]] = {}  # ld -> data set -> members
    seen_members: set[tuple[str, str]] = set()

    def place(p: PointDef, reference: str, cdc: str, model: CtlModel | None) -> None:
        ld, _, rest = reference.partition("/")
        parts = rest.split(".")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in WYE_PARTS):
            raise SclError(f"point {p.name!r}: reference {reference!r}: a generated SCL takes LN.DO or "
                           f"LN.DO.<{'|'.join(WYE_PARTS)}>; give the IED's SCL file for other shapes")
        try:
            prefix, ln_class, inst = split_ln_name(parts[0])
        except SclError as exc:
            raise SclError(f"point {p.name!r}: {exc}") from None
        if len(parts) == 3:
            if cdc != "CMV":
                raise SclError(f"point {p.name!r}: {reference!r} is a WYE phase, which is a CMV, not {cdc}")
            do_types.setdefault("CMV", DoType("CMV", "CMV", _PLAIN["CMV"]))
            dot = DoType("WYE", "WYE", sdos=tuple(SdoDef(n, "CMV") for n in WYE_PARTS))
        elif model is not None:
            dot = control_do_type(cdc, model)
        elif cdc in _CONTROLLABLE:
            dot = control_do_type(cdc, CtlModel.STATUS_ONLY)
        else:
            dot = DoType(cdc, cdc, _PLAIN[cdc])
        ln = lns.setdefault(ld, {}).setdefault(parts[0], {})
        have = ln.get(parts[1])
        if have is not None and have != dot.id:
            if not (have.startswith(cdc) and model is None):  # a monitor view of a controllable object is fine
                raise SclError(f"point {p.name!r}: {ld}/{parts[0]}.{parts[1]} is already a {have}, not a {dot.id}")
            return
        ln[parts[1]] = dot.id
        do_types[dot.id] = dot
        del prefix, ln_class, inst

    def member(p: PointDef, reference: str, cdc: str) -> None:
        ld, _, rest = reference.partition("/")
        ln_name, _, do_name = rest.partition(".")
        prefix, ln_class, inst = split_ln_name(ln_name)
        ds = "Measurements" if cdc in _MX_CDC else "Status"
        if (ds, reference) in seen_members:
            return
        seen_members.add((ds, reference))
        members.setdefault(ld, {}).setdefault(ds, []).append(
            Fcda(ld, ln_class, DATASET_FC[ds], do_name, prefix=prefix, ln_inst=inst))

    for p in points:
        ctl: ControlDef | None = p.control
        same = ctl is not None and ctl.reference == p.source.reference
        if p.kind is not PointKind.COMMAND:
            cdc = p.source.type_id
            model = _CTL_OF_MODE[ctl.mode] if (same and ctl is not None and cdc in _CONTROLLABLE) else None
            place(p, p.source.reference, cdc, model)
        if ctl is not None and not same:
            place(p, ctl.reference, _CTL_CDC[ctl.type], _CTL_OF_MODE[ctl.mode])
    # data sets after every object is placed: a monitor point of a controllable object reports its status
    for p in points:
        if p.kind is not PointKind.COMMAND:
            member(p, p.source.reference, p.source.type_id)

    lnode_types: list[LNodeType] = []
    ldevices = []
    for ld_inst in sorted(set(lns) | set(members)):
        lln0_type = f"LLN0_{ld_inst}"
        datasets, rcs = [], []
        for ds_name in ("Status", "Measurements"):
            fcdas = members.get(ld_inst, {}).get(ds_name, [])
            if not fcdas:
                continue
            datasets.append(DataSet(ds_name, tuple(fcdas)))
            buf_ms = 0 if ds_name == "Status" else 50  # status at once; measurements gathered briefly
            for buffered in (True, False):
                rcs.append(ReportControl(
                    name=f"{'b' if buffered else 'u'}rcb{ds_name}", dataset=ds_name,
                    rpt_id=f"{ied_name}{ld_inst}_{'b' if buffered else 'u'}{ds_name}", buffered=buffered,
                    buf_time_ms=buf_ms, intg_pd_ms=integrity_period_ms, period=integrity_period_ms > 0))
        ln_nodes = [LNode("LLN0", lln0_type, datasets=tuple(datasets), report_controls=tuple(rcs))]
        lnode_types.append(LNodeType(lln0_type, "LLN0", ()))
        for ln_name, dos in lns.get(ld_inst, {}).items():
            prefix, ln_class, inst = split_ln_name(ln_name)
            type_id = f"{ld_inst}_{ln_name}"
            ln_nodes.append(LNode(ln_class, type_id, inst=inst, prefix=prefix))
            lnode_types.append(LNodeType(type_id, ln_class, tuple(DoDef(n, t) for n, t in dos.items())))
        ldevices.append(LDevice(ld_inst, tuple(ln_nodes)))
    used_da = {"AnalogueValue", "Vector", "Originator", "SPCOperate", "SPCCancel", "APCOperate", "APCCancel"}
    return SclDocument(
        ieds=(Ied(ied_name, tuple(ldevices)),), lnode_types=tuple(lnode_types),
        do_types=tuple(sorted(do_types.values(), key=lambda t: t.id)),
        da_types=tuple(t for t in _DA_TYPES if t.id in used_da), enum_types=_ENUM_TYPES,
        source=f"<generated {ied_name}>")
