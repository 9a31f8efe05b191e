"""SCL (IEC 61850-6) for the project: data model, parser, writer, and generation from a point list.

``scl_for_rtu(config, rtu)`` is the one place that decides an IED's SCL: the file of ``iec61850.scl`` when given,
else the SCL generated from the RTU's points — so the simulator and the MMS client build from the same text.
``export_rtu_scl`` writes it to a file (``dscada model export-scl``). Nothing here imports a protocol library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from models.points import ControlMode
from models.protocols.iec61850 import CONTROL_CDC, DO_CDC_OF_TYPE, VALUE_ATTRIBUTE, VALUE_FC
from models.scl.generator import generate_scl, split_ln_name
from models.scl.model import (
    CtlModel,
    DaDef,
    DataSet,
    DoType,
    Fcda,
    Ied,
    LDevice,
    LNode,
    ObjectInfo,
    ReportControl,
    SclDocument,
    SclError,
)
from models.scl.parser import load_scl, parse_scl
from models.scl.writer import save_scl, write_scl

if TYPE_CHECKING:
    from collections.abc import Sequence

    from models.config import RtuConfig, StationConfig
    from models.points import PointDef


def scl_for_rtu(config: StationConfig, rtu: RtuConfig) -> SclDocument:
    """The SCL of an IEC 61850 RTU: its ``iec61850.scl`` file, or generated from its points."""
    return scl_for_points(rtu, config.points_of_rtu(rtu.name))


def scl_for_points(rtu: RtuConfig, points: Sequence[PointDef]) -> SclDocument:
    """As ``scl_for_rtu`` from the RTU's own point list (what the simulator holds)."""
    if rtu.iec61850.scl:
        return load_scl(rtu.iec61850.scl)
    period_s = rtu.iec61850.integrity_period_s or rtu.gi_period_s
    return generate_scl(rtu.ied_name, points, integrity_period_ms=round(period_s * 1000))


def check_points_in_scl(config: StationConfig, rtu: RtuConfig, doc: SclDocument) -> None:
    """SclError naming the SCL file, the RTU and the point when a point's reference (or control reference) is not
    in the IED's SCL, names a data object of a class that does not fit the point (``DO_CDC_OF_TYPE``,
    ``CONTROL_CDC``), lacks the value/q/t the client reads, or has a ``ctlModel`` the control mode cannot drive."""
    check_point_list(rtu, config.points_of_rtu(rtu.name), doc)


def check_point_list(rtu: RtuConfig, points: Sequence[PointDef], doc: SclDocument) -> None:
    """As ``check_points_in_scl`` for an explicit point list (what a simulator holds)."""
    ied = doc.ied(rtu.ied_name)
    where = f"{doc.source}: IED {ied.name!r}"
    for p in points:
        try:
            if p.source.reference:
                info = doc.resolve(ied, p.source.reference)
                _fits(where, info, f"a {p.source.type_id} point", DO_CDC_OF_TYPE.get(p.source.type_id, frozenset()))
                fc, want = VALUE_FC[p.source.type_id], VALUE_ATTRIBUTE[p.source.type_id]
                have = {a.name for a in info.do_type.attributes(fc)}
                missing = [a for a in (want, "q", "t") if a not in have]
                if missing:
                    raise SclError(f"{where}: {p.source.reference} ({info.do_type.id}) has "
                                   f"no {'/'.join(missing)} with FC {fc}")
            if p.control is not None and p.control.reference:
                cdc = CONTROL_CDC[p.control.type]
                info = doc.resolve(ied, p.control.reference)
                _fits(where, info, f"a {p.control.type.value} control", frozenset({cdc}))
                model = info.do_type.ctl_model()
                if _declares_ctl_model(info.do_type) and model not in _MODELS_OF_MODE[p.control.mode]:
                    raise SclError(f"{where}: {p.control.reference} ({info.do_type.id}) has "
                                   f"ctlModel {model.value}, which a {p.control.mode.value} control cannot drive")
        except SclError as exc:
            raise SclError(f"RTU {rtu.name!r}, point {p.name!r}: {exc}") from None


def _fits(where: str, info: ObjectInfo, what: str, cdcs: frozenset[str]) -> None:
    if info.da is not None:
        raise SclError(f"{where}: {info.reference} names the attribute {info.da.name!r}, not a data object")
    if info.do_type.cdc not in cdcs:
        raise SclError(f"{where}: {info.reference} is a {info.do_type.cdc} ({info.do_type.id}); {what} needs "
                       f"{' or '.join(sorted(cdcs))}")


def _declares_ctl_model(dot: DoType) -> bool:
    return any(d.name == "ctlModel" and d.value for d in dot.das)


_MODELS_OF_MODE = {
    ControlMode.DIRECT: frozenset({CtlModel.DIRECT_NORMAL, CtlModel.DIRECT_ENHANCED}),
    ControlMode.SELECT_BEFORE_OPERATE: frozenset({CtlModel.SBO_NORMAL}),
    ControlMode.SBO_ENHANCED: frozenset({CtlModel.SBO_ENHANCED}),
}


def export_rtu_scl(config: StationConfig, rtu_name: str, path: str | Path) -> Path:
    """Write the SCL of IEC 61850 RTU ``rtu_name`` to ``path`` (CLI: ``dscada model export-scl``)."""
    rtu = config.rtu(rtu_name)
    if rtu.protocol.value != "iec61850":
        raise SclError(f"RTU {rtu_name!r} speaks {rtu.protocol.value}, not iec61850: it has no SCL")
    return save_scl(scl_for_rtu(config, rtu), path)


__all__ = [
    "CtlModel", "DaDef", "DataSet", "DoType", "Fcda", "Ied", "LDevice", "LNode", "ObjectInfo", "ReportControl",
    "SclDocument", "SclError", "check_point_list", "check_points_in_scl", "export_rtu_scl", "generate_scl",
    "load_scl", "parse_scl", "save_scl", "scl_for_points", "scl_for_rtu", "split_ln_name", "write_scl",
]
