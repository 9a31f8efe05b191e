"""IEC 61970-552 CIM difference models: read one, apply it to a base ``CimGraph`` (validated), write one.

A difference model (``dm:DifferenceModel``) holds two sets of RDF statements about objects of a base model:
``dm:reverseDifferences`` are removed from the base (old values, removed objects) and ``dm:forwardDifferences`` are
added (new values, added objects). A typed element (``cim:ACLineSegment rdf:about=...``) adds or removes the object
itself; an ``rdf:Description`` only adds or removes the properties it lists. So a property change is the old value in
reverse plus the new value in forward, and a removal lists the object, typed, in reverse.

Applying is all-or-nothing: every reverse statement must match the base (else the difference is stale, or meant for
another base), a forward value may not land on a property the reverse left in place, an added mRID may not exist
already, and no reference may be left dangling; then the result is rebuilt with ``build_network``, which validates
the network (terminals, impedances, ...). Every problem is collected and raised together as one
``CimDifferenceError``; the base graph is never modified (a new ``CimGraph`` is built).

Also here: ``compare_graphs`` (a full model against the base, as a difference, so a full GIS export gets the same
checks and summary), ``difference_document`` / ``graph_document`` (RDF/XML writers) and ``graph_from_objects``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from models.cim.build import build_network
from models.cim.errors import CimError, CimProblem
from models.cim.rdf import CIM_NS_PREFIX, RDF_NS, CimGraph, CimObject, normalise_id
from models.network import NetworkModel

__all__ = [
    "CIM100_NS",
    "DM_NS",
    "MD_NS",
    "CimDifference",
    "CimDifferenceError",
    "DifferenceHeader",
    "DifferenceSummary",
    "Fragment",
    "ObjectChange",
    "PropertyChange",
    "apply_difference",
    "compare_graphs",
    "difference_document",
    "graph_document",
    "graph_from_objects",
    "parse_difference",
    "read_difference",
]

DM_NS = "http://iec.ch/2002/schema/CIM_difference_model#"
MD_NS = "http://iec.ch/TC57/61970-552/ModelDescription/1#"
CIM100_NS = "http://iec.ch/TC57/CIM100#"

_ABOUT = f"{{{RDF_NS}}}about"
_ID = f"{{{RDF_NS}}}ID"
_RESOURCE = f"{{{RDF_NS}}}resource"
_DESCRIPTION = f"{{{RDF_NS}}}Description"
_TYPE = f"{{{RDF_NS}}}type"
_DIFFERENCE_MODEL = f"{{{DM_NS}}}DifferenceModel"
_FORWARD = f"{{{DM_NS}}}forwardDifferences"
_REVERSE = f"{{{DM_NS}}}reverseDifferences"
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
# Reference properties that may hold several targets; any other property holds one value, so a forward value on a
# property the reverse side did not clear is a conflict rather than a second value.
MULTI_VALUED_REFS = frozenset({"ShortCircuitTest.GroundedEnds"})
# Literal values written back as enumeration references (``rdf:resource`` into the CIM namespace).
_ENUM_LITERAL = re.compile(r"^[A-Z][A-Za-z0-9]*\.[A-Za-z0-9_]+$")


class CimDifferenceError(CimError):
    """A difference model cannot be read or applied; ``problems`` lists every problem, nothing was applied."""


@dataclass(frozen=True, slots=True)
class Fragment:
    """Statements about one object: typed (``cim_class`` set: the object itself is added or removed) or an
    ``rdf:Description`` (``cim_class`` None: only the properties listed)."""

    mrid: str
    cim_class: str | None
    values: Mapping[str, str] = field(default_factory=dict)
    refs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DifferenceHeader:
    mrid: str
    created: str  # md:Model.created, ISO 8601 as written
    description: str
    modeling_authority_set: str = ""


@dataclass(frozen=True, slots=True)
class CimDifference:
    source: str
    header: DifferenceHeader
    forward: tuple[Fragment, ...]
    reverse: tuple[Fragment, ...]


@dataclass(frozen=True, slots=True)
class PropertyChange:
    prop: str
    old: str | None  # None: the property was not set (or, for a reference, had no target)
    new: str | None  # None: removed


@dataclass(frozen=True, slots=True)
class ObjectChange:
    cim_class: str
    mrid: str
    name: str
    changes: tuple[PropertyChange, ...] = ()  # set for changed objects only


@dataclass(frozen=True, slots=True)
class DifferenceSummary:
    source: str
    header: DifferenceHeader
    added: tuple[ObjectChange, ...]
    removed: tuple[ObjectChange, ...]
    changed: tuple[ObjectChange, ...]

    def by_class(self) -> dict[str, dict[str, int]]:
        """``{class: {"added": n, "removed": n, "changed": n}}`` over the classes touched."""
        result: dict[str, dict[str, int]] = {}
        for kind, items in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            for item in items:
                result.setdefault(item.cim_class, {"added": 0, "removed": 0, "changed": 0})[kind] += 1
        return dict(sorted(result.items()))


# ---- reading -------------------------------------------------------------------------------------------------------
def read_difference(path: str | Path) -> CimDifference:
    """Read a difference model file; raises CimDifferenceError when it cannot be read or is malformed."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CimDifferenceError(source, (CimProblem("file", source, "", f"cannot be read: {exc}"),)) from exc
    return parse_difference(data, source)


def parse_difference(data: bytes, source: str = "<difference>") -> CimDifference:
    """Parse a difference model document held in memory."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        row, col = exc.position
        raise CimDifferenceError(source, (CimProblem("file", source, "", f"not well-formed XML at line {row} "
                                                                         f"column {col}"),)) from exc
    models = [root] if root.tag == _DIFFERENCE_MODEL else list(root.iter(_DIFFERENCE_MODEL))
    if len(models) != 1:
        raise CimDifferenceError(source, (CimProblem("file", source, "", f"holds {len(models)} dm:DifferenceModel "
                                                                         "elements, expected exactly one"),))
    dm = models[0]
    problems: list[CimProblem] = []
    header = DifferenceHeader(
        normalise_id(dm.get(_ABOUT) or dm.get(_ID) or ""),
        _text(dm, f"{{{MD_NS}}}Model.created"), _text(dm, f"{{{MD_NS}}}Model.description"),
        _text(dm, f"{{{MD_NS}}}Model.modelingAuthoritySet"))
    sides = []
    for tag in (_FORWARD, _REVERSE):
        found = dm.findall(tag)
        if len(found) > 1:
            problems.append(CimProblem("DifferenceModel", header.mrid, "", f"has {len(found)} {tag} elements"))
        sides.append(tuple(_fragment(e, problems) for holder in found for e in holder))
    if problems:
        raise CimDifferenceError(source, tuple(problems))
    return CimDifference(source, header, tuple(f for f in sides[0] if f is not None),
                         tuple(f for f in sides[1] if f is not None))


def _text(elem: ET.Element, tag: str) -> str:
    child = elem.find(tag)
    return (child.text or "").strip() if child is not None else ""


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _fragment(elem: ET.Element, problems: list[CimProblem]) -> Fragment | None:
    ns, local = _local(elem.tag)
    cim_class: str | None
    if elem.tag == _DESCRIPTION:
        cim_class = None
    elif ns.startswith(CIM_NS_PREFIX):
        cim_class = local
    else:
        problems.append(CimProblem(local, "?", "", f"element {elem.tag} in a difference is neither rdf:Description "
                                                   "nor a CIM class"))
        return None
    raw = elem.get(_ABOUT) or elem.get(_ID)
    if not raw:
        problems.append(CimProblem(cim_class or "Description", "?", "", "has neither rdf:about nor rdf:ID"))
        return None
    mrid = normalise_id(raw)
    values: dict[str, str] = {}
    refs: dict[str, list[str]] = {}
    for child in elem:
        target = child.get(_RESOURCE)
        if child.tag == _TYPE and target is not None:
            cim_class = target.rsplit("#", 1)[-1]  # rdf:type statement inside a Description
            continue
        _ns, prop = _local(child.tag)
        if target is None:
            values[prop] = (child.text or "").strip()
        elif target.startswith(CIM_NS_PREFIX):
            values[prop] = target.rsplit("#", 1)[-1]
        else:
            refs.setdefault(prop, []).append(normalise_id(target))
    declared = values.get("IdentifiedObject.mRID")
    if declared is not None and normalise_id(declared) != mrid:
        problems.append(CimProblem(cim_class or "Description", mrid, values.get("IdentifiedObject.name", ""),
                                   f"IdentifiedObject.mRID {declared!r} differs from its rdf:about"))
    return Fragment(mrid, cim_class, values, {k: tuple(v) for k, v in refs.items()})


# ---- applying ------------------------------------------------------------------------------------------------------
def graph_from_objects(source: str, objects: Iterable[CimObject], *, problems: Sequence[CimProblem] = (),
                       foreign_counts: Mapping[str, int] | None = None) -> CimGraph:
    """A CimGraph from objects in order (the file order ``read_rdf`` keeps); duplicate mRIDs become problems like
    ``read_rdf``'s. Lives here rather than in ``rdf.py`` so the reader stays single-purpose."""
    by_id: dict[str, CimObject] = {}
    by_class: dict[str, list[CimObject]] = {}
    found = list(problems)
    for obj in objects:
        previous = by_id.get(obj.mrid)
        if previous is not None:
            found.append(CimProblem(obj.cim_class, obj.mrid, obj.name,
                                    f"duplicate mRID: also defined as {previous.cim_class} {previous.name!r}"))
            continue
        by_id[obj.mrid] = obj
        by_class.setdefault(obj.cim_class, []).append(obj)
    return CimGraph(source, by_id, {k: tuple(v) for k, v in by_class.items()}, tuple(found),
                    dict(foreign_counts or {}))


def apply_difference(base: CimGraph, difference: str | Path | CimDifference
                     ) -> tuple[CimGraph, NetworkModel, DifferenceSummary]:
    """Apply a difference (file or parsed) to ``base`` and rebuild the network model. Nothing is returned unless the
    whole result validates; otherwise CimDifferenceError lists every problem, naming object and property."""
    diff = difference if isinstance(difference, CimDifference) else read_difference(difference)
    applier = _Applier(base, diff)
    graph, summary = applier.apply()
    try:
        model = build_network(graph)
    except CimError as exc:
        raise CimDifferenceError(f"{diff.source} (not applied: with it {base.source} is no valid network model)",
                                 exc.problems) from exc
    return graph, model, summary


@dataclass(slots=True)
class _Working:
    """A mutable copy of one object being changed."""

    cim_class: str
    mrid: str
    values: dict[str, str]
    refs: dict[str, list[str]]
    changes: list[PropertyChange] = field(default_factory=list)

    @classmethod
    def of(cls, obj: CimObject) -> _Working:
        return cls(obj.cim_class, obj.mrid, dict(obj.values), {k: list(v) for k, v in obj.refs.items()})

    @property
    def name(self) -> str:
        return self.values.get("IdentifiedObject.name", "")

    def frozen(self) -> CimObject:
        return CimObject(self.cim_class, self.mrid, dict(self.values),
                         {k: tuple(v) for k, v in self.refs.items() if v})


def _same_literal(a: str, b: str) -> bool:
    """CIM literals compare by meaning: ``True``/``true``/``1``, ``40000`` / ``40000.0``."""
    if a == b:
        return True
    la, lb = a.strip().lower(), b.strip().lower()
    if la in _BOOLEANS and lb in _BOOLEANS:
        return _BOOLEANS[la] == _BOOLEANS[lb]
    try:
        fa, fb = float(a), float(b)
    except ValueError:
        return False
    return fa == fb or (math.isnan(fa) and math.isnan(fb))


class _Applier:
    def __init__(self, base: CimGraph, diff: CimDifference) -> None:
        self.base = base
        self.diff = diff
        self.problems: list[CimProblem] = []
        self.touched: dict[str, _Working] = {}  # base objects changed (alive)
        self.removed: dict[str, CimObject] = {}
        self.added: dict[str, _Working] = {}
        self.refused: set[tuple[str, str]] = set()  # (mrid, prop) whose reverse failed: no second problem in forward

    def problem(self, cim_class: str | None, mrid: str, name: str, message: str) -> None:
        self.problems.append(CimProblem(cim_class or "Description", mrid, name, message))

    def alive(self, mrid: str) -> _Working | None:
        """The working copy of an object present after the reverse pass (base or added), made on first touch."""
        if mrid in self.added:
            return self.added[mrid]
        if mrid in self.removed or mrid not in self.base.objects:
            return None
        work = self.touched.get(mrid)
        if work is None:
            work = self.touched[mrid] = _Working.of(self.base.objects[mrid])
        return work

    def apply(self) -> tuple[CimGraph, DifferenceSummary]:
        for frag in self.diff.reverse:
            self._reverse(frag)
        typed = [f for f in self.diff.forward if f.cim_class is not None]
        for frag in typed:
            self._add(frag)
        for frag in self.diff.forward:
            if frag.cim_class is None:
                self._forward(frag)
        self._check_references()
        if self.problems:
            raise CimDifferenceError(f"{self.diff.source} (not applied to {self.base.source})", tuple(self.problems))
        return self._graph(), self._summary()

    def _reverse(self, frag: Fragment) -> None:
        obj = self.base.objects.get(frag.mrid)
        name = frag.values.get("IdentifiedObject.name", "")
        if obj is None or frag.mrid in self.removed:
            state = "is not in the base model" if obj is None else "is already removed by this difference"
            self.problem(frag.cim_class, frag.mrid, name, f"reverse differences refer to it but it {state} "
                                                          "(stale difference or another base model)")
            return
        if frag.cim_class is not None and frag.cim_class != obj.cim_class:
            self.problem(frag.cim_class, frag.mrid, obj.name, f"reverse differences remove it as {frag.cim_class} "
                                                              f"but the base model has it as {obj.cim_class}")
            return
        work = self.alive(frag.mrid)
        assert work is not None  # present in base and not removed
        for prop, old in frag.values.items():
            current = work.values.get(prop)
            if current is None:
                self.problem(obj.cim_class, obj.mrid, obj.name, f"reverse value of {prop} is {old!r} but the base "
                                                                f"model has no {prop} (stale difference)")
                self.refused.add((obj.mrid, prop))
            elif not _same_literal(current, old):
                self.problem(obj.cim_class, obj.mrid, obj.name, f"reverse value of {prop} is {old!r} but the base "
                                                                f"model has {current!r} (stale difference)")
                self.refused.add((obj.mrid, prop))
            else:
                del work.values[prop]
                work.changes.append(PropertyChange(prop, current, None))
        for prop, targets in frag.refs.items():
            current_refs = work.refs.get(prop, [])
            for target in targets:
                if target not in current_refs:
                    held = ", ".join(current_refs) or "nothing"
                    self.problem(obj.cim_class, obj.mrid, obj.name, f"reverse value of {prop} is {target} but the "
                                                                    f"base model has {held} (stale difference)")
                    self.refused.add((obj.mrid, prop))
                else:
                    current_refs.remove(target)
                    work.changes.append(PropertyChange(prop, target, None))
        if frag.cim_class is not None:
            self.removed[frag.mrid] = obj
            del self.touched[frag.mrid]

    def _add(self, frag: Fragment) -> None:
        name = frag.values.get("IdentifiedObject.name", "")
        existing = self.added.get(frag.mrid)
        if existing is not None:
            self.problem(frag.cim_class, frag.mrid, name, f"added twice by the forward differences (duplicate mRID; "
                                                          f"first as {existing.cim_class} {existing.name!r})")
            return
        base_obj = self.base.objects.get(frag.mrid)
        if base_obj is not None and frag.mrid not in self.removed:
            self.problem(frag.cim_class, frag.mrid, name, f"forward differences add it but the base model already "
                                                          f"has {base_obj.cim_class} {base_obj.name!r} with this "
                                                          "mRID (duplicate mRID)")
            return
        assert frag.cim_class is not None
        self.added[frag.mrid] = _Working(frag.cim_class, frag.mrid, dict(frag.values),
                                         {k: list(v) for k, v in frag.refs.items()})

    def _forward(self, frag: Fragment) -> None:
        work = self.alive(frag.mrid)
        if work is None:
            self.problem(None, frag.mrid, frag.values.get("IdentifiedObject.name", ""),
                         "forward differences change it but it is neither in the base model nor added by the "
                         "difference")
            return
        for prop, new in frag.values.items():
            current = work.values.get(prop)
            if (work.mrid, prop) in self.refused:
                continue
            if current is not None:
                self.problem(work.cim_class, work.mrid, work.name, f"forward value of {prop} is {new!r} but the "
                                                                   f"old value {current!r} is not in the reverse "
                                                                   "differences")
                continue
            work.values[prop] = new
            work.changes.append(PropertyChange(prop, None, new))
        for prop, targets in frag.refs.items():
            current_refs = work.refs.setdefault(prop, [])
            if (work.mrid, prop) in self.refused:
                continue
            if current_refs and prop not in MULTI_VALUED_REFS:
                self.problem(work.cim_class, work.mrid, work.name, f"forward value of {prop} is {targets[0]} but "
                                                                   f"the old value {current_refs[0]} is not in the "
                                                                   "reverse differences")
                continue
            current_refs.extend(targets)
            work.changes.extend(PropertyChange(prop, None, t) for t in targets)

    def _exists(self, mrid: str) -> bool:
        return mrid in self.added or (mrid in self.base.objects and mrid not in self.removed)

    def _check_references(self) -> None:
        """References the difference brings in must resolve; references into removed objects must not remain.
        References the base already left unresolved (objects of other models) are not the difference's business."""
        for work in self.added.values():
            for prop, targets in work.refs.items():
                for target in targets:
                    if not self._exists(target):
                        self._dangling(work, prop, target)
        for work in self.touched.values():
            for prop, targets in work.refs.items():
                for target in targets:
                    if not self._exists(target) and (target in self.removed
                                                     or PropertyChange(prop, None, target) in work.changes):
                        self._dangling(work, prop, target)
        if not self.removed:
            return
        for obj in self.base.objects.values():
            if obj.mrid in self.removed or obj.mrid in self.touched:
                continue
            for prop, targets in obj.refs.items():
                for target in targets:
                    if target in self.removed and not self._exists(target):
                        self._dangling(_Working.of(obj), prop, target)

    def _dangling(self, work: _Working, prop: str, target: str) -> None:
        why = ("which the difference removes" if target in self.removed
               else "which is neither in the base model nor added by the difference")
        self.problem(work.cim_class, work.mrid, work.name, f"{prop} refers to {target}, {why} (dangling reference)")

    def _graph(self) -> CimGraph:
        objects: list[CimObject] = []
        for mrid, obj in self.base.objects.items():
            if mrid in self.removed:
                continue
            work = self.touched.get(mrid)
            objects.append(work.frozen() if work is not None else obj)
        objects.extend(w.frozen() for w in self.added.values())
        source = f"{self.base.source} + {Path(self.diff.source).name}"
        return graph_from_objects(source, objects, problems=self.base.problems,
                                  foreign_counts=self.base.foreign_counts)

    def _summary(self) -> DifferenceSummary:
        changed = []
        for work in self.touched.values():
            merged = _merge_changes(work.changes)
            if merged:
                changed.append(ObjectChange(work.cim_class, work.mrid, work.name, merged))
        return DifferenceSummary(
            self.diff.source, self.diff.header,
            tuple(ObjectChange(w.cim_class, w.mrid, w.name) for w in self.added.values()),
            tuple(ObjectChange(o.cim_class, o.mrid, o.name) for o in self.removed.values()),
            tuple(changed))


def _merge_changes(changes: list[PropertyChange]) -> tuple[PropertyChange, ...]:
    """Removal then addition of one property -> one change old -> new; a value put back unchanged is dropped."""
    merged: dict[str, PropertyChange] = {}
    for ch in changes:
        prev = merged.get(ch.prop)
        if prev is None:
            merged[ch.prop] = ch
        else:
            merged[ch.prop] = PropertyChange(ch.prop, prev.old if prev.old is not None else ch.old,
                                             ch.new if ch.new is not None else prev.new)
    return tuple(c for c in merged.values()
                 if not (c.old is not None and c.new is not None and _same_literal(c.old, c.new)))


def compare_graphs(base: CimGraph, new: CimGraph, header: DifferenceHeader) -> CimDifference:
    """The difference that turns ``base`` into ``new`` (e.g. a full GIS export against the model in service), so a
    full model can be checked and summarised like an incremental one. Literals equal by meaning are not changes."""
    forward: list[Fragment] = []
    reverse: list[Fragment] = []
    for mrid, old in base.objects.items():
        now = new.objects.get(mrid)
        if now is None or now.cim_class != old.cim_class:
            reverse.append(Fragment(mrid, old.cim_class, dict(old.values), dict(old.refs)))
            continue
        gone = {k: v for k, v in old.values.items() if k not in now.values or not _same_literal(v, now.values[k])}
        came = {k: v for k, v in now.values.items() if k not in old.values or not _same_literal(v, old.values[k])}
        refs_gone = {k: v for k, v in old.refs.items() if tuple(now.refs.get(k, ())) != tuple(v)}
        refs_came = {k: v for k, v in now.refs.items() if tuple(old.refs.get(k, ())) != tuple(v)}
        if gone or refs_gone:
            reverse.append(Fragment(mrid, None, gone, refs_gone))
        if came or refs_came:
            forward.append(Fragment(mrid, None, came, refs_came))
    for mrid, obj in new.objects.items():
        old_obj = base.objects.get(mrid)
        if old_obj is None or old_obj.cim_class != obj.cim_class:
            forward.append(Fragment(mrid, obj.cim_class, dict(obj.values), dict(obj.refs)))
    return CimDifference(f"{new.source} against {base.source}", header, tuple(forward), tuple(reverse))


# ---- writing -------------------------------------------------------------------------------------------------------
def difference_document(header: DifferenceHeader, forward: Sequence[Fragment], reverse: Sequence[Fragment], *,
                        cim_ns: str = CIM100_NS) -> bytes:
    """A difference model as RDF/XML (UTF-8). Identifiers are written ``urn:uuid:<mRID>``; literal values that look
    like enumeration literals (``SinglePhaseKind.A``) are written as references into the CIM namespace."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             f'<rdf:RDF xmlns:rdf="{RDF_NS}" xmlns:cim="{cim_ns}" xmlns:dm="{DM_NS}" xmlns:md="{MD_NS}">',
             f'<dm:DifferenceModel rdf:about={quoteattr("urn:uuid:" + header.mrid)}>',
             f"  <md:Model.created>{escape(header.created)}</md:Model.created>",
             f"  <md:Model.description>{escape(header.description)}</md:Model.description>"]
    if header.modeling_authority_set:
        lines.append(f"  <md:Model.modelingAuthoritySet>{escape(header.modeling_authority_set)}"
                     "</md:Model.modelingAuthoritySet>")
    for tag, fragments in (("forwardDifferences", forward), ("reverseDifferences", reverse)):
        lines.append(f'  <dm:{tag} rdf:parseType="Statements">')
        for frag in fragments:
            lines.extend(_fragment_lines(frag, cim_ns))
        lines.append(f"  </dm:{tag}>")
    lines += ["</dm:DifferenceModel>", "</rdf:RDF>", ""]
    return "\n".join(lines).encode("utf-8")


def _fragment_lines(frag: Fragment, cim_ns: str) -> list[str]:
    tag = f"cim:{frag.cim_class}" if frag.cim_class else "rdf:Description"
    out = [f'    <{tag} rdf:about={quoteattr("urn:uuid:" + frag.mrid)}>']
    for prop, value in frag.values.items():
        if _ENUM_LITERAL.match(value) and not prop.startswith("IdentifiedObject."):
            out.append(f"      <cim:{prop} rdf:resource={quoteattr(cim_ns + value)}/>")
        else:
            out.append(f"      <cim:{prop}>{escape(value)}</cim:{prop}>")
    for prop, targets in frag.refs.items():
        out.extend(f'      <cim:{prop} rdf:resource={quoteattr("urn:uuid:" + t)}/>' for t in targets)
    out.append(f"    </{tag}>")
    return out


def graph_document(graph: CimGraph, *, cim_ns: str = CIM100_NS) -> bytes:
    """A whole CimGraph as CIM RDF/XML (e.g. a base with a difference applied), readable again by ``read_rdf``.
    Objects keep their order; elements outside the CIM namespace, which ``read_rdf`` only counts, are not kept."""
    lines = ['<?xml version="1.0" encoding="utf-8"?>', f'<rdf:RDF xmlns:rdf="{RDF_NS}" xmlns:cim="{cim_ns}">']
    for obj in graph.objects.values():
        lines.extend(line[4:] for line in _fragment_lines(Fragment(obj.mrid, obj.cim_class, obj.values, obj.refs),
                                                          cim_ns))
    lines += ["</rdf:RDF>", ""]
    return "\n".join(lines).encode("utf-8")
