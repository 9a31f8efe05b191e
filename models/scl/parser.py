"""Read an SCL file (ICD/CID/SCD, any edition) into ``SclDocument``; every error names the file and the line.

``xml.parsers.expat`` is used directly (the ElementTree front end drops line numbers); namespaces are stripped, so
SCL 2003/2007 files read alike. Private extensions (other namespaces' elements) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

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

SCL_NS = "http://www.iec.ch/61850/2003/SCL"


@dataclass(slots=True)
class _El:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_El] = field(default_factory=list)
    text: str = ""

    def all(self, tag: str) -> list[_El]:
        return [c for c in self.children if c.tag == tag]

    def first(self, tag: str) -> _El | None:
        return next((c for c in self.children if c.tag == tag), None)


def _tree(data: bytes, source: str) -> _El:
    stack: list[_El] = []
    root: list[_El] = []
    p = expat.ParserCreate(namespace_separator="}")

    def start(name: str, attrs: dict[str, str]) -> None:
        ns, _, local = name.rpartition("}")
        el = _El(local if ns in ("", SCL_NS) else f"{{{ns}}}{local}", attrs, p.CurrentLineNumber)
        if stack:
            stack[-1].children.append(el)
        else:
            root.append(el)
        stack.append(el)

    def end(name: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        if stack:
            stack[-1].text += text

    p.StartElementHandler, p.EndElementHandler, p.CharacterDataHandler = start, end, chars
    try:
        p.Parse(data, True)
    except expat.ExpatError as exc:
        raise SclError(f"{source}:{exc.lineno}: not well-formed XML: {expat.ErrorString(exc.code)}") from None
    if not root or root[0].tag != "SCL":
        raise SclError(f"{source}:1: the root element is not <SCL>")
    return root[0]


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, el: _El, problem: str) -> SclError:
        return SclError(f"{self.source}:{el.line}: <{el.tag}>: {problem}")

    def req(self, el: _El, key: str) -> str:
        v = el.attrs.get(key, "")
        if not v:
            raise self.fail(el, f"attribute {key!r} is required")
        return v

    def flag(self, el: _El, key: str, default: bool) -> bool:
        v = el.attrs.get(key)
        if v is None:
            return default
        if v not in ("true", "false", "1", "0"):
            raise self.fail(el, f"attribute {key}={v!r} is not a boolean")
        return v in ("true", "1")

    def integer(self, el: _El, key: str, default: int) -> int:
        v = el.attrs.get(key)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise self.fail(el, f"attribute {key}={v!r} is not an integer") from None

    def da(self, el: _El, *, bda: bool) -> DaDef:
        val = el.first("Val")
        value = val.text.strip() if val is not None else ""
        name = self.req(el, "name")
        if name == "ctlModel" and value:
            try:
                CtlModel(value)
            except ValueError:
                raise self.fail(el, f"ctlModel value {value!r} is not a control model") from None
        return DaDef(name=name, btype=self.req(el, "bType"), fc="" if bda else self.req(el, "fc"),
                     type=el.attrs.get("type", ""), dchg=self.flag(el, "dchg", False),
                     qchg=self.flag(el, "qchg", False), value=value, line=el.line)

    def fcda(self, el: _El, ld_default: str) -> Fcda:
        return Fcda(ld_inst=el.attrs.get("ldInst", ld_default), ln_class=self.req(el, "lnClass"),
                    fc=self.req(el, "fc"), do_name=self.req(el, "doName"), prefix=el.attrs.get("prefix", ""),
                    ln_inst=el.attrs.get("lnInst", ""), da_name=el.attrs.get("daName", ""), line=el.line)

    def ln(self, el: _El, ld_inst: str) -> LNode:
        datasets = []
        for ds in el.all("DataSet"):
            datasets.append(DataSet(self.req(ds, "name"), tuple(self.fcda(f, ld_inst) for f in ds.all("FCDA")),
                                    ds.line))
        rcs = []
        for rc in el.all("ReportControl"):
            trg = rc.first("TrgOps")
            t = trg if trg is not None else _El("TrgOps", {}, rc.line)
            rcs.append(ReportControl(
                name=self.req(rc, "name"), dataset=rc.attrs.get("datSet", ""),
                rpt_id=rc.attrs.get("rptID", ""), buffered=self.flag(rc, "buffered", False),
                conf_rev=self.integer(rc, "confRev", 1), buf_time_ms=self.integer(rc, "bufTime", 0),
                intg_pd_ms=self.integer(rc, "intgPd", 0), dchg=self.flag(t, "dchg", False),
                qchg=self.flag(t, "qchg", False), dupd=self.flag(t, "dupd", False),
                period=self.flag(t, "period", False), gi=self.flag(t, "gi", True), line=rc.line))
        names = {d.name for d in datasets}
        for rc_def in rcs:
            if rc_def.dataset and rc_def.dataset not in names:
                raise SclError(f"{self.source}:{rc_def.line}: <ReportControl> {rc_def.name!r}: data set "
                               f"{rc_def.dataset!r} is not defined in this logical node")
        return LNode(ln_class=self.req(el, "lnClass"), ln_type=self.req(el, "lnType"),
                     inst=el.attrs.get("inst", ""), prefix=el.attrs.get("prefix", ""), datasets=tuple(datasets),
                     report_controls=tuple(rcs), line=el.line)


def parse_scl(data: bytes | str, source: str = "<scl>") -> SclDocument:
    """Parse SCL text; SclError naming ``source`` and the line on any problem (incl. dangling type ids)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    root = _tree(raw, source)
    r = _Reader(source)
    ieds = []
    for ied_el in root.all("IED"):
        lds = []
        for ap in ied_el.all("AccessPoint"):
            server = ap.first("Server")
            for ld_el in server.all("LDevice") if server is not None else []:
                inst = r.req(ld_el, "inst")
                lns = [r.ln(n, inst) for n in ld_el.children if n.tag in ("LN0", "LN")]
                if not lns or ld_el.first("LN0") is None:
                    raise r.fail(ld_el, f"logical device {inst!r} has no LN0")
                lds.append(LDevice(inst, tuple(lns), ld_el.line))
        ieds.append(Ied(r.req(ied_el, "name"), tuple(lds), ied_el.line))
    lnts, dots, dats, enums = [], [], [], []
    tpl = root.first("DataTypeTemplates")
    if tpl is not None:
        for el in tpl.all("LNodeType"):
            lnts.append(LNodeType(r.req(el, "id"), r.req(el, "lnClass"),
                                  tuple(DoDef(r.req(d, "name"), r.req(d, "type"), d.line) for d in el.all("DO")),
                                  el.line))
        for el in tpl.all("DOType"):
            dots.append(DoType(r.req(el, "id"), r.req(el, "cdc"), tuple(r.da(d, bda=False) for d in el.all("DA")),
                               tuple(SdoDef(r.req(s, "name"), r.req(s, "type"), s.line) for s in el.all("SDO")),
                               el.line))
        for el in tpl.all("DAType"):
            dats.append(DaType(r.req(el, "id"), tuple(r.da(d, bda=True) for d in el.all("BDA")), el.line))
        for el in tpl.all("EnumType"):
            values = []
            for v in el.all("EnumVal"):
                values.append((r.integer(v, "ord", 0), v.text.strip()))
            enums.append(EnumType(r.req(el, "id"), tuple(values), el.line))
    doc = SclDocument(tuple(ieds), tuple(lnts), tuple(dots), tuple(dats), tuple(enums), source=source)
    _check_types(doc)
    return doc


def _check_types(doc: SclDocument) -> None:
    """Every type id used must be defined, and each id defined once."""
    src = doc.source
    for kind, items in (("LNodeType", doc.lnode_types), ("DOType", doc.do_types), ("DAType", doc.da_types),
                        ("EnumType", doc.enum_types)):
        seen: dict[str, int] = {}
        for t in items:
            if t.id in seen:
                raise SclError(f"{src}:{t.line}: <{kind}> id {t.id!r} is defined twice (also line {seen[t.id]})")
            seen[t.id] = t.line
    for ied in doc.ieds:
        for ld in ied.ldevices:
            for ln in ld.lns:
                if doc.lnode_type(ln.ln_type) is None:
                    raise SclError(f"{src}:{ln.line}: LN {ln.name!r} in {ied.name}/{ld.inst}: lnType "
                                   f"{ln.ln_type!r} is not defined in DataTypeTemplates")
    for lnt in doc.lnode_types:
        for d in lnt.dos:
            if doc.do_type(d.type) is None:
                raise SclError(f"{src}:{d.line}: DO {d.name!r} of LNodeType {lnt.id!r}: DOType {d.type!r} is not "
                               f"defined")
    for dot in doc.do_types:
        for s in dot.sdos:
            if doc.do_type(s.type) is None:
                raise SclError(f"{src}:{s.line}: SDO {s.name!r} of DOType {dot.id!r}: DOType {s.type!r} is not "
                               f"defined")
        for da in dot.das:
            if da.btype == "Struct" and doc.da_type(da.type) is None:
                raise SclError(f"{src}:{da.line}: DA {da.name!r} of DOType {dot.id!r}: DAType {da.type!r} is not "
                               f"defined")


def load_scl(path: str | Path) -> SclDocument:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SclError(f"{path}: cannot read SCL file: {exc.strerror}") from None
    return parse_scl(data, str(path))
