"""SCL (IEC 61850-6) for the project: data model, parser, writer, and generation from a point list.

``scl_for_rtu(config, rtu)`` is the one place that decides an IED's SCL: the file of ``iec61850.scl`` when given,
else the SCL generated from the RTU's points — so the simulator and the MMS client build from the same text.
``export_rtu_scl`` writes it to a file (``dscada model export-scl``). Nothing here imports a protocol library.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
    """SclError naming the point when a point's reference (or control reference) is not in the IED's SCL."""
    ied = doc.ied(rtu.ied_name)
    for p in config.points_of_rtu(rtu.name):
        for ref in ([p.source.reference] if p.source.reference else []) + (
                [p.control.reference] if p.control is not None and p.control.reference else []):
            try:
                doc.resolve(ied, ref)
            except SclError as exc:
                raise SclError(f"point {p.name!r} of RTU {rtu.name!r}: {exc}") from None


def export_rtu_scl(config: StationConfig, rtu_name: str, path: str | Path) -> Path:
    """Write the SCL of IEC 61850 RTU ``rtu_name`` to ``path`` (CLI: ``dscada model export-scl``)."""
    rtu = config.rtu(rtu_name)
    if rtu.protocol.value != "iec61850":
        raise SclError(f"RTU {rtu_name!r} speaks {rtu.protocol.value}, not iec61850: it has no SCL")
    return save_scl(scl_for_rtu(config, rtu), path)


__all__ = [
    "CtlModel", "DaDef", "DataSet", "DoType", "Fcda", "Ied", "LDevice", "LNode", "ObjectInfo", "ReportControl",
    "SclDocument", "SclError", "check_points_in_scl", "export_rtu_scl", "generate_scl", "load_scl", "parse_scl",
    "save_scl", "scl_for_points", "scl_for_rtu", "split_ln_name", "write_scl",
]
