"""Streaming reader of CIM RDF/XML into plain objects (class, id, literal values, references).

Only the standard library: ``xml.etree.ElementTree.iterparse`` with each top-level element cleared once read, so a
feeder of tens of MB never sits in memory as a tree. Identifiers are normalised so ``rdf:about="urn:uuid:X"``,
``rdf:ID="_X"`` and ``rdf:resource="#_X"`` all name ``X``. Enumeration references (``rdf:resource`` pointing into the
CIM namespace, e.g. ``...CIM100#SinglePhaseKind.A``) are literal values ``"SinglePhaseKind.A"``, not references.
"""

from __future__ import annotations

import gzip
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from models.cim.errors import CimError, CimProblem

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
CIM_NS_PREFIX = "http://iec.ch/TC57/"  # CIM16, CIM17, CIM100 ... all live under this

_ABOUT = f"{{{RDF_NS}}}about"
_ID = f"{{{RDF_NS}}}ID"
_RESOURCE = f"{{{RDF_NS}}}resource"
_RDF_ROOT = f"{{{RDF_NS}}}RDF"


@dataclass(frozen=True, slots=True)
class CimObject:
    """One RDF description: ``values`` keyed ``Class.property`` (literals and enum names), ``refs`` the same
    for references to other objects (a property may repeat, hence tuples)."""

    cim_class: str
    mrid: str
    values: Mapping[str, str]
    refs: Mapping[str, tuple[str, ...]]

    @property
    def name(self) -> str:
        return self.values.get("IdentifiedObject.name", "")

    def ref(self, prop: str) -> str | None:
        targets = self.refs.get(prop)
        return targets[0] if targets else None


@dataclass(frozen=True, slots=True)
class CimGraph:
    """Everything read from one file: objects by id and by class, and problems found while reading."""

    source: str
    objects: Mapping[str, CimObject]
    by_class: Mapping[str, tuple[CimObject, ...]]
    problems: tuple[CimProblem, ...]
    foreign_counts: Mapping[str, int]  # top-level elements outside the CIM namespace, by qualified tag

    def of(self, cim_class: str) -> tuple[CimObject, ...]:
        return self.by_class.get(cim_class, ())

    def class_counts(self) -> dict[str, int]:
        return {cls: len(objs) for cls, objs in sorted(self.by_class.items())}


def normalise_id(raw: str) -> str:
    """``urn:uuid:X`` / ``#_X`` / ``_X`` / ``#X`` -> ``X`` so references match definitions however written."""
    text = raw.strip()
    if text.lower().startswith("urn:uuid:"):
        text = text[9:]
    if text.startswith("#"):
        text = text[1:]
    if text.startswith("_"):
        text = text[1:]
    return text


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def read_rdf(path: str | Path) -> CimGraph:
    """Read a CIM RDF/XML file (gzip-compressed when its name ends in ``.gz``). Raises CimError for a file that
    cannot be read or is not well-formed XML; duplicate identifiers and objects without an identifier are returned as
    ``problems`` for the caller to raise with its own."""
    source = str(path)
    objects: dict[str, CimObject] = {}
    by_class: dict[str, list[CimObject]] = {}
    problems: list[CimProblem] = []
    foreign: Counter[str] = Counter()
    depth = 0
    root_tag = ""
    try:
        stream = gzip.open(source) if source.endswith(".gz") else source
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                depth += 1
                if depth == 1:
                    root_tag = elem.tag
                continue
            depth -= 1
            if depth != 1:
                continue
            ns, local = _split_tag(elem.tag)
            if not ns.startswith(CIM_NS_PREFIX):
                foreign[f"{{{ns}}}{local}" if ns else local] += 1
                elem.clear()
                continue
            obj = _object_of(local, elem)
            elem.clear()  # keep memory flat: the root never accumulates children
            if obj is None:
                problems.append(CimProblem(local, "?", "", "has neither rdf:about, rdf:ID nor IdentifiedObject.mRID"))
                continue
            previous = objects.get(obj.mrid)
            if previous is not None:
                problems.append(CimProblem(local, obj.mrid, obj.name,
                                           f"duplicate mRID: also defined as {previous.cim_class} {previous.name!r}"))
                continue
            objects[obj.mrid] = obj
            by_class.setdefault(local, []).append(obj)
    except FileNotFoundError as exc:
        raise CimError(source, (CimProblem("file", source, "", "does not exist"),)) from exc
    except (OSError, EOFError) as exc:  # EOFError: a truncated .gz
        raise CimError(source, (CimProblem("file", source, "", f"cannot be read: {exc}"),)) from exc
    except ET.ParseError as exc:
        row, col = exc.position
        raise CimError(source, (CimProblem("file", source, "", f"not well-formed XML at line {row} column {col}"),)) \
            from exc
    if root_tag != _RDF_ROOT:
        raise CimError(source, (CimProblem("file", source, "", f"root element is {root_tag!r}, not rdf:RDF"),))
    return CimGraph(source, objects, {k: tuple(v) for k, v in by_class.items()}, tuple(problems), dict(foreign))


def _object_of(local: str, elem: ET.Element) -> CimObject | None:
    values: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for child in elem:
        _ns, prop = _split_tag(child.tag)
        target = child.get(_RESOURCE)
        if target is None:
            values[prop] = (child.text or "").strip()
        elif target.startswith(CIM_NS_PREFIX):
            values[prop] = target.rsplit("#", 1)[-1]  # enumeration literal, e.g. SinglePhaseKind.A
        else:
            refs.setdefault(prop, []).append(normalise_id(target))
    raw_id = elem.get(_ABOUT) or elem.get(_ID) or values.get("IdentifiedObject.mRID")
    if not raw_id:
        return None
    return CimObject(local, normalise_id(raw_id), values, {k: tuple(v) for k, v in refs.items()})
