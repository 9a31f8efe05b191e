"""``models.network.NetworkModel`` -> CIM100 RDF/XML, in the GridAPPS-D/CIMHub style ``models.cim`` reads.

Written so that ``load_cim(write_cim(model))`` gives the same model back: every element keeps its mRID (objects the
model does not hold an mRID for, such as PhaseImpedanceData, TransformerEndInfo, Locations or BaseVoltages, get a
uuid5 derived from their owner's mRID, so the output is byte-for-byte deterministic), numbers are written with
``repr`` (shortest text that reads back to the same float) and NaN ("not given") is written as an absent property.

Choices that keep the round trip exact:

- a bus whose mRID is one of its ConnectivityNodes' is written as ConnectivityNodes only, any other bus as a
  TopologicalNode with its ConnectivityNodes; each node's container is the bus's Feeder;
- every terminal is attached to its bus's first ConnectivityNode;
- each conducting equipment gets ``ConductingEquipment.BaseVoltage`` (and each transformer end
  ``TransformerEnd.BaseVoltage``) from its bus's nominal voltage, and a Location whose PositionPoints are its
  terminals' bus coordinates, when all those buses have them (the importer takes a bus's voltage and coordinates
  from the first equipment it reads on it, so all agree);
- ``customerCount`` is always written, so a re-import does not recount usage points;
- a line's current ratings are one OperationalLimitSet on its terminal 1 with a normal and an emergency CurrentLimit
  (two shared OperationalLimitTypes, CIMHub's durations), the importer taking the lowest of each over the terminals.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from models.cim.build import PROTECTED_SWITCHES
from models.network import (
    Customer,
    Der,
    DerKind,
    LineSegment,
    NetworkModel,
    Phase,
    Transformer,
    phase_text,
)

__all__ = ["CIM100_NS", "derived_mrid", "to_rdf_xml", "write_cim"]

CIM100_NS = "http://iec.ch/TC57/CIM100#"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# Namespace of the uuid5 mRIDs this exporter (and the sample-network generator) derives.
_MRID_NAMESPACE = uuid.UUID("6f1c7a52-3f0e-5b8e-9c51-0d5ca1ad5c01")
# CIMHub's acceptableDuration (s) of the normal ("no limit") and emergency current-limit types.
_LIMIT_TYPES = (("Normal", "NormAmpsType", 5e9), ("Emergency", "EmergencyAmpsType", 7200.0))
_DER_UNIT_CLASS = {DerKind.PHOTOVOLTAIC: "PhotovoltaicUnit", DerKind.BATTERY: "BatteryUnit",
                   DerKind.WIND: "PowerElectronicsWindUnit"}


def derived_mrid(*parts: str) -> str:
    """A stable mRID (uuid5) for an object named by ``parts`` (e.g. its owner's mRID and its role)."""
    return str(uuid.uuid5(_MRID_NAMESPACE, "/".join(parts)))


def write_cim(model: NetworkModel, path: str | Path) -> Path:
    """Write the model as CIM100 RDF/XML to ``path``; returns the path."""
    out = Path(path)
    out.write_bytes(to_rdf_xml(model))
    return out


def to_rdf_xml(model: NetworkModel) -> bytes:
    """The model as CIM100 RDF/XML (UTF-8), deterministic for a given model."""
    return _Writer(model).document()


def _num(value: float) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    return None if math.isnan(value) else repr(value)


class _Writer:
    def __init__(self, model: NetworkModel) -> None:
        self.m = model
        self.lines: list[str] = []
        self.base_voltage: dict[float, str] = {}
        self.buses_of: dict[str, list[int]] = {}
        self.first_terminal: dict[str, str] = {}
        for t in sorted(model.terminals, key=lambda t: t.sequence_number):
            self.buses_of.setdefault(t.equipment_mrid, []).append(t.bus)
            self.first_terminal.setdefault(t.equipment_mrid, t.mrid)
        self.crs = derived_mrid("CoordinateSystem", "EPSG:4326")

    # ---- primitives ----------------------------------------------------------------------------------------------
    def begin(self, cls: str, mrid: str, name: str | None = None) -> None:
        self.lines.append(f'<cim:{cls} rdf:about="urn:uuid:{escape(mrid)}">')
        self.lines.append(f"  <cim:IdentifiedObject.mRID>{escape(mrid)}</cim:IdentifiedObject.mRID>")
        if name is not None:
            self.lines.append(f"  <cim:IdentifiedObject.name>{escape(name)}</cim:IdentifiedObject.name>")
        self._open = cls

    def end(self) -> None:
        self.lines.append(f"</cim:{self._open}>")

    def lit(self, prop: str, value: float | str) -> None:
        text = value if isinstance(value, str) else _num(value)
        if text is not None:
            self.lines.append(f"  <cim:{prop}>{escape(text)}</cim:{prop}>")

    def ref(self, prop: str, mrid: str | None) -> None:
        if mrid is not None:
            self.lines.append(f"  <cim:{prop} rdf:resource={quoteattr('urn:uuid:' + mrid)}/>")

    def enum(self, prop: str, literal: str) -> None:
        self.lines.append(f"  <cim:{prop} rdf:resource={quoteattr(CIM100_NS + literal)}/>")

    # ---- shared pieces -------------------------------------------------------------------------------------------
    def base_of(self, buses: Sequence[int]) -> str | None:
        volts = {self.m.buses[b].nominal_v for b in buses}
        if len(volts) != 1:
            return None
        (v,) = volts
        return None if math.isnan(v) else self.base_voltage[v]

    def equipment(self, feeder_mrid: str | None, buses: Sequence[int] | None = None) -> None:
        """Container, base voltage and location of a conducting equipment on ``buses``."""
        self.ref("Equipment.EquipmentContainer", feeder_mrid)
        if buses:
            self.ref("ConductingEquipment.BaseVoltage", self.base_of(buses))

    def location(self, owner_mrid: str, owner_name: str, buses: Sequence[int], prop: str) -> None:
        """Reference a Location holding the buses' coordinates (first two distinct for a multi-bus element)."""
        ends = list(dict.fromkeys(buses))[:2]
        xy = [(self.m.buses[b].x, self.m.buses[b].y) for b in ends]
        if not xy or any(math.isnan(x) or math.isnan(y) for x, y in xy):
            return
        loc = derived_mrid(owner_mrid, "Location")
        self.ref(prop, loc)
        self.pending.append((loc, owner_name, xy))

    def flush_locations(self) -> None:
        for loc, owner_name, xy in self.pending:
            self.begin("Location", loc, f"{owner_name}_Loc")
            self.ref("Location.CoordinateSystem", self.crs)
            self.end()
            for i, (x, y) in enumerate(xy, start=1):
                self.begin("PositionPoint", derived_mrid(loc, "PositionPoint", str(i)))
                self.ref("PositionPoint.Location", loc)
                self.lit("PositionPoint.sequenceNumber", i)
                self.lit("PositionPoint.xPosition", x)
                self.lit("PositionPoint.yPosition", y)
                self.end()
        self.pending = []

    # ---- document ------------------------------------------------------------------------------------------------
    def document(self) -> bytes:
        self.pending: list[tuple[str, str, list[tuple[float, float]]]] = []
        head = ['<?xml version="1.0" encoding="utf-8"?>',
                f'<rdf:RDF xmlns:cim="{CIM100_NS}" xmlns:rdf="{RDF_NS}">']
        self._base_voltages()
        self.begin("CoordinateSystem", self.crs, "WGS84")
        self.lit("CoordinateSystem.crsUrn", "EPSG:4326")
        self.end()
        for f in self.m.feeders:
            self.begin("Feeder", f.mrid, f.name)
            self.end()
        self._nodes()
        self._terminals()
        self._lines()
        self._transformers()
        self._tap_changers()
        self._switches()
        self._loads()
        self._capacitors()
        self._ders()
        self._sources()
        self._other()
        self._measurements()
        self._customers()
        self.flush_locations()
        return ("\n".join([*head, *self.lines, "</rdf:RDF>"]) + "\n").encode("utf-8")

    def _base_voltages(self) -> None:
        volts = sorted({b.nominal_v for b in self.m.buses if not math.isnan(b.nominal_v)})
        for v in volts:
            mrid = derived_mrid("BaseVoltage", repr(v))
            self.base_voltage[v] = mrid
            self.begin("BaseVoltage", mrid, f"BaseV_{v / 1000:g}kV")
            self.lit("BaseVoltage.nominalVoltage", v)
            self.end()

    def _nodes(self) -> None:
        for bus in self.m.buses:
            tn = None if bus.mrid in bus.connectivity_node_mrids else bus.mrid
            if tn is not None:
                self.begin("TopologicalNode", tn, bus.name)
                self.end()
            for cn in bus.connectivity_node_mrids:
                self.begin("ConnectivityNode", cn, bus.name)
                self.ref("ConnectivityNode.TopologicalNode", tn)
                self.ref("ConnectivityNode.ConnectivityNodeContainer", bus.feeder_mrid)
                self.end()

    def _terminals(self) -> None:
        for t in self.m.terminals:
            self.begin("Terminal", t.mrid, t.name)
            self.ref("Terminal.ConductingEquipment", t.equipment_mrid)
            self.ref("Terminal.ConnectivityNode", self.m.buses[t.bus].connectivity_node_mrids[0])
            self.lit("ACDCTerminal.sequenceNumber", t.sequence_number)
            self.end()

    def _lines(self) -> None:
        written: set[str] = set()
        rated = [ln for ln in self.m.lines
                 if not (math.isnan(ln.rated_current_a) and math.isnan(ln.emergency_current_a))]
        if rated:
            for role, suffix, duration_s in _LIMIT_TYPES:
                # names without the model's: a re-imported model may be named after its file
                self.begin("OperationalLimitType", derived_mrid("OperationalLimitType", role), suffix)
                self.lit("OperationalLimitType.acceptableDuration", duration_s)
                self.enum("OperationalLimitType.direction", "OperationalLimitDirectionKind.absoluteValue")
                self.end()
        for line in self.m.lines:
            if line.impedance_mrid not in written:
                written.add(line.impedance_mrid)
                self._impedance(line)
            self.begin("ACLineSegment", line.mrid, line.name)
            self.lit("Conductor.length", line.length_m)
            self.ref("ACLineSegment.PerLengthImpedance", line.impedance_mrid)
            self.equipment(line.feeder_mrid, [line.from_bus, line.to_bus])
            self.location(line.mrid, line.name, [line.from_bus, line.to_bus], "PowerSystemResource.Location")
            self.end()
            if line.phases != (Phase.A, Phase.B, Phase.C):
                for i, p in enumerate(line.phases, start=1):
                    self.begin("ACLineSegmentPhase", derived_mrid(line.mrid, "phase", str(i)),
                               f"{line.name}_{phase_text(p)}")
                    self.ref("ACLineSegmentPhase.ACLineSegment", line.mrid)
                    self.enum("ACLineSegmentPhase.phase", f"SinglePhaseKind.{phase_text(p)}")
                    self.lit("ACLineSegmentPhase.sequenceNumber", i)
                    self.end()
            self._current_limits(line)

    def _current_limits(self, line: LineSegment) -> None:
        limits = [(role, a) for (role, _suffix, _s), a in zip(
            _LIMIT_TYPES, (line.rated_current_a, line.emergency_current_a), strict=True) if not math.isnan(a)]
        terminal = self.first_terminal.get(line.mrid)
        if not limits or terminal is None:
            return
        limit_set = derived_mrid(line.mrid, "OperationalLimitSet")
        self.begin("OperationalLimitSet", limit_set, f"{line.name}_OpLimI")
        self.ref("OperationalLimitSet.Terminal", terminal)
        self.end()
        for role, amps in limits:
            self.begin("CurrentLimit", derived_mrid(line.mrid, "CurrentLimit", role), f"{line.name}_{role}Amps")
            self.lit("CurrentLimit.value", amps)
            self.ref("OperationalLimit.OperationalLimitSet", limit_set)
            self.ref("OperationalLimit.OperationalLimitType", derived_mrid("OperationalLimitType", role))
            self.end()

    def _impedance(self, line: LineSegment) -> None:
        seq = line.sequence
        if seq is not None:
            self.begin("PerLengthSequenceImpedance", seq.mrid, seq.name)
            for prop, v in (("r", seq.r_ohm_per_m), ("x", seq.x_ohm_per_m), ("r0", seq.r0_ohm_per_m),
                            ("x0", seq.x0_ohm_per_m), ("bch", seq.b_s_per_m), ("b0ch", seq.b0_s_per_m)):
                self.lit(f"PerLengthSequenceImpedance.{prop}", v)
            self.end()
            return
        n = line.r_ohm_per_m.shape[0]
        self.begin("PerLengthPhaseImpedance", line.impedance_mrid, line.impedance_name)
        self.lit("PerLengthPhaseImpedance.conductorCount", n)
        self.end()
        for row in range(n):
            for col in range(row + 1):
                self.begin("PhaseImpedanceData", derived_mrid(line.impedance_mrid, "data", str(row), str(col)))
                self.ref("PhaseImpedanceData.PhaseImpedance", line.impedance_mrid)
                self.lit("PhaseImpedanceData.row", row + 1)
                self.lit("PhaseImpedanceData.column", col + 1)
                self.lit("PhaseImpedanceData.r", float(line.r_ohm_per_m[row, col]))
                self.lit("PhaseImpedanceData.x", float(line.x_ohm_per_m[row, col]))
                self.lit("PhaseImpedanceData.b", float(line.b_s_per_m[row, col]))
                self.end()

    def _transformers(self) -> None:
        infos_written: set[str] = set()
        for t in self.m.transformers:
            self.begin("PowerTransformer", t.mrid, t.name)
            if t.vector_group:
                self.lit("PowerTransformer.vectorGroup", t.vector_group)
            self.ref("Equipment.EquipmentContainer", t.feeder_mrid)
            ordered = sorted(t.windings, key=lambda w: w.end_number)
            self.location(t.mrid, t.name, [w.bus for w in ordered], "PowerSystemResource.Location")
            self.end()
            self._power_transformer_ends(t)
            for tank in t.tanks:
                self._tank(t, tank.mrid, infos_written)

    def _end_common(self, end_number: int, terminal_mrid: str, bus: int, grounded: bool) -> None:
        self.lit("TransformerEnd.endNumber", end_number)
        self.ref("TransformerEnd.Terminal", terminal_mrid)
        self.ref("TransformerEnd.BaseVoltage", self.base_of([bus]))
        self.lit("TransformerEnd.grounded", grounded)

    def _power_transformer_ends(self, t: Transformer) -> None:
        ends = [w for w in t.windings if w.tank_mrid is None]
        if not ends:
            return
        number_to_mrid = {w.end_number: w.end_mrid for w in ends}
        core = derived_mrid(t.mrid, "CoreAdmittance")
        has_core = t.magnetising_g_s != 0.0 or t.magnetising_b_s != 0.0
        for i, w in enumerate(ends):
            self.begin("PowerTransformerEnd", w.end_mrid, w.name)
            self.ref("PowerTransformerEnd.PowerTransformer", t.mrid)
            self._end_common(w.end_number, w.terminal_mrid, w.bus, w.grounded)
            self.enum("PowerTransformerEnd.connectionKind", f"WindingConnection.{w.connection.value}")
            self.lit("PowerTransformerEnd.ratedU", w.rated_u_v)
            self.lit("PowerTransformerEnd.ratedS", w.rated_s_va)
            self.lit("PowerTransformerEnd.r", w.r_ohm)
            if has_core and i == 0:
                self.ref("TransformerEnd.CoreAdmittance", core)
            self.end()
        if has_core:
            self.begin("TransformerCoreAdmittance", core, f"{t.name}_Yc")
            self.lit("TransformerCoreAdmittance.g", t.magnetising_g_s)
            self.lit("TransformerCoreAdmittance.b", t.magnetising_b_s)
            self.end()
        for mesh in t.mesh_impedances:
            self.begin("TransformerMeshImpedance",
                       derived_mrid(t.mrid, "mesh", str(mesh.from_end_number), str(mesh.to_end_number)),
                       f"{t.name}_Zs{mesh.from_end_number}{mesh.to_end_number}")
            self.ref("TransformerMeshImpedance.FromTransformerEnd", number_to_mrid.get(mesh.from_end_number))
            self.ref("TransformerMeshImpedance.ToTransformerEnd", number_to_mrid.get(mesh.to_end_number))
            self.lit("TransformerMeshImpedance.r", mesh.r_ohm)
            self.lit("TransformerMeshImpedance.x", mesh.x_ohm)
            self.end()

    def _tank(self, t: Transformer, tank_mrid: str, infos_written: set[str]) -> None:
        tank = next(k for k in t.tanks if k.mrid == tank_mrid)
        windings = sorted((w for w in t.windings if w.tank_mrid == tank_mrid), key=lambda w: w.end_number)
        info = tank.info_mrid or derived_mrid(tank.mrid, "TransformerTankInfo")
        self.begin("TransformerTank", tank.mrid, tank.name)
        self.ref("TransformerTank.PowerTransformer", t.mrid)
        self.ref("TransformerTank.TransformerTankInfo", info)
        self.end()
        for w in windings:
            self.begin("TransformerTankEnd", w.end_mrid, w.name)
            self.ref("TransformerTankEnd.TransformerTank", tank.mrid)
            self._end_common(w.end_number, w.terminal_mrid, w.bus, w.grounded)
            self.enum("TransformerTankEnd.orderedPhases", f"OrderedPhaseCodeKind.{phase_text(w.phases)}")
            self.end()
        if info in infos_written:
            return
        infos_written.add(info)
        self.begin("TransformerTankInfo", info, tank.info_name or f"{tank.name}_info")
        self.end()
        end_info = {w.end_number: derived_mrid(info, "end", str(w.end_number)) for w in windings}
        for w in windings:
            self.begin("TransformerEndInfo", end_info[w.end_number], f"{tank.info_name}_{w.end_number}")
            self.ref("TransformerEndInfo.TransformerTankInfo", info)
            self.lit("TransformerEndInfo.endNumber", w.end_number)
            self.enum("TransformerEndInfo.connectionKind", f"WindingConnection.{w.connection.value}")
            self.lit("TransformerEndInfo.ratedU", w.rated_u_v)
            self.lit("TransformerEndInfo.ratedS", w.rated_s_va)
            self.lit("TransformerEndInfo.r", w.r_ohm)
            self.end()
        for i, sc in enumerate(tank.short_circuit_tests):
            self.begin("ShortCircuitTest", derived_mrid(info, "sc", str(i)), f"{tank.info_name}_sc{i}")
            self.ref("ShortCircuitTest.EnergisedEnd", end_info.get(sc.energised_end_number))
            for n in sc.grounded_end_numbers:
                self.ref("ShortCircuitTest.GroundedEnds", end_info.get(n))
            self.lit("ShortCircuitTest.leakageImpedance", sc.leakage_impedance_ohm)
            self.lit("ShortCircuitTest.loss", sc.loss_w / 1000.0)  # CIMHub writes kW
            self.lit("TransformerTest.basePower", sc.base_power_va)
            self.end()
        for i, nl in enumerate(tank.no_load_tests):
            self.begin("NoLoadTest", derived_mrid(info, "nl", str(i)), f"{tank.info_name}_nl{i}")
            self.ref("NoLoadTest.EnergisedEnd", end_info.get(nl.energised_end_number))
            self.lit("NoLoadTest.excitingCurrent", nl.exciting_current_pct)
            self.lit("NoLoadTest.loss", nl.loss_w / 1000.0)
            self.lit("TransformerTest.basePower", nl.base_power_va)
            self.end()

    def _tap_changers(self) -> None:
        controls: set[str] = set()
        for tc in self.m.tap_changers:
            self.begin("RatioTapChanger", tc.mrid, tc.name)
            self.ref("RatioTapChanger.TransformerEnd", tc.winding_end_mrid)
            self.lit("TapChanger.step", tc.step)
            for prop, v in (("normalStep", tc.normal_step), ("neutralStep", tc.neutral_step),
                            ("highStep", tc.high_step), ("lowStep", tc.low_step)):
                self.lit(f"TapChanger.{prop}", v)
            self.lit("RatioTapChanger.stepVoltageIncrement", tc.step_voltage_increment_pct)
            self.lit("TapChanger.neutralU", tc.neutral_u_v)
            self.lit("TapChanger.controlEnabled", tc.control_enabled)
            self.lit("TapChanger.ptRatio", tc.pt_ratio)
            self.lit("TapChanger.ctRating", tc.ct_rating_a)
            self.ref("TapChanger.TapChangerControl", tc.control.mrid if tc.control else None)
            self.end()
            c = tc.control
            if c is None or c.mrid in controls:
                continue
            controls.add(c.mrid)
            self.begin("TapChangerControl", c.mrid, c.name)
            if c.mode:
                self.enum("RegulatingControl.mode", f"RegulatingControlModeKind.{c.mode}")
            self.lit("RegulatingControl.targetValue", c.target_value_v)
            self.lit("RegulatingControl.targetDeadband", c.target_deadband_v)
            if c.monitored_phase:
                self.enum("RegulatingControl.monitoredPhase", f"PhaseCode.{phase_text(c.monitored_phase)}")
            self.ref("RegulatingControl.Terminal", c.terminal_mrid)
            self.lit("TapChangerControl.lineDropCompensation", c.line_drop_compensation)
            self.lit("TapChangerControl.lineDropR", c.line_drop_r_ohm)
            self.lit("TapChangerControl.lineDropX", c.line_drop_x_ohm)
            self.lit("RegulatingControl.enabled", c.enabled)
            self.end()

    def _switches(self) -> None:
        for sw in self.m.switches:
            cls = sw.kind.value
            self.begin(cls, sw.mrid, sw.name)
            self.lit("Switch.normalOpen", sw.normal_open)
            self.lit("Switch.open", sw.open)
            self.lit("Switch.ratedCurrent", sw.rated_current_a)
            if cls in PROTECTED_SWITCHES:
                self.lit("ProtectedSwitch.breakingCapacity", sw.breaking_capacity_a)
            self.equipment(sw.feeder_mrid, [sw.from_bus, sw.to_bus])
            self.location(sw.mrid, sw.name, [sw.from_bus, sw.to_bus], "PowerSystemResource.Location")
            self.end()
            for i, ps in enumerate(sw.phase_states, start=1):
                self.begin("SwitchPhase", derived_mrid(sw.mrid, "phase", str(i)),
                           f"{sw.name}_{phase_text(ps.phase_side1)}")
                self.ref("SwitchPhase.Switch", sw.mrid)
                self.enum("SwitchPhase.phaseSide1", f"SinglePhaseKind.{phase_text(ps.phase_side1)}")
                self.enum("SwitchPhase.phaseSide2", f"SinglePhaseKind.{phase_text(ps.phase_side2)}")
                self.lit("SwitchPhase.normalOpen", ps.normal_open)
                self.lit("SwitchPhase.closed", not ps.open)
                self.end()

    def _phase_values(self, cls: str, owner_prop: str, phase_prop: str, owner_mrid: str, owner_name: str,
                      rows: Iterable[tuple[Phase, Sequence[tuple[str, float]]]]) -> None:
        for i, (phase, values) in enumerate(rows, start=1):
            self.begin(cls, derived_mrid(owner_mrid, "phase", str(i)), f"{owner_name}_{phase_text(phase)}")
            self.ref(owner_prop, owner_mrid)
            self.enum(phase_prop, f"SinglePhaseKind.{phase_text(phase)}")
            for prop, v in values:
                self.lit(prop, v)
            self.end()

    def _loads(self) -> None:
        responses: set[str] = set()
        for ld in self.m.loads:
            self.begin("EnergyConsumer", ld.mrid, ld.name)
            self.lit("EnergyConsumer.p", ld.p_w)
            self.lit("EnergyConsumer.q", ld.q_var)
            self.lit("EnergyConsumer.customerCount", ld.customer_count)
            self.lit("EnergyConsumer.grounded", ld.grounded)
            self.enum("EnergyConsumer.phaseConnection", f"PhaseShuntConnectionKind.{ld.connection.value}")
            self.ref("EnergyConsumer.LoadResponse", ld.response.mrid if ld.response else None)
            self.equipment(ld.feeder_mrid, [ld.bus])
            self.location(ld.mrid, ld.name, [ld.bus], "PowerSystemResource.Location")
            self.end()
            self._phase_values("EnergyConsumerPhase", "EnergyConsumerPhase.EnergyConsumer", "EnergyConsumerPhase.phase",
                               ld.mrid, ld.name,
                               ((p, (("EnergyConsumerPhase.p", pw), ("EnergyConsumerPhase.q", q)))
                                for (p, pw), (_, q) in zip(ld.phase_p_w, ld.phase_q_var, strict=True)))
            r = ld.response
            if r is None or r.mrid in responses:
                continue
            responses.add(r.mrid)
            self.begin("LoadResponseCharacteristic", r.mrid, r.name)
            self.lit("LoadResponseCharacteristic.exponentModel", r.exponent_model)
            for prop, v in (("pConstantImpedance", r.p_constant_impedance_pct),
                            ("pConstantCurrent", r.p_constant_current_pct), ("pConstantPower", r.p_constant_power_pct),
                            ("qConstantImpedance", r.q_constant_impedance_pct),
                            ("qConstantCurrent", r.q_constant_current_pct), ("qConstantPower", r.q_constant_power_pct),
                            ("pVoltageExponent", r.p_voltage_exponent), ("qVoltageExponent", r.q_voltage_exponent)):
                self.lit(f"LoadResponseCharacteristic.{prop}", v)
            self.end()

    def _capacitors(self) -> None:
        for cap in self.m.capacitors:
            self.begin("LinearShuntCompensator", cap.mrid, cap.name)
            self.lit("LinearShuntCompensator.bPerSection", cap.b_per_section_s)
            self.lit("ShuntCompensator.sections", cap.sections)
            self.lit("ShuntCompensator.normalSections", cap.normal_sections)
            self.lit("ShuntCompensator.maximumSections", cap.maximum_sections)
            self.lit("ShuntCompensator.nomU", cap.nominal_v)
            self.lit("ShuntCompensator.grounded", cap.grounded)
            self.enum("ShuntCompensator.phaseConnection", f"PhaseShuntConnectionKind.{cap.connection.value}")
            self.equipment(cap.feeder_mrid, [cap.bus])
            self.location(cap.mrid, cap.name, [cap.bus], "PowerSystemResource.Location")
            self.end()
            self._phase_values("LinearShuntCompensatorPhase", "ShuntCompensatorPhase.ShuntCompensator",
                               "ShuntCompensatorPhase.phase", cap.mrid, cap.name,
                               ((p, (("LinearShuntCompensatorPhase.bPerSection", b),))
                                for p, b in cap.phase_b_per_section_s))

    def _ders(self) -> None:
        for der in self.m.ders:
            self.begin("PowerElectronicsConnection", der.mrid, der.name)
            for prop, v in (("p", der.p_w), ("q", der.q_var), ("ratedS", der.rated_s_va), ("ratedU", der.rated_u_v),
                            ("maxQ", der.max_q_var), ("minQ", der.min_q_var)):
                self.lit(f"PowerElectronicsConnection.{prop}", v)
            self.equipment(der.feeder_mrid, [der.bus])
            self.location(der.mrid, der.name, [der.bus], "PowerSystemResource.Location")
            self.end()
            self._der_units(der)
            self._phase_values("PowerElectronicsConnectionPhase",
                               "PowerElectronicsConnectionPhase.PowerElectronicsConnection",
                               "PowerElectronicsConnectionPhase.phase", der.mrid, der.name,
                               ((p, (("PowerElectronicsConnectionPhase.p", pw),
                                     ("PowerElectronicsConnectionPhase.q", q)))
                                for (p, pw), (_, q) in zip(der.phase_p_w, der.phase_q_var, strict=True)))

    def _der_units(self, der: Der) -> None:
        for unit in der.units:
            cls = _DER_UNIT_CLASS[unit.kind]
            self.begin(cls, unit.mrid, unit.name)
            self.ref("PowerElectronicsUnit.PowerElectronicsConnection", der.mrid)
            self.lit("PowerElectronicsUnit.maxP", unit.max_p_w)
            self.lit("PowerElectronicsUnit.minP", unit.min_p_w)
            if unit.kind is DerKind.BATTERY:
                self.lit("BatteryUnit.ratedE", unit.rated_e_wh)
                self.lit("BatteryUnit.storedE", unit.stored_e_wh)
            self.end()

    def _sources(self) -> None:
        for src in self.m.sources:
            self.begin("EnergySource", src.mrid, src.name)
            for prop, v in (("nominalVoltage", src.nominal_v), ("voltageMagnitude", src.voltage_magnitude_v),
                            ("voltageAngle", src.voltage_angle_rad), ("r", src.r_ohm), ("x", src.x_ohm),
                            ("r0", src.r0_ohm), ("x0", src.x0_ohm)):
                self.lit(f"EnergySource.{prop}", v)
            self.equipment(None, [src.bus])
            self.location(src.mrid, src.name, [src.bus], "PowerSystemResource.Location")
            self.end()

    def _other(self) -> None:
        for eq in self.m.other_equipment:
            buses = self.buses_of.get(eq.mrid, [])
            self.begin(eq.cim_class, eq.mrid, eq.name)
            self.equipment(eq.feeder_mrid, buses)
            self.location(eq.mrid, eq.name, buses[:1], "PowerSystemResource.Location")
            self.end()

    def _measurements(self) -> None:
        for meas in self.m.measurements:
            self.begin("Analog" if meas.kind.value == "analog" else "Discrete", meas.mrid, meas.name)
            self.lit("Measurement.measurementType", meas.measurement_type)
            if meas.phases:
                self.enum("Measurement.phases", f"PhaseCode.{phase_text(meas.phases)}")
            self.ref("Measurement.PowerSystemResource", meas.element_mrid)
            self.ref("Measurement.Terminal", meas.terminal_mrid)
            self.end()

    def _customers(self) -> None:
        for c in self.m.customers:
            agreement = c.agreement_mrid
            if agreement is None and c.kind is not None:
                agreement = derived_mrid(c.mrid, "CustomerAgreement")
            self.begin("UsagePoint", c.mrid, c.consumer_number)
            self.ref("UsagePoint.Equipments", c.load_mrid)
            if c.phases:
                self.enum("UsagePoint.phaseCode", f"PhaseCode.{phase_text(c.phases)}")
            if c.connection_category:
                self.lit("UsagePoint.connectionCategory", c.connection_category)
            self.ref("UsagePoint.CustomerAgreement", agreement)
            if not (math.isnan(c.x) or math.isnan(c.y)):
                loc = derived_mrid(c.mrid, "Location")
                self.ref("UsagePoint.Location", loc)
                self.pending.append((loc, c.consumer_number, [(c.x, c.y)]))
            self.end()
            if agreement is not None:
                self._agreement(c, agreement)

    def _agreement(self, c: Customer, agreement: str) -> None:
        customer = c.customer_mrid
        if customer is None and c.kind is not None:
            customer = derived_mrid(c.mrid, "Customer")
        self.begin("CustomerAgreement", agreement, c.consumer_number)
        self.ref("CustomerAgreement.Customer", customer)
        self.end()
        if customer is not None:
            self.begin("Customer", customer, c.consumer_number)
            if c.kind is not None:
                self.enum("Customer.kind", f"CustomerKind.{c.kind.value}")
            self.end()
