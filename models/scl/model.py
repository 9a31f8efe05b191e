"""The SCL data model (IEC 61850-6) as frozen dataclasses: just what the project uses of an ICD/CID/SCD.

An ``SclDocument`` holds IEDs (logical devices, logical nodes, data sets, report control blocks) and the
``DataTypeTemplates`` that give every logical node its data objects and every data object its attributes.
Object references are written ``LDinst/LNname.DO[.SDO]`` (without the IED name, as in the point configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from models.errors import ModelError


class SclError(ModelError):
    """An SCL file is malformed or contradictory; the message names the file, the line and the element."""


class CtlModel(StrEnum):
    """IEC 61850 control models (the ``ctlModel`` enumeration)."""

    STATUS_ONLY = "status-only"
    DIRECT_NORMAL = "direct-with-normal-security"
    SBO_NORMAL = "sbo-with-normal-security"
    DIRECT_ENHANCED = "direct-with-enhanced-security"
    SBO_ENHANCED = "sbo-with-enhanced-security"


@dataclass(frozen=True, slots=True)
class DaDef:
    """A data attribute of a DOType (``<DA>``) or a component of a DAType (``<BDA>``)."""

    name: str
    btype: str  # BOOLEAN, Dbpos, INT32, FLOAT32, Quality, Timestamp, Struct, Enum, ...
    fc: str = ""  # empty for a BDA
    type: str = ""  # DAType id for Struct, EnumType id for Enum
    dchg: bool = False
    qchg: bool = False
    value: str = ""  # <Val>
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class SdoDef:
    name: str
    type: str  # DOType id
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class DoType:
    id: str
    cdc: str
    das: tuple[DaDef, ...] = ()
    sdos: tuple[SdoDef, ...] = ()
    line: int = field(default=0, compare=False)  # source line (0: generated)

    def attributes(self, fc: str) -> tuple[DaDef, ...]:
        """The attributes of functional constraint ``fc`` in SCL order: the order of an MMS structure read with it."""
        return tuple(d for d in self.das if d.fc == fc)

    def ctl_model(self) -> CtlModel:
        for d in self.das:
            if d.name == "ctlModel" and d.value:
                return CtlModel(d.value)
        return CtlModel.STATUS_ONLY


@dataclass(frozen=True, slots=True)
class DaType:
    id: str
    bdas: tuple[DaDef, ...]
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class EnumType:
    id: str
    values: tuple[tuple[int, str], ...]
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class DoDef:
    name: str
    type: str  # DOType id
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class LNodeType:
    id: str
    ln_class: str
    dos: tuple[DoDef, ...]
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class Fcda:
    """One member of a data set: a data object (``do_name`` may hold ``DO.SDO``) or attribute with its FC."""

    ld_inst: str
    ln_class: str
    fc: str
    do_name: str
    prefix: str = ""
    ln_inst: str = ""
    da_name: str = ""
    line: int = field(default=0, compare=False)  # source line (0: generated)

    @property
    def ln_name(self) -> str:
        return f"{self.prefix}{self.ln_class}{self.ln_inst}"

    @property
    def reference(self) -> str:
        """``LDinst/LN.DO[.SDO][.DA]``: the point reference this member carries."""
        tail = f".{self.da_name}" if self.da_name else ""
        return f"{self.ld_inst}/{self.ln_name}.{self.do_name}{tail}"


@dataclass(frozen=True, slots=True)
class DataSet:
    name: str
    fcdas: tuple[Fcda, ...]
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class ReportControl:
    name: str
    dataset: str
    rpt_id: str
    buffered: bool
    conf_rev: int = 1
    buf_time_ms: int = 0
    intg_pd_ms: int = 0
    dchg: bool = True
    qchg: bool = True
    dupd: bool = False
    period: bool = True
    gi: bool = True
    line: int = field(default=0, compare=False)  # source line (0: generated)


@dataclass(frozen=True, slots=True)
class LNode:
    ln_class: str
    ln_type: str  # LNodeType id
    inst: str = ""
    prefix: str = ""
    datasets: tuple[DataSet, ...] = ()  # only in LN0 by the standard; accepted anywhere
    report_controls: tuple[ReportControl, ...] = ()
    line: int = field(default=0, compare=False)  # source line (0: generated)

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.ln_class}{self.inst}"


@dataclass(frozen=True, slots=True)
class LDevice:
    inst: str
    lns: tuple[LNode, ...]  # LN0 first
    line: int = field(default=0, compare=False)  # source line (0: generated)

    def ln(self, name: str) -> LNode | None:
        return next((n for n in self.lns if n.name == name), None)


@dataclass(frozen=True, slots=True)
class Ied:
    name: str
    ldevices: tuple[LDevice, ...]
    line: int = field(default=0, compare=False)  # source line (0: generated)

    def ldevice(self, inst: str) -> LDevice | None:
        return next((d for d in self.ldevices if d.inst == inst), None)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a reference names: the data object's type and, for a DA reference, the attribute."""

    reference: str
    do_type: DoType
    da: DaDef | None = None


@dataclass(frozen=True, slots=True)
class SclDocument:
    ieds: tuple[Ied, ...]
    lnode_types: tuple[LNodeType, ...] = ()
    do_types: tuple[DoType, ...] = ()
    da_types: tuple[DaType, ...] = ()
    enum_types: tuple[EnumType, ...] = ()
    source: str = "<scl>"
    _index: dict[str, dict[str, object]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update(
            lnode={t.id: t for t in self.lnode_types}, do={t.id: t for t in self.do_types},
            da={t.id: t for t in self.da_types}, enum={t.id: t for t in self.enum_types})

    def ied(self, name: str) -> Ied:
        for i in self.ieds:
            if i.name == name:
                return i
        names = ", ".join(i.name for i in self.ieds) or "none"
        raise SclError(f"{self.source}: no IED named {name!r} (the file has: {names})")

    def lnode_type(self, id_: str) -> LNodeType | None:
        return self._index["lnode"].get(id_)  # type: ignore[return-value]

    def do_type(self, id_: str) -> DoType | None:
        return self._index["do"].get(id_)  # type: ignore[return-value]

    def da_type(self, id_: str) -> DaType | None:
        return self._index["da"].get(id_)  # type: ignore[return-value]

    def resolve(self, ied: Ied, reference: str) -> ObjectInfo:
        """The data object (and attribute) ``LDinst/LN.DO[.SDO][.DA]`` names in ``ied``; SclError if none."""
        where = f"{self.source}: IED {ied.name!r}: reference {reference!r}"
        ld_inst, _, rest = reference.partition("/")
        parts = rest.split(".")
        ld = ied.ldevice(ld_inst)
        if ld is None or len(parts) < 2:
            raise SclError(f"{where}: no logical device {ld_inst!r}")
        ln = ld.ln(parts[0])
        if ln is None:
            raise SclError(f"{where}: no logical node {parts[0]!r} in {ld_inst}")
        lnt = self.lnode_type(ln.ln_type)
        if lnt is None:
            raise SclError(f"{where}: LNodeType {ln.ln_type!r} is not defined")
        do = next((d for d in lnt.dos if d.name == parts[1]), None)
        if do is None:
            raise SclError(f"{where}: {parts[0]} has no data object {parts[1]!r}")
        dot = self.do_type(do.type)
        if dot is None:
            raise SclError(f"{where}: DOType {do.type!r} is not defined")
        for i, name in enumerate(parts[2:], start=2):
            sdo = next((s for s in dot.sdos if s.name == name), None)
            if sdo is not None:
                sub = self.do_type(sdo.type)
                if sub is None:
                    raise SclError(f"{where}: DOType {sdo.type!r} is not defined")
                dot = sub
                continue
            da = next((d for d in dot.das if d.name == name), None)
            if da is None or i != len(parts) - 1:
                raise SclError(f"{where}: {'.'.join(parts[:i])} has no sub-object or attribute {name!r}")
            return ObjectInfo(reference, dot, da)
        return ObjectInfo(reference, dot)

    def datasets(self, ied: Ied) -> list[tuple[LDevice, LNode, DataSet]]:
        return [(ld, ln, ds) for ld in ied.ldevices for ln in ld.lns for ds in ln.datasets]

    def report_controls(self, ied: Ied) -> list[tuple[LDevice, LNode, ReportControl]]:
        return [(ld, ln, rc) for ld in ied.ldevices for ln in ld.lns for rc in ln.report_controls]
