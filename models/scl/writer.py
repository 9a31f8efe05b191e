"""Write an ``SclDocument`` as SCL XML (edition 2 schema header); ``parse_scl(write_scl(doc))`` gives ``doc`` back."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from models.scl.model import DaDef, LNode, SclDocument
from models.scl.parser import SCL_NS


def _bool(v: bool) -> str:
    return "true" if v else "false"


def _da(parent: ET.Element, tag: str, d: DaDef) -> None:
    attrs = {"name": d.name, "bType": d.btype}
    if d.fc:
        attrs["fc"] = d.fc
    if d.type:
        attrs["type"] = d.type
    if d.dchg:
        attrs["dchg"] = "true"
    if d.qchg:
        attrs["qchg"] = "true"
    el = ET.SubElement(parent, tag, attrs)
    if d.value:
        ET.SubElement(el, "Val").text = d.value


def _ln(parent: ET.Element, ln: LNode, ld_inst: str) -> None:
    tag = "LN0" if ln.ln_class == "LLN0" else "LN"
    attrs = {"lnClass": ln.ln_class, "inst": ln.inst, "lnType": ln.ln_type}
    if ln.prefix:
        attrs["prefix"] = ln.prefix
    el = ET.SubElement(parent, tag, attrs)
    for ds in ln.datasets:
        ds_el = ET.SubElement(el, "DataSet", {"name": ds.name})
        for f in ds.fcdas:
            fa = {"ldInst": f.ld_inst, "prefix": f.prefix, "lnClass": f.ln_class, "lnInst": f.ln_inst,
                  "doName": f.do_name, "fc": f.fc}
            if f.da_name:
                fa["daName"] = f.da_name
            ET.SubElement(ds_el, "FCDA", fa)
    for rc in ln.report_controls:
        rc_el = ET.SubElement(el, "ReportControl", {
            "name": rc.name, "datSet": rc.dataset, "rptID": rc.rpt_id, "buffered": _bool(rc.buffered),
            "confRev": str(rc.conf_rev), "bufTime": str(rc.buf_time_ms), "intgPd": str(rc.intg_pd_ms)})
        ET.SubElement(rc_el, "TrgOps", {"dchg": _bool(rc.dchg), "qchg": _bool(rc.qchg), "dupd": _bool(rc.dupd),
                                        "period": _bool(rc.period), "gi": _bool(rc.gi)})
        ET.SubElement(rc_el, "OptFields", {"seqNum": "true", "timeStamp": "true", "dataSet": "true",
                                           "reasonCode": "true", "entryID": "true", "configRef": "true",
                                           "bufOvfl": "true"})
        ET.SubElement(rc_el, "RptEnabled", {"max": "1"})


def write_scl(doc: SclDocument) -> str:
    root = ET.Element("SCL", {"version": "2007", "revision": "B", "xmlns": SCL_NS})
    ET.SubElement(root, "Header", {"id": doc.ieds[0].name if doc.ieds else "dscada", "toolID": "dscada"})
    for ied in doc.ieds:
        ied_el = ET.SubElement(root, "IED", {"name": ied.name, "manufacturer": "dscada"})
        server = ET.SubElement(ET.SubElement(ied_el, "AccessPoint", {"name": "AP1"}), "Server")
        ET.SubElement(server, "Authentication")
        for ld in ied.ldevices:
            ld_el = ET.SubElement(server, "LDevice", {"inst": ld.inst})
            for ln in ld.lns:
                _ln(ld_el, ln, ld.inst)
    tpl = ET.SubElement(root, "DataTypeTemplates")
    for lnt in doc.lnode_types:
        el = ET.SubElement(tpl, "LNodeType", {"id": lnt.id, "lnClass": lnt.ln_class})
        for d in lnt.dos:
            ET.SubElement(el, "DO", {"name": d.name, "type": d.type})
    for dot in doc.do_types:
        el = ET.SubElement(tpl, "DOType", {"id": dot.id, "cdc": dot.cdc})
        for s in dot.sdos:
            ET.SubElement(el, "SDO", {"name": s.name, "type": s.type})
        for da in dot.das:
            _da(el, "DA", da)
    for dat in doc.da_types:
        el = ET.SubElement(tpl, "DAType", {"id": dat.id})
        for b in dat.bdas:
            _da(el, "BDA", b)
    for en in doc.enum_types:
        el = ET.SubElement(tpl, "EnumType", {"id": en.id})
        for ord_, text in en.values:
            ET.SubElement(el, "EnumVal", {"ord": str(ord_)}).text = text
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode", xml_declaration=False)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"


def save_scl(doc: SclDocument, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(write_scl(doc), encoding="utf-8")
    return path
