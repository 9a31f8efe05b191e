"""The network model of a distribution feeder: pure data, built once from CIM (see ``models.cim``).

Buses are topological nodes (connectivity nodes joined by nothing but their own terminals; switches are branches
so topology processing can open and close them). Every element names its buses by index into ``NetworkModel.buses``
and keeps its CIM mRID so measurements and commands can be bound back to it. SI units throughout (V, W, var, ohm, S,
m); the unit is in every field name. Impedance matrices are read-only numpy arrays ordered like ``phases``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum

import numpy as np

__all__ = [
    "BUS_DTYPE",
    "Bus",
    "Capacitor",
    "Customer",
    "CustomerKind",
    "Der",
    "DerKind",
    "DerUnit",
    "EnergySource",
    "Feeder",
    "LineSegment",
    "Load",
    "LoadResponse",
    "Measurement",
    "MeasurementKind",
    "ModelDiagnostics",
    "NetworkModel",
    "OtherEquipment",
    "Phase",
    "SequenceImpedance",
    "ShuntConnection",
    "Switch",
    "SwitchKind",
    "SwitchPhaseState",
    "TapChanger",
    "TapChangerControl",
    "Terminal",
    "Transformer",
    "TransformerMeshImpedance",
    "TransformerNoLoadTest",
    "TransformerShortCircuitTest",
    "TransformerTank",
    "TransformerWinding",
    "WindingConnection",
    "phase_from_cim",
    "phase_text",
    "single_phases",
]


class Phase(IntFlag):
    """Phase set of a node, conductor or measurement; NONE is the empty set (CIM ``PhaseCode.none``)."""

    NONE = 0
    A = 0x01
    B = 0x02
    C = 0x04
    N = 0x08
    S1 = 0x10  # split-phase secondary, hot leg 1
    S2 = 0x20  # split-phase secondary, hot leg 2

    @property
    def conductors(self) -> int:
        """Number of phase conductors (neutral not counted)."""
        return sum(1 for p in (Phase.A, Phase.B, Phase.C, Phase.S1, Phase.S2) if p in self)


_PHASE_ORDER: tuple[tuple[str, Phase], ...] = (
    ("A", Phase.A),
    ("B", Phase.B),
    ("C", Phase.C),
    ("s1", Phase.S1),
    ("s2", Phase.S2),
    ("N", Phase.N),
)


def phase_from_cim(code: str) -> Phase:
    """Parse a CIM phase literal (PhaseCode, SinglePhaseKind or OrderedPhaseCodeKind suffix, e.g. ``ABCN``,
    ``s12N``, ``Ns2``, ``none``). Raises ValueError naming the code when it is not a phase code."""
    text = code.rsplit(".", 1)[-1] if "." in code else code
    if text in ("none", ""):
        return Phase.NONE
    result = Phase.NONE
    rest = text
    while rest:
        if rest.startswith("s12"):
            result |= Phase.S1 | Phase.S2
            rest = rest[3:]
        elif rest.startswith(("s1", "s2")):
            result |= Phase.S1 if rest[1] == "1" else Phase.S2
            rest = rest[2:]
        elif rest[0] in "ABCN":
            result |= Phase[rest[0]]
            rest = rest[1:]
        else:
            raise ValueError(f"unknown phase code {code!r}")
    return result


def phase_text(phases: Phase) -> str:
    """Compact text of a phase set in A, B, C, s1, s2, N order (``"none"`` for the empty set)."""
    text = "".join(name for name, flag in _PHASE_ORDER if flag in phases)
    return text or "none"


def single_phases(phases: Phase) -> tuple[Phase, ...]:
    """The single phases of a set in A, B, C, s1, s2, N order."""
    return tuple(flag for _name, flag in _PHASE_ORDER if flag in phases)


class SwitchKind(StrEnum):
    BREAKER = "Breaker"
    RECLOSER = "Recloser"
    FUSE = "Fuse"
    LOAD_BREAK_SWITCH = "LoadBreakSwitch"
    DISCONNECTOR = "Disconnector"
    SECTIONALISER = "Sectionaliser"
    JUMPER = "Jumper"
    SWITCH = "Switch"


class WindingConnection(StrEnum):
    """CIM WindingConnection: D delta, Y wye, Yn grounded wye, Z/Zn zig-zag, A autotransformer, I single-phase."""

    D = "D"
    Y = "Y"
    YN = "Yn"
    Z = "Z"
    ZN = "Zn"
    A = "A"
    I = "I"  # noqa: E741 - the CIM literal is a capital I


class ShuntConnection(StrEnum):
    """CIM PhaseShuntConnectionKind of loads and capacitors."""

    D = "D"
    Y = "Y"
    YN = "Yn"
    I = "I"  # noqa: E741 - the CIM literal is a capital I
    G = "G"


class MeasurementKind(StrEnum):
    ANALOG = "analog"
    DISCRETE = "discrete"


class DerKind(StrEnum):
    PHOTOVOLTAIC = "photovoltaic"
    BATTERY = "battery"
    WIND = "wind"
    MIXED = "mixed"  # several unit kinds behind one inverter
    NONE = "none"  # an inverter without units


@dataclass(frozen=True, slots=True)
class Feeder:
    mrid: str
    name: str


@dataclass(frozen=True, slots=True)
class Bus:
    """A topological node. ``phases`` is the union of the phases of the conductors attached to it."""

    index: int
    mrid: str  # TopologicalNode mRID when the file has one, else the (single) ConnectivityNode's
    name: str
    connectivity_node_mrids: tuple[str, ...]
    phases: Phase
    nominal_v: float  # line-to-line, from the BaseVoltage of attached equipment; NaN when unknown
    x: float  # first PositionPoint of the attached equipment's Location that sits on this bus; NaN when none
    y: float
    feeder_mrid: str | None


BUS_DTYPE = np.dtype(
    [("index", np.int32), ("phases", np.uint8), ("nominal_v", np.float64), ("x", np.float64), ("y", np.float64)]
)


@dataclass(frozen=True, slots=True)
class Terminal:
    mrid: str
    name: str
    equipment_mrid: str
    sequence_number: int
    bus: int


@dataclass(frozen=True, slots=True)
class SequenceImpedance:
    mrid: str
    name: str
    r_ohm_per_m: float
    x_ohm_per_m: float
    r0_ohm_per_m: float
    x0_ohm_per_m: float
    b_s_per_m: float
    b0_s_per_m: float


@dataclass(frozen=True, slots=True, eq=False)
class LineSegment:
    """An ACLineSegment. The matrices are n x n over ``phases`` (in sequenceNumber order), per metre."""

    mrid: str
    name: str
    from_bus: int
    to_bus: int
    phases: tuple[Phase, ...]
    length_m: float
    impedance_mrid: str
    impedance_name: str
    r_ohm_per_m: np.ndarray
    x_ohm_per_m: np.ndarray
    b_s_per_m: np.ndarray
    sequence: SequenceImpedance | None  # set when the file gave a PerLengthSequenceImpedance
    feeder_mrid: str | None
    # Current ratings per phase conductor (CIM CurrentLimit on the line's terminals); NaN when the file gives none.
    rated_current_a: float = math.nan  # normal (continuous) rating
    emergency_current_a: float = math.nan  # short-time (emergency) rating

    @property
    def phase_set(self) -> Phase:
        result = Phase.NONE
        for p in self.phases:
            result |= p
        return result


@dataclass(frozen=True, slots=True)
class TransformerWinding:
    """One end (winding) of a transformer, from a PowerTransformerEnd or a TransformerTankEnd with its EndInfo."""

    end_mrid: str
    name: str
    end_number: int
    bus: int
    terminal_mrid: str
    phases: Phase
    connection: WindingConnection
    rated_u_v: float
    rated_s_va: float
    r_ohm: float
    grounded: bool
    tank_mrid: str | None  # None for a PowerTransformerEnd (balanced three-phase description)


@dataclass(frozen=True, slots=True)
class TransformerMeshImpedance:
    from_end_number: int
    to_end_number: int
    r_ohm: float
    x_ohm: float


@dataclass(frozen=True, slots=True)
class TransformerShortCircuitTest:
    energised_end_number: int
    grounded_end_numbers: tuple[int, ...]
    leakage_impedance_ohm: float  # CIM leakageImpedance: ohm referred to the energised end
    loss_w: float  # CIMHub writes kW: converted here
    base_power_va: float


@dataclass(frozen=True, slots=True)
class TransformerNoLoadTest:
    energised_end_number: int
    exciting_current_pct: float
    loss_w: float
    base_power_va: float


@dataclass(frozen=True, slots=True)
class TransformerTank:
    mrid: str
    name: str
    info_mrid: str | None
    info_name: str
    short_circuit_tests: tuple[TransformerShortCircuitTest, ...]
    no_load_tests: tuple[TransformerNoLoadTest, ...]


@dataclass(frozen=True, slots=True)
class Transformer:
    mrid: str
    name: str
    vector_group: str
    windings: tuple[TransformerWinding, ...]  # ordered by tank, then end number
    tanks: tuple[TransformerTank, ...]
    mesh_impedances: tuple[TransformerMeshImpedance, ...]
    magnetising_g_s: float
    magnetising_b_s: float
    is_regulator: bool  # carries a RatioTapChanger
    feeder_mrid: str | None

    @property
    def buses(self) -> tuple[int, ...]:
        return tuple(dict.fromkeys(w.bus for w in self.windings))


@dataclass(frozen=True, slots=True)
class TapChangerControl:
    mrid: str
    name: str
    mode: str
    target_value_v: float  # on the PT secondary (CIMHub: 120 V base)
    target_deadband_v: float
    monitored_phase: Phase
    terminal_mrid: str | None
    line_drop_compensation: bool
    line_drop_r_ohm: float
    line_drop_x_ohm: float
    enabled: bool


@dataclass(frozen=True, slots=True)
class TapChanger:
    """A RatioTapChanger on one transformer winding; ``step`` is the present (initial) tap position."""

    mrid: str
    name: str
    transformer_mrid: str
    winding_end_mrid: str
    end_number: int
    bus: int
    phases: Phase
    step: float
    normal_step: int
    neutral_step: int
    high_step: int
    low_step: int
    step_voltage_increment_pct: float
    neutral_u_v: float
    control_enabled: bool
    pt_ratio: float
    ct_rating_a: float
    control: TapChangerControl | None

    @property
    def ratio_pu(self) -> float:
        return 1.0 + (self.step - self.neutral_step) * self.step_voltage_increment_pct / 100.0


@dataclass(frozen=True, slots=True)
class SwitchPhaseState:
    phase_side1: Phase
    phase_side2: Phase
    normal_open: bool
    open: bool


@dataclass(frozen=True, slots=True)
class Switch:
    mrid: str
    name: str
    kind: SwitchKind
    from_bus: int
    to_bus: int
    phases: Phase
    normal_open: bool
    open: bool
    rated_current_a: float
    breaking_capacity_a: float  # NaN for kinds that are not protected switches
    phase_states: tuple[SwitchPhaseState, ...]  # SwitchPhase objects when the file has any
    feeder_mrid: str | None


@dataclass(frozen=True, slots=True)
class LoadResponse:
    """ZIP (or exponential) voltage dependence; percentages of P and Q (sum 100 in the ZIP model)."""

    mrid: str
    name: str
    exponent_model: bool
    p_constant_impedance_pct: float
    p_constant_current_pct: float
    p_constant_power_pct: float
    q_constant_impedance_pct: float
    q_constant_current_pct: float
    q_constant_power_pct: float
    p_voltage_exponent: float
    q_voltage_exponent: float


@dataclass(frozen=True, slots=True)
class Load:
    mrid: str
    name: str
    bus: int
    phases: Phase
    connection: ShuntConnection
    p_w: float
    q_var: float
    phase_p_w: tuple[tuple[Phase, float], ...]  # EnergyConsumerPhase values, empty when balanced
    phase_q_var: tuple[tuple[Phase, float], ...]
    grounded: bool
    customer_count: int
    response: LoadResponse | None
    feeder_mrid: str | None


@dataclass(frozen=True, slots=True)
class Capacitor:
    mrid: str
    name: str
    bus: int
    phases: Phase
    connection: ShuntConnection
    b_per_section_s: float
    phase_b_per_section_s: tuple[tuple[Phase, float], ...]
    sections: float
    normal_sections: int
    maximum_sections: int
    nominal_v: float
    grounded: bool
    feeder_mrid: str | None


@dataclass(frozen=True, slots=True)
class DerUnit:
    mrid: str
    name: str
    kind: DerKind
    max_p_w: float
    min_p_w: float
    rated_e_wh: float  # NaN unless a battery
    stored_e_wh: float


@dataclass(frozen=True, slots=True)
class Der:
    """A PowerElectronicsConnection (inverter) with its units."""

    mrid: str
    name: str
    kind: DerKind
    bus: int
    phases: Phase
    p_w: float
    q_var: float
    rated_s_va: float
    rated_u_v: float
    max_q_var: float
    min_q_var: float
    units: tuple[DerUnit, ...]
    phase_p_w: tuple[tuple[Phase, float], ...]
    phase_q_var: tuple[tuple[Phase, float], ...]
    feeder_mrid: str | None


@dataclass(frozen=True, slots=True)
class EnergySource:
    mrid: str
    name: str
    bus: int
    nominal_v: float
    voltage_magnitude_v: float
    voltage_angle_rad: float
    r_ohm: float
    x_ohm: float
    r0_ohm: float
    x0_ohm: float


@dataclass(frozen=True, slots=True)
class Measurement:
    """An Analog or Discrete: what it measures (element and terminal) and the bus that terminal sits on."""

    mrid: str
    name: str
    kind: MeasurementKind
    measurement_type: str  # CIM/GridAPPS-D type: PNV, VA, A, Pos, ...
    phases: Phase
    element_mrid: str
    element_class: str
    terminal_mrid: str | None
    bus: int | None


class CustomerKind(StrEnum):
    """CIM ``CustomerKind`` (IEC 61968-11): the literals as CIM spells them."""

    COMMERCIAL_INDUSTRIAL = "commercialIndustrial"
    ENERGY_SERVICE_SCHEDULER = "energyServiceScheduler"
    ENERGY_SERVICE_SUPPLIER = "energyServiceSupplier"
    ENTERPRISE = "enterprise"
    INTERNAL_USE = "internalUse"
    OTHER = "other"
    PUMPING_LOAD = "pumpingLoad"
    REGIONAL_OPERATOR = "regionalOperator"
    RESIDENTIAL = "residential"
    RESIDENTIAL_AND_COMMERCIAL = "residentialAndCommercial"
    RESIDENTIAL_AND_STREETLIGHT = "residentialAndStreetlight"
    RESIDENTIAL_FARM_SERVICE = "residentialFarmService"
    RESIDENTIAL_STREETLIGHT_OTHERS = "residentialStreetlightOthers"
    SUBSIDIARY = "subsidiary"
    WIND_MACHINE = "windMachine"


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer's supply point: a CIM ``UsagePoint`` (its name is the consumer number) linked by
    ``UsagePoint.Equipments`` to the EnergyConsumer that aggregates it; the kind is ``Customer.kind`` of the Customer
    reached through ``UsagePoint.CustomerAgreement``. ``load``/``bus`` are None when the usage point names no load."""

    mrid: str  # the UsagePoint's
    consumer_number: str
    load_mrid: str | None
    load: int | None  # index into NetworkModel.loads
    bus: int | None
    phases: Phase  # UsagePoint.phaseCode; NONE when the file gives none
    kind: CustomerKind | None
    connection_category: str  # UsagePoint.connectionCategory (the utility's tariff category), "" when none
    x: float  # UsagePoint.Location's first PositionPoint; NaN when none
    y: float
    customer_mrid: str | None = None
    agreement_mrid: str | None = None


@dataclass(frozen=True, slots=True)
class OtherEquipment:
    """Conducting equipment that terminals and measurements refer to but that has no electrical model here (a
    BusbarSection, say): kept so the model can be written back to CIM whole."""

    mrid: str
    name: str
    cim_class: str
    feeder_mrid: str | None


@dataclass(frozen=True, slots=True)
class ModelDiagnostics:
    """What the import read and what it did not use."""

    class_counts: Mapping[str, int]  # every class read, with its object count
    skipped_classes: Mapping[str, int]  # classes read but not used by the importer
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False)
class NetworkModel:
    name: str
    source: str  # file the model was read from
    buses: tuple[Bus, ...]
    terminals: tuple[Terminal, ...]
    lines: tuple[LineSegment, ...]
    transformers: tuple[Transformer, ...]
    tap_changers: tuple[TapChanger, ...]
    switches: tuple[Switch, ...]
    loads: tuple[Load, ...]
    capacitors: tuple[Capacitor, ...]
    ders: tuple[Der, ...]
    sources: tuple[EnergySource, ...]
    feeders: tuple[Feeder, ...]
    measurements: tuple[Measurement, ...]
    diagnostics: ModelDiagnostics
    _bus_by_cn: Mapping[str, int] = field(default_factory=dict, repr=False)
    customers: tuple[Customer, ...] = ()
    other_equipment: tuple[OtherEquipment, ...] = ()

    def bus_of_connectivity_node(self, cn_mrid: str) -> int:
        """Index of the bus holding a ConnectivityNode; KeyError naming the mRID when unknown."""
        try:
            return self._bus_by_cn[cn_mrid]
        except KeyError:
            raise KeyError(f"no ConnectivityNode {cn_mrid!r} in network {self.name!r}") from None

    def bus_by_name(self, name: str) -> Bus:
        for bus in self.buses:
            if bus.name == name:
                return bus
        raise KeyError(f"no bus named {name!r} in network {self.name!r}")

    def bus_table(self) -> np.ndarray:
        """The buses as a numpy structured array (``BUS_DTYPE``) for vectorised work."""
        table = np.zeros(len(self.buses), dtype=BUS_DTYPE)
        table["index"] = [b.index for b in self.buses]
        table["phases"] = [int(b.phases) for b in self.buses]
        table["nominal_v"] = [b.nominal_v for b in self.buses]
        table["x"] = [b.x for b in self.buses]
        table["y"] = [b.y for b in self.buses]
        return table

    def counts(self) -> dict[str, int]:
        """Element counts, the same keys the summary CLI prints."""
        return {
            "topological_nodes": len(self.buses),
            "line_segments": len(self.lines),
            "transformers": len(self.transformers),
            "tap_changers": len(self.tap_changers),
            "switches": len(self.switches),
            "loads": len(self.loads),
            "capacitors": len(self.capacitors),
            "ders": len(self.ders),
            "sources": len(self.sources),
            "feeders": len(self.feeders),
            "analog_measurements": sum(1 for m in self.measurements if m.kind is MeasurementKind.ANALOG),
            "discrete_measurements": sum(1 for m in self.measurements if m.kind is MeasurementKind.DISCRETE),
            "nodes_with_coordinates": sum(1 for b in self.buses if not math.isnan(b.x)),
            "customers": len(self.customers),
        }
