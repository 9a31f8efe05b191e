"""CIM objects -> ``models.network.NetworkModel`` (IEC 61968-13 CDPSM as GridAPPS-D/CIMHub exports it).

One converter per CIM class family; each records problems instead of stopping, and the whole import raises one
CimError listing all of them, so a broken file is never half-loaded. Conventions of CIMHub followed here: a line,
switch, load, capacitor or inverter without per-phase children is three-phase ABC; a bus is a TopologicalNode (or
its ConnectivityNode when the file has no TopologicalNode) and its phases are the union of the phase conductors
attached to it; coordinates come from the Location of the equipment attached (first PositionPoint at terminal 1's
bus, last at terminal 2's).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import TypeVar

import numpy as np

from models.cim.errors import CimError, CimProblem
from models.cim.rdf import CimGraph, CimObject, read_rdf
from models.network import (
    Bus,
    Capacitor,
    Customer,
    CustomerKind,
    Der,
    DerKind,
    DerUnit,
    EnergySource,
    Feeder,
    LineSegment,
    Load,
    LoadResponse,
    Measurement,
    MeasurementKind,
    ModelDiagnostics,
    NetworkModel,
    OtherEquipment,
    Phase,
    SequenceImpedance,
    ShuntConnection,
    Switch,
    SwitchKind,
    SwitchPhaseState,
    TapChanger,
    TapChangerControl,
    Terminal,
    Transformer,
    TransformerMeshImpedance,
    TransformerNoLoadTest,
    TransformerShortCircuitTest,
    TransformerTank,
    TransformerWinding,
    WindingConnection,
    phase_from_cim,
)

__all__ = ["build_network", "load_cim", "USED_CLASSES"]

E = TypeVar("E", bound=Enum)
ABC = Phase.A | Phase.B | Phase.C
NAN = float("nan")

SWITCH_CLASSES: dict[str, SwitchKind] = {kind.value: kind for kind in SwitchKind}
PROTECTED_SWITCHES = frozenset({"Breaker", "Recloser", "LoadBreakSwitch", "Sectionaliser"})
DER_UNIT_KINDS = {"PhotovoltaicUnit": DerKind.PHOTOVOLTAIC, "BatteryUnit": DerKind.BATTERY,
                  "PowerElectronicsWindUnit": DerKind.WIND}
MEASUREMENT_CLASSES = {"Analog": MeasurementKind.ANALOG, "Discrete": MeasurementKind.DISCRETE}
# An OperationalLimitType allowed this long (s) or longer is a permanent (normal) limit: CIMHub writes 5e9 s for
# "no limit on duration" and 7200 s (or 86400 s) for the emergency rating.
PERMANENT_LIMIT_S = 1e9

# Every class the importer reads something from; the rest are reported as skipped.
USED_CLASSES = frozenset({
    "ConnectivityNode", "TopologicalNode", "Terminal", "BaseVoltage", "Feeder", "Location", "PositionPoint",
    "ACLineSegment", "ACLineSegmentPhase", "PerLengthPhaseImpedance", "PhaseImpedanceData",
    "PerLengthSequenceImpedance", "PowerTransformer", "PowerTransformerEnd", "TransformerMeshImpedance",
    "TransformerCoreAdmittance", "TransformerTank", "TransformerTankEnd", "TransformerTankInfo",
    "TransformerEndInfo", "ShortCircuitTest", "NoLoadTest", "RatioTapChanger", "TapChangerControl",
    "EnergySource", "EnergyConsumer", "EnergyConsumerPhase", "LoadResponseCharacteristic",
    "LinearShuntCompensator", "LinearShuntCompensatorPhase", "SwitchPhase", "PowerElectronicsConnection",
    "PowerElectronicsConnectionPhase", "Analog", "Discrete", "UsagePoint", "CustomerAgreement", "Customer",
    "OperationalLimitSet", "OperationalLimitType", "CurrentLimit", *SWITCH_CLASSES, *DER_UNIT_KINDS,
})
# Equipment classes with an electrical model; terminals of any other class belong to OtherEquipment.
MODELLED_EQUIPMENT = frozenset({"ACLineSegment", "PowerTransformer", "EnergyConsumer", "LinearShuntCompensator",
                                "PowerElectronicsConnection", "EnergySource", *SWITCH_CLASSES})


def load_cim(path: str | Path) -> NetworkModel:
    """Read and build a network model from a CIM RDF/XML file; raises CimError listing every problem."""
    return build_network(read_rdf(path))


def build_network(graph: CimGraph) -> NetworkModel:
    """Build the network model from objects already read; raises CimError listing every problem."""
    return _Builder(graph).build()


def _children(objs: Iterable[CimObject], prop: str) -> dict[str, list[CimObject]]:
    groups: dict[str, list[CimObject]] = defaultdict(list)
    for obj in objs:
        parent = obj.ref(prop)
        if parent is not None:
            groups[parent].append(obj)
    return groups


class _Builder:
    def __init__(self, graph: CimGraph) -> None:
        self.g = graph
        self.problems: list[CimProblem] = list(graph.problems)
        self.bus_of_cn: dict[str, int] = {}
        self.bus_cns: list[list[str]] = []
        self.bus_ids: list[tuple[str, str]] = []  # (mrid, name)
        self.bus_phases: list[Phase] = []
        self.bus_nominal_v: list[float] = []
        self.bus_xy: list[tuple[float, float]] = []
        self.terminals: dict[str, Terminal] = {}
        self.terms_of: dict[str, list[Terminal]] = defaultdict(list)
        self.points_of: dict[str, list[CimObject]] = {}
        self.feeder_of_cn: dict[str, str] = {}

    # ---- helpers -------------------------------------------------------------------------------------------------
    def problem(self, obj: CimObject, message: str) -> None:
        self.problems.append(CimProblem(obj.cim_class, obj.mrid, obj.name, message))

    def target(self, obj: CimObject, prop: str, classes: Iterable[str] | None = None, *,
               required: bool = True) -> CimObject | None:
        ref = obj.ref(prop)
        if ref is None:
            if required:
                self.problem(obj, f"{prop} is missing")
            return None
        found = self.g.objects.get(ref)
        if found is None:
            self.problem(obj, f"{prop} refers to {ref}, which is not in the file (dangling reference)")
            return None
        allowed = tuple(classes) if classes is not None else ()
        if allowed and found.cim_class not in allowed:
            self.problem(obj, f"{prop} refers to {found.cim_class} {ref}, expected {' or '.join(allowed)}")
            return None
        return found

    def number(self, obj: CimObject, prop: str, default: float = NAN, *, required: bool = False) -> float:
        text = obj.values.get(prop)
        if text is None or text == "":
            if required:
                self.problem(obj, f"{prop} is missing")
            return default
        try:
            return float(text)
        except ValueError:
            self.problem(obj, f"{prop} is {text!r}, not a number")
            return default

    def integer(self, obj: CimObject, prop: str, default: int = 0) -> int:
        value = self.number(obj, prop, float(default))
        if math.isnan(value) or value != int(value):
            self.problem(obj, f"{prop} is {obj.values.get(prop)!r}, not an integer")
            return default
        return int(value)

    def flag(self, obj: CimObject, prop: str, default: bool = False) -> bool:
        text = obj.values.get(prop)
        if text is None:
            return default
        if text.lower() in ("true", "1"):
            return True
        if text.lower() in ("false", "0"):
            return False
        self.problem(obj, f"{prop} is {text!r}, not a boolean")
        return default

    def phases(self, obj: CimObject, prop: str, default: Phase = ABC) -> Phase:
        text = obj.values.get(prop)
        if text is None:
            return default
        try:
            return phase_from_cim(text)
        except ValueError:
            self.problem(obj, f"{prop} has unknown phase code {text!r}")
            return default

    def enum(self, obj: CimObject, prop: str, enum_type: type[E], default: E) -> E:
        text = obj.values.get(prop)
        if text is None:
            return default
        literal = text.rsplit(".", 1)[-1]
        try:
            return enum_type(literal)
        except ValueError:
            self.problem(obj, f"{prop} has unknown value {text!r}")
            return default

    def feeder_of(self, obj: CimObject) -> str | None:
        ref = obj.ref("Equipment.EquipmentContainer")
        container = self.g.objects.get(ref) if ref else None
        return container.mrid if container is not None and container.cim_class == "Feeder" else None

    def add_phases(self, bus: int, phases: Phase) -> None:
        self.bus_phases[bus] |= phases & ~Phase.N

    def equipment_buses(self, obj: CimObject, needed: int) -> list[int] | None:
        terms = self.terms_of.get(obj.mrid, [])
        if len(terms) < needed:
            self.problem(obj, f"has {len(terms)} terminal(s), needs {needed}")
            return None
        buses = [t.bus for t in terms[:needed]]
        self.place(obj, buses)
        base = self.g.objects.get(obj.ref("ConductingEquipment.BaseVoltage") or "")
        if base is not None:
            for bus in buses:
                if math.isnan(self.bus_nominal_v[bus]):
                    self.bus_nominal_v[bus] = self.number(base, "BaseVoltage.nominalVoltage")
        return buses

    def place(self, obj: CimObject, buses: list[int]) -> None:
        """Coordinates: a Location's first point belongs to terminal 1's bus, its last point to terminal 2's."""
        loc = obj.ref("PowerSystemResource.Location")
        points = self.points_of.get(loc or "")
        if not points:
            return
        ends = [points[0], points[-1]] if len(buses) > 1 else [points[0]]
        for bus, point in zip(buses, ends, strict=False):
            if math.isnan(self.bus_xy[bus][0]):
                self.bus_xy[bus] = (self.number(point, "PositionPoint.xPosition"),
                                    self.number(point, "PositionPoint.yPosition"))

    # ---- build ---------------------------------------------------------------------------------------------------
    def build(self) -> NetworkModel:
        g = self.g
        feeders = tuple(Feeder(f.mrid, f.name) for f in g.of("Feeder"))
        self._locations()
        self._buses()
        self._terminals()
        lines = self._lines()
        transformers, ends = self._transformers()
        tap_changers = self._tap_changers(ends)
        transformers = tuple(
            _with_regulator(t, {tc.transformer_mrid for tc in tap_changers}) for t in transformers)
        switches = self._switches()
        loads = self._loads()
        capacitors = self._capacitors()
        ders = self._ders()
        sources = self._sources()
        measurements = self._measurements()
        other = self._other_equipment()
        customers = self._customers(loads)
        loads = self._customer_counts(loads, customers)
        if self.problems:
            raise CimError(g.source, tuple(self.problems))
        buses = tuple(
            Bus(i, mrid, name, tuple(self.bus_cns[i]), self.bus_phases[i], self.bus_nominal_v[i],
                self.bus_xy[i][0], self.bus_xy[i][1], self._bus_feeder(i))
            for i, (mrid, name) in enumerate(self.bus_ids))
        counts = g.class_counts()
        kept = {e.cim_class for e in other}  # equipment kept as OtherEquipment is used, not skipped
        skipped = {cls: n for cls, n in counts.items() if cls not in USED_CLASSES and cls not in kept}
        skipped.update(g.foreign_counts)
        notes = []
        if not feeders:
            notes.append("no Feeder in the file: feeder membership is empty")
        name = feeders[0].name if len(feeders) == 1 else Path(g.source).stem  # several feeders: the file's name
        return NetworkModel(
            name=name, source=g.source, buses=buses, terminals=tuple(self.terminals.values()), lines=lines,
            transformers=transformers, tap_changers=tap_changers, switches=switches, loads=loads,
            capacitors=capacitors, ders=ders, sources=sources, feeders=feeders, measurements=measurements,
            diagnostics=ModelDiagnostics(counts, skipped, tuple(notes)), _bus_by_cn=dict(self.bus_of_cn),
            customers=customers, other_equipment=other)

    def _bus_feeder(self, bus: int) -> str | None:
        for cn in self.bus_cns[bus]:
            feeder = self.feeder_of_cn.get(cn)
            if feeder is not None:
                return feeder
        return None

    def _locations(self) -> None:
        points = _children(self.g.of("PositionPoint"), "PositionPoint.Location")
        for loc, pts in points.items():
            if loc not in self.g.objects:
                for p in pts:
                    self.problem(p, f"PositionPoint.Location refers to {loc}, which is not in the file")
            pts.sort(key=lambda p: self.number(p, "PositionPoint.sequenceNumber", 0.0))
        self.points_of = dict(points)

    def _buses(self) -> None:
        by_tn: dict[str, int] = {}
        for cn in self.g.of("ConnectivityNode"):
            container = self.target(cn, "ConnectivityNode.ConnectivityNodeContainer", required=False)
            if container is not None and container.cim_class == "Feeder":
                self.feeder_of_cn[cn.mrid] = container.mrid
            tn = self.target(cn, "ConnectivityNode.TopologicalNode", ("TopologicalNode",), required=False)
            key = tn.mrid if tn is not None else cn.mrid
            index = by_tn.get(key)
            if index is None:
                index = len(self.bus_ids)
                by_tn[key] = index
                self.bus_ids.append((key, tn.name if tn is not None else cn.name))
                self.bus_cns.append([])
                self.bus_phases.append(Phase.NONE)
                self.bus_nominal_v.append(NAN)
                self.bus_xy.append((NAN, NAN))
            self.bus_cns[index].append(cn.mrid)
            self.bus_of_cn[cn.mrid] = index

    def _terminals(self) -> None:
        for term in self.g.of("Terminal"):
            cn = self.target(term, "Terminal.ConnectivityNode", ("ConnectivityNode",))
            eq = self.target(term, "Terminal.ConductingEquipment")
            seq = self.integer(term, "ACDCTerminal.sequenceNumber", 1)
            if cn is None or eq is None:
                continue
            t = Terminal(term.mrid, term.name, eq.mrid, seq, self.bus_of_cn[cn.mrid])
            self.terminals[term.mrid] = t
            self.terms_of[eq.mrid].append(t)
        for terms in self.terms_of.values():
            terms.sort(key=lambda t: t.sequence_number)

    def _phase_impedances(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        data = _children(self.g.of("PhaseImpedanceData"), "PhaseImpedanceData.PhaseImpedance")
        result: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for imp in self.g.of("PerLengthPhaseImpedance"):
            rows = data.get(imp.mrid, [])
            if not rows:
                self.problem(imp, "has no PhaseImpedanceData")
                continue
            cells = [(self.integer(d, "PhaseImpedanceData.row"), self.integer(d, "PhaseImpedanceData.column"), d)
                     for d in rows]
            size = max(self.integer(imp, "PerLengthPhaseImpedance.conductorCount", 0),
                       max(max(r, c) for r, c, _ in cells))
            mats = np.zeros((3, size, size))
            ok = True
            for r, c, d in cells:
                if r < 1 or c < 1:
                    self.problem(d, f"row {r} / column {c} of {imp.name!r} must be 1 or more")
                    ok = False
                    continue
                for k, prop in enumerate(("PhaseImpedanceData.r", "PhaseImpedanceData.x", "PhaseImpedanceData.b")):
                    v = self.number(d, prop, 0.0)
                    mats[k, r - 1, c - 1] = v
                    mats[k, c - 1, r - 1] = v  # CIMHub writes one triangle of a symmetric matrix
            if ok:
                result[imp.mrid] = (mats[0], mats[1], mats[2])
        return result

    def _limit_is_normal(self, typ: CimObject) -> bool | None:
        """True for a normal (permanent) limit type, False for an emergency (temporary) one, None for a lower limit.

        Read in order: CGMES ``kind``/``limitType`` (patl = permanent), ``isInfiniteDuration``, then
        ``acceptableDuration`` (absent or at least PERMANENT_LIMIT_S = permanent)."""
        direction = typ.values.get("OperationalLimitType.direction", "")
        if direction.endswith(".low"):
            return None
        for prop in ("OperationalLimitType.kind", "OperationalLimitType.limitType"):
            kind = typ.values.get(prop)
            if kind:
                return kind.rsplit(".", 1)[-1].lower() == "patl"
        if "OperationalLimitType.isInfiniteDuration" in typ.values:
            return self.flag(typ, "OperationalLimitType.isInfiniteDuration", True)
        duration_s = self.number(typ, "OperationalLimitType.acceptableDuration")
        return math.isnan(duration_s) or duration_s >= PERMANENT_LIMIT_S

    def _line_current_limits(self) -> dict[str, tuple[float, float]]:
        """Lowest (normal, emergency) CurrentLimit per ACLineSegment mRID over the OperationalLimitSets on its
        terminals (``OperationalLimitSet.Terminal``, or ``ACDCTerminal.OperationalLimitSet`` as CIMHub writes it:
        one shared set per distinct rating) or on the line itself (``OperationalLimitSet.Equipment``).
        Limits on other equipment are not read: switches carry ``Switch.ratedCurrent``."""
        line_mrids = {seg.mrid for seg in self.g.of("ACLineSegment")}
        sets_of: dict[str, set[str]] = defaultdict(set)
        for term in self.g.of("Terminal"):
            bound = self.terminals.get(term.mrid)
            if bound is not None and bound.equipment_mrid in line_mrids:
                sets_of[bound.equipment_mrid].update(term.refs.get("ACDCTerminal.OperationalLimitSet", ()))
        for ls in self.g.of("OperationalLimitSet"):
            bound = self.terminals.get(ls.ref("OperationalLimitSet.Terminal") or "")
            if bound is not None and bound.equipment_mrid in line_mrids:
                sets_of[bound.equipment_mrid].add(ls.mrid)
            equipment = ls.ref("OperationalLimitSet.Equipment")
            if equipment in line_mrids:
                sets_of[equipment].add(ls.mrid)
        limits_of = _children(self.g.of("CurrentLimit"), "OperationalLimit.OperationalLimitSet")
        per_set: dict[str, tuple[float, float]] = {}
        for set_mrid in set().union(*sets_of.values()):
            normal = emergency = NAN
            for lim in limits_of.get(set_mrid, []):
                prop = "CurrentLimit.value" if "CurrentLimit.value" in lim.values else "CurrentLimit.normalValue"
                value = self.number(lim, prop, required=True)
                typ = self.target(lim, "OperationalLimit.OperationalLimitType", ("OperationalLimitType",))
                if math.isnan(value) or typ is None:
                    continue
                if value <= 0.0:
                    self.problem(lim, f"{prop} is {value!r} A, a current limit must be positive")
                    continue
                is_normal = self._limit_is_normal(typ)
                if is_normal is True:
                    normal = min(normal, value) if not math.isnan(normal) else value
                elif is_normal is False:
                    emergency = min(emergency, value) if not math.isnan(emergency) else value
            per_set[set_mrid] = (normal, emergency)
        result: dict[str, tuple[float, float]] = {}
        for line_mrid, set_mrids in sets_of.items():
            pairs = [per_set[m] for m in set_mrids]
            result[line_mrid] = (_lowest(p[0] for p in pairs), _lowest(p[1] for p in pairs))
        return result

    def _lines(self) -> tuple[LineSegment, ...]:
        phase_imp = self._phase_impedances()
        ratings = self._line_current_limits()
        phases_of = _children(self.g.of("ACLineSegmentPhase"), "ACLineSegmentPhase.ACLineSegment")
        for ref, children in phases_of.items():
            if ref not in self.g.objects:
                for child in children:
                    self.problem(child, f"ACLineSegmentPhase.ACLineSegment refers to {ref}, which is not in the file")
        lines = []
        for seg in self.g.of("ACLineSegment"):
            buses = self.equipment_buses(seg, 2)
            length_m = self.number(seg, "Conductor.length", required=True)
            children = sorted(phases_of.get(seg.mrid, []),
                              key=lambda p: self.integer(p, "ACLineSegmentPhase.sequenceNumber", 0))
            phases = tuple(self.phases(p, "ACLineSegmentPhase.phase") for p in children) or (Phase.A, Phase.B, Phase.C)
            n = len(phases)
            if "ACLineSegment.PerLengthImpedance" not in seg.refs:
                self.problem(seg, "has no impedance (ACLineSegment.PerLengthImpedance is missing)")
                continue
            imp = self.target(seg, "ACLineSegment.PerLengthImpedance",
                              ("PerLengthPhaseImpedance", "PerLengthSequenceImpedance"))
            if imp is None or buses is None:
                continue
            sequence = None
            if imp.cim_class == "PerLengthPhaseImpedance":
                mats = phase_imp.get(imp.mrid)
                if mats is None:
                    continue  # problem already recorded on the impedance
                if mats[0].shape[0] != n:
                    self.problem(seg, f"has {n} phase(s) but impedance {imp.name!r} is {mats[0].shape[0]}x"
                                      f"{mats[0].shape[0]}")
                    continue
                r, x, b = (m.copy() for m in mats)
            else:
                sequence = SequenceImpedance(
                    imp.mrid, imp.name, *(self.number(imp, f"PerLengthSequenceImpedance.{p}", 0.0)
                                          for p in ("r", "x", "r0", "x0", "bch", "b0ch")))
                r, x, b = _phase_from_sequence(sequence, n)
            for m in (r, x, b):
                m.flags.writeable = False
            for bus in buses:
                for p in phases:
                    self.add_phases(bus, p)
            normal_a, emergency_a = ratings.get(seg.mrid, (NAN, NAN))
            lines.append(LineSegment(seg.mrid, seg.name, buses[0], buses[1], phases, length_m, imp.mrid, imp.name,
                                     r, x, b, sequence, self.feeder_of(seg), normal_a, emergency_a))
        return tuple(lines)

    def _winding_bus(self, end: CimObject) -> tuple[int, str] | None:
        term = self.target(end, "TransformerEnd.Terminal", ("Terminal",))
        if term is None or term.mrid not in self.terminals:
            return None
        t = self.terminals[term.mrid]
        base = self.g.objects.get(end.ref("TransformerEnd.BaseVoltage") or "")
        if base is not None and math.isnan(self.bus_nominal_v[t.bus]):
            self.bus_nominal_v[t.bus] = self.number(base, "BaseVoltage.nominalVoltage")
        return t.bus, t.mrid

    def _transformers(self) -> tuple[list[Transformer], dict[str, tuple[str, TransformerWinding]]]:
        g = self.g
        pt_ends = _children(g.of("PowerTransformerEnd"), "PowerTransformerEnd.PowerTransformer")
        tanks_of = _children(g.of("TransformerTank"), "TransformerTank.PowerTransformer")
        tank_ends = _children(g.of("TransformerTankEnd"), "TransformerTankEnd.TransformerTank")
        end_infos = _children(g.of("TransformerEndInfo"), "TransformerEndInfo.TransformerTankInfo")
        sc_tests = _children(g.of("ShortCircuitTest"), "ShortCircuitTest.EnergisedEnd")
        nl_tests = _children(g.of("NoLoadTest"), "NoLoadTest.EnergisedEnd")
        mesh_of = _children(g.of("TransformerMeshImpedance"), "TransformerMeshImpedance.FromTransformerEnd")
        for orphan_group, prop in ((pt_ends, "PowerTransformerEnd.PowerTransformer"),
                                   (tanks_of, "TransformerTank.PowerTransformer"),
                                   (tank_ends, "TransformerTankEnd.TransformerTank")):
            for ref, children in orphan_group.items():
                if ref not in g.objects:
                    for child in children:
                        self.problem(child, f"{prop} refers to {ref}, which is not in the file (dangling reference)")
        all_ends: dict[str, tuple[str, TransformerWinding]] = {}
        result = []
        for pt in g.of("PowerTransformer"):
            windings: list[TransformerWinding] = []
            tanks: list[TransformerTank] = []
            mesh: list[TransformerMeshImpedance] = []
            g_s = b_s = 0.0
            ends = sorted(pt_ends.get(pt.mrid, []), key=lambda e: self.integer(e, "TransformerEnd.endNumber"))
            number_of_end = {e.mrid: self.integer(e, "TransformerEnd.endNumber") for e in ends}
            for end in ends:
                located = self._winding_bus(end)
                if located is None:
                    continue
                bus, term = located
                conn = self.enum(end, "PowerTransformerEnd.connectionKind", WindingConnection, WindingConnection.Y)
                w = TransformerWinding(
                    end.mrid, end.name, number_of_end[end.mrid], bus, term, ABC, conn,
                    self.number(end, "PowerTransformerEnd.ratedU", required=True),
                    self.number(end, "PowerTransformerEnd.ratedS", required=True),
                    self.number(end, "PowerTransformerEnd.r", 0.0), self.flag(end, "TransformerEnd.grounded"), None)
                windings.append(w)
                all_ends[end.mrid] = (pt.mrid, w)
                self.add_phases(bus, ABC)
                core = self.target(end, "TransformerEnd.CoreAdmittance", ("TransformerCoreAdmittance",),
                                   required=False)
                if core is not None:
                    g_s += self.number(core, "TransformerCoreAdmittance.g", 0.0)
                    b_s += self.number(core, "TransformerCoreAdmittance.b", 0.0)
                for m in mesh_of.get(end.mrid, []):
                    to_end = self.target(m, "TransformerMeshImpedance.ToTransformerEnd", ("PowerTransformerEnd",))
                    if to_end is not None:
                        mesh.append(TransformerMeshImpedance(
                            number_of_end[end.mrid], number_of_end.get(to_end.mrid, 0),
                            self.number(m, "TransformerMeshImpedance.r", 0.0),
                            self.number(m, "TransformerMeshImpedance.x", 0.0)))
            for tank in tanks_of.get(pt.mrid, []):
                info = self.target(tank, "TransformerTank.TransformerTankInfo", ("TransformerTankInfo",),
                                   required=False)
                infos = {self.integer(i, "TransformerEndInfo.endNumber"): i for i in end_infos.get(info.mrid, [])} \
                    if info is not None else {}
                for end in sorted(tank_ends.get(tank.mrid, []),
                                  key=lambda e: self.integer(e, "TransformerEnd.endNumber")):
                    number = self.integer(end, "TransformerEnd.endNumber")
                    located = self._winding_bus(end)
                    end_info = infos.get(number)
                    if end_info is None:
                        self.problem(end, f"tank {tank.name!r} has no TransformerEndInfo for end {number}")
                    if located is None or end_info is None:
                        continue
                    bus, term = located
                    phases = self.phases(end, "TransformerTankEnd.orderedPhases")
                    conn = self.enum(end_info, "TransformerEndInfo.connectionKind", WindingConnection,
                                     WindingConnection.Y)
                    w = TransformerWinding(
                        end.mrid, end.name, number, bus, term, phases, conn,
                        self.number(end_info, "TransformerEndInfo.ratedU", required=True),
                        self.number(end_info, "TransformerEndInfo.ratedS", required=True),
                        self.number(end_info, "TransformerEndInfo.r", 0.0),
                        self.flag(end, "TransformerEnd.grounded"), tank.mrid)
                    windings.append(w)
                    all_ends[end.mrid] = (pt.mrid, w)
                    self.add_phases(bus, phases)
                sc, nl = [], []
                number_of_info = {i.mrid: n for n, i in infos.items()}
                for n, i in sorted(infos.items()):
                    for test in sc_tests.get(i.mrid, []):
                        grounded = tuple(number_of_info.get(ref, 0)
                                         for ref in test.refs.get("ShortCircuitTest.GroundedEnds", ()))
                        sc.append(TransformerShortCircuitTest(
                            n, grounded, self.number(test, "ShortCircuitTest.leakageImpedance", 0.0),
                            1000.0 * self.number(test, "ShortCircuitTest.loss", 0.0),  # CIM: kW
                            self.number(test, "TransformerTest.basePower")))
                    for test in nl_tests.get(i.mrid, []):
                        nl.append(TransformerNoLoadTest(
                            n, self.number(test, "NoLoadTest.excitingCurrent", 0.0),
                            1000.0 * self.number(test, "NoLoadTest.loss", 0.0),  # CIM: kW
                            self.number(test, "TransformerTest.basePower")))
                tanks.append(TransformerTank(tank.mrid, tank.name, info.mrid if info else None,
                                             info.name if info else "", tuple(sc), tuple(nl)))
            located_on = sorted(windings, key=lambda w: w.end_number)
            self.place(pt, list(dict.fromkeys(w.bus for w in located_on)))
            for tank in tanks_of.get(pt.mrid, []):
                self.place(tank, list(dict.fromkeys(w.bus for w in located_on if w.tank_mrid == tank.mrid)))
            if not ends and not tanks_of.get(pt.mrid):
                self.problem(pt, "has neither PowerTransformerEnd nor TransformerTank")
                continue
            if len(windings) < 2 and len(windings) == len(ends) + sum(len(tank_ends.get(t.mrid, []))
                                                                      for t in tanks_of.get(pt.mrid, [])):
                self.problem(pt, f"has {len(windings)} winding(s), needs at least 2")
            result.append(Transformer(pt.mrid, pt.name, pt.values.get("PowerTransformer.vectorGroup", ""),
                                      tuple(windings), tuple(tanks), tuple(mesh), g_s, b_s, False,
                                      self.feeder_of(pt)))
        return result, all_ends

    def _tap_changers(self, ends: dict[str, tuple[str, TransformerWinding]]) -> tuple[TapChanger, ...]:
        result = []
        for tc in self.g.of("RatioTapChanger"):
            end = self.target(tc, "RatioTapChanger.TransformerEnd", ("PowerTransformerEnd", "TransformerTankEnd"))
            ctl_obj = self.target(tc, "TapChanger.TapChangerControl", ("TapChangerControl",), required=False)
            control = None
            if ctl_obj is not None:
                term = self.target(ctl_obj, "RegulatingControl.Terminal", ("Terminal",), required=False)
                control = TapChangerControl(
                    ctl_obj.mrid, ctl_obj.name, ctl_obj.values.get("RegulatingControl.mode", "").rsplit(".", 1)[-1],
                    self.number(ctl_obj, "RegulatingControl.targetValue"),
                    self.number(ctl_obj, "RegulatingControl.targetDeadband"),
                    self.phases(ctl_obj, "RegulatingControl.monitoredPhase", Phase.NONE),
                    term.mrid if term else None,
                    self.flag(ctl_obj, "TapChangerControl.lineDropCompensation"),
                    self.number(ctl_obj, "TapChangerControl.lineDropR", 0.0),
                    self.number(ctl_obj, "TapChangerControl.lineDropX", 0.0),
                    self.flag(ctl_obj, "RegulatingControl.enabled", True))
            if end is None:
                continue
            if end.mrid not in ends:
                continue  # the winding itself had a problem, already recorded
            transformer_mrid, winding = ends[end.mrid]
            normal = self.integer(tc, "TapChanger.normalStep")
            result.append(TapChanger(
                tc.mrid, tc.name, transformer_mrid, end.mrid, winding.end_number, winding.bus, winding.phases,
                self.number(tc, "TapChanger.step", float(normal)), normal,
                self.integer(tc, "TapChanger.neutralStep"), self.integer(tc, "TapChanger.highStep"),
                self.integer(tc, "TapChanger.lowStep"), self.number(tc, "RatioTapChanger.stepVoltageIncrement", 0.0),
                self.number(tc, "TapChanger.neutralU"), self.flag(tc, "TapChanger.controlEnabled"),
                self.number(tc, "TapChanger.ptRatio"), self.number(tc, "TapChanger.ctRating"), control))
        return tuple(result)

    def _switches(self) -> tuple[Switch, ...]:
        phase_objs = _children(self.g.of("SwitchPhase"), "SwitchPhase.Switch")
        result = []
        for cls, kind in SWITCH_CLASSES.items():
            for sw in self.g.of(cls):
                buses = self.equipment_buses(sw, 2)
                states = tuple(
                    SwitchPhaseState(self.phases(p, "SwitchPhase.phaseSide1", Phase.NONE),
                                     self.phases(p, "SwitchPhase.phaseSide2", Phase.NONE),
                                     self.flag(p, "SwitchPhase.normalOpen"),
                                     not self.flag(p, "SwitchPhase.closed", True))
                    for p in phase_objs.get(sw.mrid, []))
                phases = Phase.NONE
                for s in states:
                    phases |= s.phase_side1
                phases = phases or ABC
                normal_open = self.flag(sw, "Switch.normalOpen")
                if buses is None:
                    continue
                for bus in buses:
                    self.add_phases(bus, phases)
                result.append(Switch(
                    sw.mrid, sw.name, kind, buses[0], buses[1], phases, normal_open,
                    self.flag(sw, "Switch.open", normal_open), self.number(sw, "Switch.ratedCurrent"),
                    self.number(sw, "ProtectedSwitch.breakingCapacity") if cls in PROTECTED_SWITCHES else NAN,
                    states, self.feeder_of(sw)))
        return tuple(result)

    def _per_phase(self, children: list[CimObject], phase_prop: str,
                   value_prop: str) -> tuple[tuple[Phase, float], ...]:
        return tuple((self.phases(c, phase_prop, Phase.NONE), self.number(c, value_prop, 0.0)) for c in children)

    def _union(self, pairs: tuple[tuple[Phase, float], ...]) -> Phase:
        result = Phase.NONE
        for phase, _ in pairs:
            result |= phase
        return result or ABC

    def _loads(self) -> tuple[Load, ...]:
        phase_objs = _children(self.g.of("EnergyConsumerPhase"), "EnergyConsumerPhase.EnergyConsumer")
        result = []
        for ec in self.g.of("EnergyConsumer"):
            buses = self.equipment_buses(ec, 1)
            children = phase_objs.get(ec.mrid, [])
            pp = self._per_phase(children, "EnergyConsumerPhase.phase", "EnergyConsumerPhase.p")
            pq = self._per_phase(children, "EnergyConsumerPhase.phase", "EnergyConsumerPhase.q")
            lrc = self.target(ec, "EnergyConsumer.LoadResponse", ("LoadResponseCharacteristic",), required=False)
            response = None
            if lrc is not None:
                vals = [self.number(lrc, f"LoadResponseCharacteristic.{p}", 0.0) for p in (
                    "pConstantImpedance", "pConstantCurrent", "pConstantPower", "qConstantImpedance",
                    "qConstantCurrent", "qConstantPower", "pVoltageExponent", "qVoltageExponent")]
                response = LoadResponse(lrc.mrid, lrc.name, self.flag(lrc, "LoadResponseCharacteristic.exponentModel"),
                                        *vals)
            conn = self.enum(ec, "EnergyConsumer.phaseConnection", ShuntConnection, ShuntConnection.Y)
            if buses is None:
                continue
            phases = self._union(pp)
            self.add_phases(buses[0], phases)
            result.append(Load(ec.mrid, ec.name, buses[0], phases, conn,
                               self.number(ec, "EnergyConsumer.p", 0.0), self.number(ec, "EnergyConsumer.q", 0.0),
                               pp, pq, self.flag(ec, "EnergyConsumer.grounded"),
                               self.integer(ec, "EnergyConsumer.customerCount", 0), response, self.feeder_of(ec)))
        return tuple(result)

    def _capacitors(self) -> tuple[Capacitor, ...]:
        phase_objs = _children(self.g.of("LinearShuntCompensatorPhase"), "ShuntCompensatorPhase.ShuntCompensator")
        result = []
        for cap in self.g.of("LinearShuntCompensator"):
            buses = self.equipment_buses(cap, 1)
            pb = self._per_phase(phase_objs.get(cap.mrid, []), "ShuntCompensatorPhase.phase",
                                 "LinearShuntCompensatorPhase.bPerSection")
            conn = self.enum(cap, "ShuntCompensator.phaseConnection", ShuntConnection, ShuntConnection.Y)
            if buses is None:
                continue
            phases = self._union(pb)
            self.add_phases(buses[0], phases)
            result.append(Capacitor(
                cap.mrid, cap.name, buses[0], phases, conn,
                self.number(cap, "LinearShuntCompensator.bPerSection", required=True), pb,
                self.number(cap, "ShuntCompensator.sections", 1.0),
                self.integer(cap, "ShuntCompensator.normalSections", 1),
                self.integer(cap, "ShuntCompensator.maximumSections", 1),
                self.number(cap, "ShuntCompensator.nomU"), self.flag(cap, "ShuntCompensator.grounded"),
                self.feeder_of(cap)))
        return tuple(result)

    def _ders(self) -> tuple[Der, ...]:
        units_of: dict[str, list[CimObject]] = defaultdict(list)
        for cls in DER_UNIT_KINDS:
            for ref, units in _children(self.g.of(cls), "PowerElectronicsUnit.PowerElectronicsConnection").items():
                units_of[ref].extend(units)
        phase_objs = _children(self.g.of("PowerElectronicsConnectionPhase"),
                               "PowerElectronicsConnectionPhase.PowerElectronicsConnection")
        result = []
        for pec in self.g.of("PowerElectronicsConnection"):
            buses = self.equipment_buses(pec, 1)
            units = tuple(
                DerUnit(u.mrid, u.name, DER_UNIT_KINDS[u.cim_class], self.number(u, "PowerElectronicsUnit.maxP"),
                        self.number(u, "PowerElectronicsUnit.minP"), self.number(u, "BatteryUnit.ratedE"),
                        self.number(u, "BatteryUnit.storedE"))
                for u in units_of.get(pec.mrid, []))
            kinds = {u.kind for u in units}
            kind = kinds.pop() if len(kinds) == 1 else (DerKind.MIXED if kinds else DerKind.NONE)
            children = phase_objs.get(pec.mrid, [])
            pp = self._per_phase(children, "PowerElectronicsConnectionPhase.phase", "PowerElectronicsConnectionPhase.p")
            pq = self._per_phase(children, "PowerElectronicsConnectionPhase.phase", "PowerElectronicsConnectionPhase.q")
            if buses is None:
                continue
            phases = self._union(pp)
            self.add_phases(buses[0], phases)
            result.append(Der(
                pec.mrid, pec.name, kind, buses[0], phases, self.number(pec, "PowerElectronicsConnection.p", 0.0),
                self.number(pec, "PowerElectronicsConnection.q", 0.0),
                self.number(pec, "PowerElectronicsConnection.ratedS"),
                self.number(pec, "PowerElectronicsConnection.ratedU"),
                self.number(pec, "PowerElectronicsConnection.maxQ"),
                self.number(pec, "PowerElectronicsConnection.minQ"),
                units, pp, pq, self.feeder_of(pec)))
        for ref, units in units_of.items():
            if ref not in self.g.objects:
                for u in units:
                    self.problem(u, f"PowerElectronicsUnit.PowerElectronicsConnection refers to {ref}, "
                                    "which is not in the file (dangling reference)")
        return tuple(result)

    def _sources(self) -> tuple[EnergySource, ...]:
        result = []
        for src in self.g.of("EnergySource"):
            buses = self.equipment_buses(src, 1)
            if buses is None:
                continue
            self.add_phases(buses[0], ABC)
            result.append(EnergySource(
                src.mrid, src.name, buses[0], self.number(src, "EnergySource.nominalVoltage", required=True),
                *(self.number(src, f"EnergySource.{p}", 0.0)
                  for p in ("voltageMagnitude", "voltageAngle", "r", "x", "r0", "x0"))))
        return tuple(result)

    def _measurements(self) -> tuple[Measurement, ...]:
        result = []
        for cls, kind in MEASUREMENT_CLASSES.items():
            for meas in self.g.of(cls):
                element = self.target(meas, "Measurement.PowerSystemResource")
                term = self.target(meas, "Measurement.Terminal", ("Terminal",), required=False)
                phases = self.phases(meas, "Measurement.phases", Phase.NONE)
                if element is None:
                    continue
                bus = None
                if term is not None:
                    bound = self.terminals.get(term.mrid)
                    if bound is None:
                        continue  # the terminal's own problem is already recorded
                    if bound.equipment_mrid != element.mrid:
                        self.problem(meas, f"Measurement.Terminal {term.mrid} belongs to {bound.equipment_mrid}, "
                                           f"not to its PowerSystemResource {element.cim_class} {element.mrid}")
                        continue
                    bus = bound.bus
                mtype = meas.values.get("Measurement.measurementType", "")
                result.append(Measurement(meas.mrid, meas.name, kind, mtype, phases, element.mrid,
                                          element.cim_class, term.mrid if term else None, bus))
        return tuple(result)

    def _other_equipment(self) -> tuple[OtherEquipment, ...]:
        result = []
        for mrid in self.terms_of:
            obj = self.g.objects[mrid]
            if obj.cim_class not in MODELLED_EQUIPMENT:
                self.equipment_buses(obj, 1)  # its BaseVoltage and Location still describe the bus
                result.append(OtherEquipment(obj.mrid, obj.name, obj.cim_class, self.feeder_of(obj)))
        return tuple(result)

    def _customers(self, loads: tuple[Load, ...]) -> tuple[Customer, ...]:
        """UsagePoints (IEC 61968 Metering) and the equipment they are linked to, from either end."""
        load_index = {ld.mrid: i for i, ld in enumerate(loads)}
        equipment_of: dict[str, list[str]] = defaultdict(list)
        for up in self.g.of("UsagePoint"):
            equipment_of[up.mrid].extend(up.refs.get("UsagePoint.Equipments", ()))
        for obj in self.g.objects.values():
            for ref in obj.refs.get("Equipment.UsagePoints", ()):
                if ref in self.g.objects and obj.mrid not in equipment_of[ref]:
                    equipment_of[ref].append(obj.mrid)
        result = []
        for up in self.g.of("UsagePoint"):
            refs = equipment_of.get(up.mrid, [])
            missing = [r for r in refs if r not in self.g.objects]
            if missing:
                self.problem(up, f"UsagePoint.Equipments refers to {missing[0]}, which is not in the file "
                                 "(dangling reference)")
                continue
            load_mrid = next((r for r in refs if r in load_index), None)
            eq_mrid = load_mrid or (refs[0] if refs else None)
            terms = self.terms_of.get(eq_mrid or "", [])
            kind: CustomerKind | None = None
            customer: CimObject | None = None
            agreement = self.target(up, "UsagePoint.CustomerAgreement", ("CustomerAgreement",), required=False)
            if agreement is not None:
                customer = self.target(agreement, "CustomerAgreement.Customer", ("Customer",), required=False)
                if customer is not None:
                    kind = self.enum(customer, "Customer.kind", CustomerKind, CustomerKind.OTHER) \
                        if "Customer.kind" in customer.values else None
            points = self.points_of.get(up.ref("UsagePoint.Location") or "")
            x, y = (NAN, NAN) if not points else (self.number(points[0], "PositionPoint.xPosition"),
                                                  self.number(points[0], "PositionPoint.yPosition"))
            result.append(Customer(
                up.mrid, up.name, load_mrid, load_index.get(load_mrid or ""),
                loads[load_index[load_mrid]].bus if load_mrid else (terms[0].bus if terms else None),
                self.phases(up, "UsagePoint.phaseCode", Phase.NONE), kind,
                up.values.get("UsagePoint.connectionCategory", ""), x, y,
                customer.mrid if customer is not None else None, agreement.mrid if agreement is not None else None))
        return tuple(result)

    def _customer_counts(self, loads: tuple[Load, ...], customers: tuple[Customer, ...]) -> tuple[Load, ...]:
        """A load whose EnergyConsumer gives no customerCount counts its usage points."""
        per_load: dict[str, int] = defaultdict(int)
        for c in customers:
            if c.load_mrid is not None:
                per_load[c.load_mrid] += 1
        given = {ec.mrid for ec in self.g.of("EnergyConsumer") if ec.values.get("EnergyConsumer.customerCount")}
        return tuple(ld if ld.mrid in given or ld.mrid not in per_load
                     else replace(ld, customer_count=per_load[ld.mrid]) for ld in loads)


def _lowest(values: Iterable[float]) -> float:
    """The smallest of the given (not NaN) values, NaN when none is given."""
    given = [v for v in values if not math.isnan(v)]
    return min(given) if given else NAN


def _with_regulator(t: Transformer, regulated: set[str]) -> Transformer:
    if t.mrid not in regulated:
        return t
    return Transformer(t.mrid, t.name, t.vector_group, t.windings, t.tanks, t.mesh_impedances, t.magnetising_g_s,
                       t.magnetising_b_s, True, t.feeder_mrid)


def _phase_from_sequence(seq: SequenceImpedance, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase-frame matrices of a transposed line: self = (2 Z1 + Z0) / 3, mutual = (Z0 - Z1) / 3."""
    out = []
    for z1, z0 in ((seq.r_ohm_per_m, seq.r0_ohm_per_m), (seq.x_ohm_per_m, seq.x0_ohm_per_m),
                   (seq.b_s_per_m, seq.b0_s_per_m)):
        m = np.full((n, n), (z0 - z1) / 3.0)
        np.fill_diagonal(m, (2.0 * z1 + z0) / 3.0)
        out.append(m)
    return out[0], out[1], out[2]
