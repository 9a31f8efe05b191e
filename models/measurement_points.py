"""CIM measurements -> RTDB points: each Analog/Discrete of the network model whose measured element matches an RTU's
equipment globs becomes one or more points of that RTU, bound to the element and terminal it measures.

Mapping (``measurementType`` as GridAPPS-D writes it):

- ``Pos`` on a switch -> double point (M_DP_TB_1); breakers, reclosers, load-break switches, disconnectors,
  sectionalisers and plain switches also get a select-before-operate double command (C_DC_NA_1), fuses are status
  only. On a capacitor: the same (capacitor bank switching). On a transformer (its tap changer): an analog step
  position (M_ME_TE_1, scaled integer).
- ``PNV`` -> analog kV (phase-neutral) per phase; ``A`` -> analog A per phase; ``VA`` -> analog kW and kvar per phase;
  ``FPI`` -> single point (M_SP_TB_1). Other types are skipped (``DerivedPoints.skipped``).
- Every tap changer with a measured position also gets a set-point ``<tap changer>.Step.Set`` (target step, scaled
  integer M_ME_TE_1 with a direct C_SE_NB_1 command; ``Quantity.TAP_SETPOINT``): how SCADA moves the tap.

Names are ``<element>.<quantity>[.T<n>][.ph_<phase>]``: ``F1-CB.Pos``, ``F1-CB.A.ph_A``, ``F1-CB.P.ph_A``,
``SS-BUS1.PNV.ph_B``, ``F1-RMU03-LBS1.FPI``; a tap position takes the tap changer's name (``SS-TR1-OLTC.Pos``).
``.T<n>`` appears only when the element has that quantity measured on more than one terminal, ``.ph_X`` for analogs
always and for status points only when the element has several per-phase measurements of that type (IEEE 123's
``sw1.Pos.ph_A``). A measured element the network model does not keep (a BusbarSection) goes by the name of the bus
its terminal is on. One command per element: on its first status point in name order (gang-operated switches).

IOAs, per RTU, from the RTU's ``ioa_base`` and the points sorted by name: the i-th status point gets
``ioa_base + 1 + i`` and its command ``ioa_base + 10001 + i``; the j-th analog gets ``ioa_base + 20001 + j``; the k-th
set-point ``ioa_base + 30001 + k`` and its command ``ioa_base + 40001 + k``. So an IOA changes only when a point is
added or removed before it in name order.
"""

from __future__ import annotations

import fnmatch
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from models.errors import ConfigError
from models.network import Measurement, NetworkModel, Phase, SwitchKind, single_phases

__all__ = [
    "COMMAND_IOA_OFFSET",
    "ANALOG_IOA_OFFSET",
    "SETPOINT_IOA_OFFSET",
    "SETPOINT_COMMAND_IOA_OFFSET",
    "DEFAULT_IOA_BASE",
    "DerivedPoint",
    "DerivedPoints",
    "MeasurementBinding",
    "Quantity",
    "RtuEquipment",
    "derive_measurement_points",
]

DEFAULT_IOA_BASE = 100_000  # keeps derived points clear of hand-written ones (usually 1..99999)
STATUS_BLOCK = 10_000
COMMAND_IOA_OFFSET = 10_001
ANALOG_IOA_OFFSET = 20_001
SETPOINT_IOA_OFFSET = 30_001
SETPOINT_COMMAND_IOA_OFFSET = 40_001

VOLTAGE_LO_PU, VOLTAGE_HI_PU = 0.94, 1.06  # Indian distribution code: +-6 % at 11 kV
VOLTAGE_LOLO_PU, VOLTAGE_HIHI_PU = 0.90, 1.10
CURRENT_HI_SHARE, CURRENT_HIHI_SHARE = 0.9, 1.0  # of the rated current


class Quantity(StrEnum):
    VOLTAGE_KV = "voltage_kv"  # phase-neutral
    CURRENT_A = "current_a"
    P_KW = "p_kw"
    Q_KVAR = "q_kvar"
    SWITCH_POSITION = "switch_position"  # DoubleState of a switch or capacitor
    TAP_POSITION = "tap_position"
    TAP_SETPOINT = "tap_setpoint"  # commanded target step of a tap changer (a set-point point)
    FAULT_INDICATOR = "fault_indicator"


_CONTROLLABLE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER, SwitchKind.LOAD_BREAK_SWITCH,
                           SwitchKind.DISCONNECTOR, SwitchKind.SECTIONALISER, SwitchKind.SWITCH})
_PROTECTIVE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})
_KNOWN_TYPES = frozenset({"Pos", "PNV", "A", "VA", "FPI"})


@dataclass(frozen=True, slots=True)
class MeasurementBinding:
    """What a derived point measures: the CIM measurement, the element, its terminal, the phase and the quantity."""

    measurement_mrid: str
    measurement_name: str
    measurement_type: str
    quantity: Quantity
    phase: Phase  # a single phase for per-phase points, the measurement's phase set otherwise
    element_mrid: str
    element_name: str
    element_class: str
    terminal: int | None  # sequence number of the measured terminal
    bus: int | None
    tap_changer_mrid: str | None = None


@dataclass(frozen=True, slots=True)
class RtuEquipment:
    """An RTU's claim on network equipment: fnmatch globs on CIM equipment names."""

    rtu: str
    globs: tuple[str, ...]
    ioa_base: int = DEFAULT_IOA_BASE


@dataclass(frozen=True, slots=True)
class DerivedPoint:
    """One point made from a measurement, before it gets its id in the station's point list."""

    rtu: str
    name: str
    kind: str  # PointKind value (models.points is imported by config, which imports this lazily)
    type_id: str
    address: int
    units: str
    element: str  # mRID
    terminal: int | None
    description: str
    control_address: int | None
    limits: tuple[float | None, float | None, float | None, float | None, float] | None  # lolo, lo, hi, hihi, db
    state_alarms: tuple[tuple[int, str, str], ...]  # (value, priority name, text)
    initial: float  # initial status (DoubleState / 0-1; a set-point: the tap step) for the simulator's profile
    binding: MeasurementBinding


@dataclass(frozen=True, slots=True)
class DerivedPoints:
    points: tuple[DerivedPoint, ...]
    skipped: tuple[str, ...]  # "measurement name (type)" of measurements no mapping exists for


@dataclass(frozen=True, slots=True)
class _Element:
    mrid: str
    name: str
    cim_class: str
    switch_kind: SwitchKind | None = None
    normal_open: bool = False
    open: bool = False
    rated_current_a: float = math.nan
    match_name: str = ""  # the name the RTU globs test when not ``name`` (a tap changer: its transformer's)


def _elements(model: NetworkModel) -> dict[str, _Element]:
    out: dict[str, _Element] = {}
    for sw in model.switches:
        out[sw.mrid] = _Element(sw.mrid, sw.name, sw.kind.value, sw.kind, sw.normal_open, sw.open, sw.rated_current_a)
    for ln in model.lines:
        out[ln.mrid] = _Element(ln.mrid, ln.name, "ACLineSegment")
    for tr in model.transformers:
        rated = tr.windings[0].rated_s_va / (math.sqrt(3) * tr.windings[0].rated_u_v) if tr.windings else math.nan
        out[tr.mrid] = _Element(tr.mrid, tr.name, "PowerTransformer", rated_current_a=rated)
    for ld in model.loads:
        out[ld.mrid] = _Element(ld.mrid, ld.name, "EnergyConsumer")
    for cap in model.capacitors:
        on = cap.sections > 0
        out[cap.mrid] = _Element(cap.mrid, cap.name, "LinearShuntCompensator", normal_open=not on, open=not on)
    for der in model.ders:
        out[der.mrid] = _Element(der.mrid, der.name, "PowerElectronicsConnection")
    for src in model.sources:
        out[src.mrid] = _Element(src.mrid, src.name, "EnergySource")
    transformer_name = {t.mrid: t.name for t in model.transformers}
    for tap in model.tap_changers:
        out[tap.mrid] = _Element(tap.mrid, tap.name, "RatioTapChanger",
                                 match_name=transformer_name.get(tap.transformer_mrid, tap.name))
    return out


def derive_measurement_points(model: NetworkModel, claims: Sequence[RtuEquipment]) -> DerivedPoints:
    """Map every measurement whose element matches an RTU's globs to points of that RTU (see the module doc).

    ConfigError when a measurement is claimed by two RTUs, or two measurements would give the same point name."""
    elements = _elements(model)
    terminal_seq = {t.mrid: t.sequence_number for t in model.terminals}
    taps_of: dict[str, list] = defaultdict(list)
    for tap in model.tap_changers:
        taps_of[tap.transformer_mrid].append(tap)
    skipped: list[str] = []
    chosen: list[tuple[str, Measurement, _Element]] = []
    claimed: set[str] = set()
    for m in model.measurements:
        el = elements.get(m.element_mrid)
        if el is None:
            if m.bus is None:
                continue  # neither a modelled element nor a terminal: nothing to name or simulate it by
            # A class the model does not keep (a BusbarSection, say): named after the bus its terminal is on.
            el = _Element(m.element_mrid, model.buses[m.bus].name, m.element_class)
        owners = [c.rtu for c in claims if any(fnmatch.fnmatchcase(el.match_name or el.name, g) for g in c.globs)]
        if not owners:
            continue
        if len(owners) > 1:
            raise ConfigError(f"measurement {m.name!r} on {el.cim_class} {el.name!r} is claimed by RTUs "
                              f"{owners[0]!r} and {owners[1]!r} (their equipment globs overlap)")
        claimed.add(owners[0])
        if m.measurement_type not in _KNOWN_TYPES:
            skipped.append(f"{m.name} ({m.measurement_type})")
            continue
        chosen.append((owners[0], m, el))

    idle = [c for c in claims if c.rtu not in claimed]
    if idle:
        raise ConfigError(f"RTU {idle[0].rtu!r}: equipment {list(idle[0].globs)} matches no measured equipment of "
                          f"network {model.name!r}")

    # Which (element, type) pairs are measured on several terminals / with several per-phase measurements.
    terminals_of: dict[tuple[str, str], set[int | None]] = defaultdict(set)
    count_at: dict[tuple[str, str, int | None], int] = defaultdict(int)
    for _rtu, m, el in chosen:
        seq = terminal_seq.get(m.terminal_mrid) if m.terminal_mrid else None
        terminals_of[(el.mrid, m.measurement_type)].add(seq)
        count_at[(el.mrid, m.measurement_type, seq)] += 1

    raw: list[tuple[str, str, MeasurementBinding, _Element, Measurement]] = []  # (rtu, name, binding, el, m)
    for rtu, m, el in chosen:
        seq = terminal_seq.get(m.terminal_mrid) if m.terminal_mrid else None
        term = f".T{seq}" if len(terminals_of[(el.mrid, m.measurement_type)]) > 1 and seq is not None else ""

        def bind(quantity: Quantity, phase: Phase, tap: str | None = None, *, m: Measurement = m, el: _Element = el,
                 seq: int | None = seq) -> MeasurementBinding:
            return MeasurementBinding(m.mrid, m.name, m.measurement_type, quantity, phase, el.mrid, el.name,
                                      el.cim_class, seq, m.bus, tap)

        if m.measurement_type in ("Pos", "FPI"):
            one_phase = len(single_phases(m.phases & ~Phase.N)) == 1
            ph = f".ph_{_phase_name(m.phases)}" if one_phase and count_at[(el.mrid, m.measurement_type, seq)] > 1 \
                else ""
            if m.measurement_type == "FPI":
                raw.append((rtu, f"{el.name}.FPI{term}{ph}", bind(Quantity.FAULT_INDICATOR, m.phases), el, m))
            elif el.cim_class == "PowerTransformer":
                taps = [t for t in taps_of.get(el.mrid, []) if not m.phases & ~Phase.N or t.phases & m.phases]
                taps.sort(key=lambda t: t.name)
                base = taps[0].name if taps else f"{el.name}.Tap"
                raw.append((rtu, f"{base}.Pos{term}{ph}",
                            bind(Quantity.TAP_POSITION, m.phases, taps[0].mrid if taps else None), el, m))
            elif el.cim_class == "RatioTapChanger":
                raw.append((rtu, f"{el.name}.Pos{term}{ph}", bind(Quantity.TAP_POSITION, m.phases, el.mrid), el, m))
            else:
                raw.append((rtu, f"{el.name}.Pos{term}{ph}", bind(Quantity.SWITCH_POSITION, m.phases), el, m))
            continue
        phases = single_phases(m.phases & ~Phase.N) or (Phase.A, Phase.B, Phase.C)
        for p in phases:
            ph = f".ph_{_phase_name(p)}"
            if m.measurement_type == "PNV":
                raw.append((rtu, f"{el.name}.PNV{term}{ph}", bind(Quantity.VOLTAGE_KV, p), el, m))
            elif m.measurement_type == "A":
                raw.append((rtu, f"{el.name}.A{term}{ph}", bind(Quantity.CURRENT_A, p), el, m))
            else:  # VA: the RTDB keeps active and reactive power apart
                raw.append((rtu, f"{el.name}.P{term}{ph}", bind(Quantity.P_KW, p), el, m))
                raw.append((rtu, f"{el.name}.Q{term}{ph}", bind(Quantity.Q_KVAR, p), el, m))

    # One set-point per tap changer whose position is measured, on the RTU of its (first) position point.
    tap_by_mrid = {t.mrid: t for t in model.tap_changers}
    has_setpoint: set[str] = set()
    for rtu, _name, b, el, m in sorted(raw, key=lambda r: r[1]):
        tap = tap_by_mrid.get(b.tap_changer_mrid or "")
        if b.quantity is not Quantity.TAP_POSITION or tap is None or tap.mrid in has_setpoint:
            continue
        has_setpoint.add(tap.mrid)
        raw.append((rtu, f"{tap.name}.Step.Set", MeasurementBinding(
            m.mrid, m.name, m.measurement_type, Quantity.TAP_SETPOINT, tap.phases, el.mrid, el.name, el.cim_class,
            None, tap.bus, tap.mrid), el, m))

    seen: dict[str, str] = {}
    for _rtu, name, b, _el, _m in raw:
        if name in seen:
            raise ConfigError(f"measurements {seen[name]!r} and {b.measurement_name!r} both become point {name!r}")
        seen[name] = b.measurement_name

    base_of = {c.rtu: c.ioa_base for c in claims}
    out: list[DerivedPoint] = []
    for claim in claims:
        mine = sorted((r for r in raw if r[0] == claim.rtu), key=lambda r: r[1])
        status = [r for r in mine if r[2].quantity in (Quantity.SWITCH_POSITION, Quantity.FAULT_INDICATOR)]
        setpoints = [r for r in mine if r[2].quantity is Quantity.TAP_SETPOINT]
        analog = [r for r in mine if r not in status and r not in setpoints]
        if len(status) >= STATUS_BLOCK:
            raise ConfigError(f"RTU {claim.rtu!r}: {len(status)} derived status points, at most {STATUS_BLOCK - 1}")
        if setpoints and len(analog) >= STATUS_BLOCK:
            raise ConfigError(f"RTU {claim.rtu!r}: {len(analog)} derived analogs run into its set-point IOAs "
                              f"(at most {STATUS_BLOCK - 1} beside set-points)")
        controlled: set[str] = set()
        base = base_of[claim.rtu]
        for i, (rtu, name, b, el, m) in enumerate(status):
            out.append(_status_point(rtu, name, b, el, m, base + 1 + i, base + COMMAND_IOA_OFFSET + i, controlled))
        for j, (rtu, name, b, el, m) in enumerate(analog):
            out.append(_analog_point(model, rtu, name, b, el, m, base + ANALOG_IOA_OFFSET + j))
        for k, (rtu, name, b, el, _m) in enumerate(setpoints):
            tap = tap_by_mrid[b.tap_changer_mrid or ""]
            out.append(DerivedPoint(rtu, name, "setpoint", "M_ME_TE_1", base + SETPOINT_IOA_OFFSET + k, "step",
                                    el.mrid, None, f"target step of tap changer {tap.name} ({tap.low_step}.."
                                    f"{tap.high_step}) on {el.cim_class} {el.name}",
                                    base + SETPOINT_COMMAND_IOA_OFFSET + k, None, (), float(tap.step), b))
    return DerivedPoints(tuple(out), tuple(skipped))


def _phase_name(phases: Phase) -> str:
    return "".join(n for n, f in (("A", Phase.A), ("B", Phase.B), ("C", Phase.C), ("s1", Phase.S1),
                                  ("s2", Phase.S2)) if f in phases)


def _describe(b: MeasurementBinding) -> str:
    at = f" terminal {b.terminal}" if b.terminal is not None else ""
    return f"{b.measurement_name}: {b.measurement_type} of {b.element_class} {b.element_name}{at}"


def _status_point(rtu: str, name: str, b: MeasurementBinding, el: _Element, m: Measurement, address: int,
                  command_address: int, controlled: set[str]) -> DerivedPoint:
    if b.quantity is Quantity.FAULT_INDICATOR:
        return DerivedPoint(rtu, name, "single", "M_SP_TB_1", address, "", el.mrid, b.terminal, _describe(b), None,
                            None, ((1, "high", f"{el.name}: fault passage indicated"),), 0.0, b)
    control = None
    if (el.switch_kind in _CONTROLLABLE or el.cim_class == "LinearShuntCompensator") and el.mrid not in controlled:
        controlled.add(el.mrid)
        control = command_address
    alarms: tuple[tuple[int, str, str], ...] = ()
    if el.switch_kind in _PROTECTIVE and not el.normal_open:
        alarms = ((1, "high", f"{el.name} open"), (3, "medium", f"{el.name} position indeterminate"))
    initial = 1.0 if el.open else 2.0  # DoubleState OFF / ON
    return DerivedPoint(rtu, name, "double", "M_DP_TB_1", address, "", el.mrid, b.terminal, _describe(b), control,
                        None, alarms, initial, b)


def _analog_point(model: NetworkModel, rtu: str, name: str, b: MeasurementBinding, el: _Element, m: Measurement,
                  address: int) -> DerivedPoint:
    limits = None
    units = {Quantity.VOLTAGE_KV: "kV", Quantity.CURRENT_A: "A", Quantity.P_KW: "kW", Quantity.Q_KVAR: "kvar",
             Quantity.TAP_POSITION: "step"}[b.quantity]
    type_id = "M_ME_TE_1" if b.quantity is Quantity.TAP_POSITION else "M_ME_TF_1"
    if b.quantity is Quantity.VOLTAGE_KV and b.bus is not None:
        v_ln_kv = model.buses[b.bus].nominal_v / math.sqrt(3) / 1e3
        if v_ln_kv > 0:
            limits = (round(VOLTAGE_LOLO_PU * v_ln_kv, 4), round(VOLTAGE_LO_PU * v_ln_kv, 4),
                      round(VOLTAGE_HI_PU * v_ln_kv, 4), round(VOLTAGE_HIHI_PU * v_ln_kv, 4),
                      round(0.005 * v_ln_kv, 4))
    elif b.quantity is Quantity.CURRENT_A and el.rated_current_a > 0:
        r = el.rated_current_a
        limits = (None, None, round(CURRENT_HI_SHARE * r, 1), round(CURRENT_HIHI_SHARE * r, 1), round(0.02 * r, 1))
    return DerivedPoint(rtu, name, "analog", type_id, address, units, el.mrid, b.terminal, _describe(b), None, limits,
                        (), 0.0, b)
