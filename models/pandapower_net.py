"""NetworkModel -> pandapower net: the balanced positive-sequence equivalent of a feeder, and its power flow.

Choices (each an approximation of the unbalanced feeder, stated so results are read for what they are):

- Bus ``i`` of the pandapower net is bus ``i`` of the model; ``vn_kv`` is the model's line-to-line nominal voltage
  (a bus without one takes it from a neighbour across a line or switch).
- Lines: three-phase segments use Z1 = Zs - Zm, the mean self minus the mean mutual term of the per-metre matrix
  (same for the shunt susceptance). One- and two-phase laterals use the mean self impedance (and self susceptance):
  their return path is not a balanced set, so Zs - Zm would understate the drop. A PerLengthSequenceImpedance, when
  the file gives one, is used as is.
- Switches: bus-bus switch elements, closed unless the model's actual state says open.
- Transformers: two ends -> ``trafo``, three ends -> ``trafo3w``. Banks of single-phase tanks become one three-phase
  unit rated three times the tank rating, whatever the number of tanks (a one-phase regulator regulates all three
  phases of the equivalent). Voltage ratio from the ends' rated voltages, scaled onto the first end's bus nominal.
  Impedances from TransformerMeshImpedance (ohm referred to the from end) or, for tanks, from the ShortCircuitTest
  (its ``leakageImpedance``, in ohm referred to the energised end as CIM defines it) and its load loss. Clock
  numbers of the vector group give the phase shift.
- Regulators: a ``trafo`` with a ratio tap changer on the tapped end; ``tap_pos`` is the mean of the per-phase steps
  (a float), so the balanced ratio is the mean of the per-phase ratios.
- Loads: one three-phase constant-power load per bus with the sum of every load's P and Q (the ZIP response and
  the delta/wye connection are not represented). DERs: one static generator per bus, summed the same way.
- Capacitors: shunts with Q = b * sections * nominal_v**2 (the capacitor's own rated voltage, line-to-line for a
  three-phase bank, line-to-neutral for a single-phase one, which is the same thing per phase).
- EnergySource: ``ext_grid`` with vm_pu = magnitude / nominal and its angle.
- Frequency: the model has none, so ``f_hz`` is an argument (60 Hz default: the IEEE feeders are North American).
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandapower as pp

from models.errors import ModelError
from models.network import LineSegment, NetworkModel, TapChanger, Transformer, TransformerWinding

__all__ = [
    "BalancedPowerFlow",
    "BranchFlow",
    "BranchKind",
    "BusVoltage",
    "PandapowerConversion",
    "PowerFlowError",
    "run_balanced_powerflow",
    "to_pandapower",
]

DEFAULT_F_HZ = 60.0
# A line rating is not in the model; pandapower needs one to report loading, which we do not use.
_UNKNOWN_MAX_I_KA = 1.0
# Measured: IEEE123's regulators (vk 0.001-0.01 %) with off-neutral taps make Newton-Raphson diverge in pandapower
# 3.5.6 even though the feeder is radial; from 0.1 % it converges in 5-6 iterations. Below this a vk is raised.
MIN_VK_PERCENT = 0.1
_TAP_SIDES_2W = {1: "hv", 2: "lv"}
_TAP_SIDES_3W = {1: "hv", 2: "mv", 3: "lv"}


class PowerFlowError(ModelError):
    """A model cannot be converted, or the power flow does not converge; the message names the element or net."""


class BranchKind(StrEnum):
    LINE = "line"
    TRANSFORMER = "transformer"
    TRANSFORMER_3W = "transformer3w"


@dataclass(frozen=True, slots=True, eq=False)
class PandapowerConversion:
    """The pandapower net (bus index = model bus index) and what the conversion approximated."""

    net: pp.pandapowerNet
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BusVoltage:
    name: str
    vn_kv: float
    vm_pu: float
    va_degree: float


@dataclass(frozen=True, slots=True)
class BranchFlow:
    """Flow at the two ends of a branch (for a three-winding transformer, ``to`` is the sum of MV and LV ends)."""

    name: str
    kind: BranchKind
    from_bus: str
    to_bus: str
    p_from_mw: float
    q_from_mvar: float
    p_to_mw: float
    q_to_mvar: float
    pl_mw: float
    ql_mvar: float


@dataclass(frozen=True, slots=True)
class BalancedPowerFlow:
    """A solved balanced power flow; P/Q totals are three-phase, generation positive for ext_grid and sgen."""

    network: str
    buses: tuple[BusVoltage, ...]
    branches: tuple[BranchFlow, ...]
    ext_grid_p_mw: float
    ext_grid_q_mvar: float
    load_p_mw: float
    load_q_mvar: float
    sgen_p_mw: float
    sgen_q_mvar: float
    shunt_p_mw: float
    shunt_q_mvar: float
    loss_p_mw: float
    loss_q_mvar: float
    iterations: int
    solve_s: float
    notes: tuple[str, ...]


def to_pandapower(model: NetworkModel, *, f_hz: float = DEFAULT_F_HZ) -> PandapowerConversion:
    """Build the balanced pandapower equivalent of ``model``; PowerFlowError names the element that cannot be."""
    net = pp.create_empty_network(name=model.name, f_hz=f_hz)
    notes: list[str] = []
    vn_kv = _bus_voltages_kv(model)
    for bus in model.buses:
        pp.create_bus(net, vn_kv=vn_kv[bus.index], name=bus.name, index=bus.index)
    for line in model.lines:
        _add_line(net, line, f_hz)
    for sw in model.switches:
        pp.create_switch(net, sw.from_bus, sw.to_bus, et="b", closed=not sw.open, name=sw.name)
    taps: dict[str, list[TapChanger]] = defaultdict(list)
    for tap in model.tap_changers:
        taps[tap.transformer_mrid].append(tap)
    for trafo in model.transformers:
        _add_transformer(net, trafo, taps.get(trafo.mrid, []), vn_kv, notes)
    _add_injections(net, model)
    for cap in model.capacitors:
        v = cap.nominal_v if cap.nominal_v > 0 else vn_kv[cap.bus] * 1e3
        q_mvar = cap.b_per_section_s * cap.sections * v * v / 1e6
        pp.create_shunt(net, cap.bus, q_mvar=-q_mvar, p_mw=0.0, vn_kv=vn_kv[cap.bus], name=cap.name)
    if not model.sources:
        raise PowerFlowError(f"network {model.name!r}: no EnergySource, so no slack bus for the power flow")
    for src in model.sources:
        nominal_v = src.nominal_v if src.nominal_v > 0 else vn_kv[src.bus] * 1e3
        pp.create_ext_grid(net, src.bus, vm_pu=src.voltage_magnitude_v / nominal_v,
                           va_degree=math.degrees(src.voltage_angle_rad), name=src.name)
    return PandapowerConversion(net, tuple(notes))


def run_balanced_powerflow(model: NetworkModel, *, f_hz: float = DEFAULT_F_HZ,
                           max_iteration: int = 30, tolerance_mva: float = 1e-8) -> BalancedPowerFlow:
    """Convert ``model`` and solve it with Newton-Raphson; PowerFlowError when it does not converge."""
    conversion = to_pandapower(model, f_hz=f_hz)
    net = conversion.net
    started = time.perf_counter()
    try:
        pp.runpp(net, algorithm="nr", max_iteration=max_iteration, tolerance_mva=tolerance_mva,
                 calculate_voltage_angles=True, init="dc", numba=False)
    except pp.LoadflowNotConverged as exc:
        raise PowerFlowError(f"network {model.name!r}: balanced power flow did not converge in "
                             f"{max_iteration} iterations") from exc
    solve_s = time.perf_counter() - started  # numba is not installed: the pure-numpy path, said so to stop a warning
    return _collect(model, net, solve_s, conversion.notes)


def _bus_voltages_kv(model: NetworkModel) -> list[float]:
    """Nominal line-to-line kV per bus; a bus without one borrows from a line or switch neighbour."""
    vn = [b.nominal_v / 1e3 for b in model.buses]
    pairs = [(ln.from_bus, ln.to_bus) for ln in model.lines] + [(s.from_bus, s.to_bus) for s in model.switches]
    changed = True
    while changed:
        changed = False
        for a, b in pairs:
            if math.isnan(vn[a]) and not math.isnan(vn[b]):
                vn[a], changed = vn[b], True
            elif math.isnan(vn[b]) and not math.isnan(vn[a]):
                vn[b], changed = vn[a], True
    missing = [model.buses[i].name for i, v in enumerate(vn) if math.isnan(v) or v <= 0]
    if missing:
        raise PowerFlowError(f"network {model.name!r}: no nominal voltage for bus(es) {', '.join(missing[:20])}")
    return vn


def _positive_sequence(matrix: np.ndarray) -> float:
    """Z1 = Zs - Zm for a three-phase matrix; the mean self term for one or two phases."""
    n = matrix.shape[0]
    self_mean = float(np.trace(matrix)) / n
    if n < 3:
        return self_mean
    mutual_mean = (float(matrix.sum()) - float(np.trace(matrix))) / (n * n - n)
    return self_mean - mutual_mean


def _add_line(net: pp.pandapowerNet, line: LineSegment, f_hz: float) -> None:
    if line.length_m <= 0:
        raise PowerFlowError(f"line {line.name!r} ({line.mrid}): length {line.length_m} m is not positive")
    if line.sequence is not None:
        r1, x1, b1 = line.sequence.r_ohm_per_m, line.sequence.x_ohm_per_m, line.sequence.b_s_per_m
    else:
        r1 = _positive_sequence(line.r_ohm_per_m)
        x1 = _positive_sequence(line.x_ohm_per_m)
        b1 = _positive_sequence(line.b_s_per_m)
    if not (r1 >= 0 and x1 >= 0) or r1 + x1 <= 0:
        raise PowerFlowError(f"line {line.name!r} ({line.mrid}): positive-sequence impedance r={r1} x={x1} ohm/m "
                             "is not usable")
    c_nf_per_km = max(b1, 0.0) * 1e3 / (2 * math.pi * f_hz) * 1e9
    pp.create_line_from_parameters(net, line.from_bus, line.to_bus, length_km=line.length_m / 1e3,
                                   r_ohm_per_km=r1 * 1e3, x_ohm_per_km=x1 * 1e3, c_nf_per_km=c_nf_per_km,
                                   max_i_ka=_UNKNOWN_MAX_I_KA, name=line.name)


@dataclass(frozen=True, slots=True)
class _End:
    number: int
    bus: int
    rated_u_v: float
    sn_mva: float
    vn_kv: float


def _clock_shifts_degree(vector_group: str) -> list[float]:
    """Phase shift of each secondary from the clock numbers of the vector group (``Dyn1y1`` -> 30, 30)."""
    return [30.0 * (int(d) % 12) for d in re.findall(r"\d+", vector_group)]


def _ends(trafo: Transformer, vn_kv: list[float]) -> list[_End]:
    by_number: dict[int, list[TransformerWinding]] = defaultdict(list)
    for w in trafo.windings:
        by_number[w.end_number].append(w)
    banked = any(w.tank_mrid is not None for w in trafo.windings)
    numbers = sorted(by_number)
    first = by_number[numbers[0]][0]
    ends = []
    for n in numbers:
        w = by_number[n][0]
        if w.rated_u_v <= 0 or w.rated_s_va <= 0:
            raise PowerFlowError(f"transformer {trafo.name!r} ({trafo.mrid}) end {n}: rated voltage/power missing")
        # A bank of single-phase tanks is one three-phase unit of three times the tank rating.
        sn_va = 3 * max(x.rated_s_va for x in by_number[n]) if banked else w.rated_s_va
        ends.append(_End(n, w.bus, w.rated_u_v, sn_va / 1e6, vn_kv[first.bus] * w.rated_u_v / first.rated_u_v))
    return ends


def _pair_impedance_pct(trafo: Transformer, ends: list[_End], i: int, j: int, base_mva: float) -> tuple[float, float]:
    """(vk, vkr) in percent on ``base_mva`` between ends numbered i and j."""
    end_by_number = {e.number: e for e in ends}
    for mesh in trafo.mesh_impedances:
        if {mesh.from_end_number, mesh.to_end_number} == {i, j}:
            z_base = end_by_number[mesh.from_end_number].rated_u_v ** 2 / (base_mva * 1e6)
            return math.hypot(mesh.r_ohm, mesh.x_ohm) / z_base * 100, mesh.r_ohm / z_base * 100
    for tank in trafo.tanks:
        for test in tank.short_circuit_tests:
            if {test.energised_end_number, *test.grounded_end_numbers} == {i, j} and test.base_power_va > 0:
                # leakageImpedance is ohm on the energised end; load loss in W on the test's base power.
                z_base = end_by_number[test.energised_end_number].rated_u_v ** 2 / test.base_power_va
                return test.leakage_impedance_ohm / z_base * 100, test.loss_w / test.base_power_va * 100
    raise PowerFlowError(f"transformer {trafo.name!r} ({trafo.mrid}): no mesh impedance or short-circuit test "
                         f"between ends {i} and {j}")


def _no_load(trafo: Transformer, ends: list[_End]) -> tuple[float, float]:
    """(pfe_kw, i0_percent) of the three-phase equivalent."""
    sn_mva = ends[0].sn_mva
    for tank in trafo.tanks:
        for test in tank.no_load_tests:
            if test.base_power_va > 0:
                scale = sn_mva * 1e6 / test.base_power_va  # tank test -> bank rating
                return test.loss_w * scale / 1e3, test.exciting_current_pct
    u = ends[0].rated_u_v
    pfe_kw = trafo.magnetising_g_s * u * u / 1e3
    i0 = math.hypot(trafo.magnetising_g_s, trafo.magnetising_b_s) * u * u / (sn_mva * 1e6) * 100
    return pfe_kw, i0


def _add_transformer(net: pp.pandapowerNet, trafo: Transformer, taps: list[TapChanger], vn_kv: list[float],
                     notes: list[str]) -> None:
    ends = _ends(trafo, vn_kv)
    pfe_kw, i0 = _no_load(trafo, ends)
    shifts = _clock_shifts_degree(trafo.vector_group)
    tap_kw: dict[str, object] = {}
    if taps:
        sides = _TAP_SIDES_2W if len(ends) == 2 else _TAP_SIDES_3W
        steps = [t.step for t in taps]
        first = taps[0]
        tap_kw = {"tap_side": sides.get(first.end_number, "lv"), "tap_neutral": float(first.neutral_step),
                  "tap_min": float(first.low_step), "tap_max": float(first.high_step),
                  "tap_step_percent": first.step_voltage_increment_pct, "tap_pos": float(np.mean(steps)),
                  "tap_changer_type": "Ratio"}
        if len(set(steps)) > 1:
            notes.append(f"regulator {trafo.name!r}: per-phase steps {steps} averaged to {np.mean(steps):.3f}")
    if len(ends) == 2:
        hv, lv = ends
        vk, vkr = _pair_impedance_pct(trafo, ends, hv.number, lv.number, hv.sn_mva)
        if vk < MIN_VK_PERCENT:
            notes.append(f"transformer {trafo.name!r}: vk {vk:.5f}% raised to {MIN_VK_PERCENT}% for convergence")
            vk = MIN_VK_PERCENT
        vkr = min(vkr, vk)
        pp.create_transformer_from_parameters(
            net, hv.bus, lv.bus, sn_mva=hv.sn_mva, vn_hv_kv=hv.vn_kv, vn_lv_kv=lv.vn_kv, vk_percent=vk,
            vkr_percent=vkr, pfe_kw=pfe_kw, i0_percent=i0, shift_degree=shifts[0] if shifts else 0.0,
            name=trafo.name, **tap_kw)
    elif len(ends) == 3:
        hv, mv, lv = ends
        pairs = ((hv, mv), (mv, lv), (lv, hv))  # pandapower's vk_hv, vk_mv, vk_lv
        values = [_pair_impedance_pct(trafo, ends, a.number, b.number, min(a.sn_mva, b.sn_mva)) for a, b in pairs]
        if any(vk < MIN_VK_PERCENT for vk, _ in values):
            notes.append(f"transformer {trafo.name!r}: vk below {MIN_VK_PERCENT}% raised to it for convergence")
        values = [(max(vk, MIN_VK_PERCENT), min(vkr, max(vk, MIN_VK_PERCENT))) for vk, vkr in values]
        pp.create_transformer3w_from_parameters(
            net, hv.bus, mv.bus, lv.bus, vn_hv_kv=hv.vn_kv, vn_mv_kv=mv.vn_kv, vn_lv_kv=lv.vn_kv,
            sn_hv_mva=hv.sn_mva, sn_mv_mva=mv.sn_mva, sn_lv_mva=lv.sn_mva,
            vk_hv_percent=values[0][0], vk_mv_percent=values[1][0], vk_lv_percent=values[2][0],
            vkr_hv_percent=values[0][1], vkr_mv_percent=values[1][1], vkr_lv_percent=values[2][1],
            pfe_kw=pfe_kw, i0_percent=i0, shift_mv_degree=shifts[0] if shifts else 0.0,
            shift_lv_degree=shifts[1] if len(shifts) > 1 else 0.0, name=trafo.name, **tap_kw)
    else:
        raise PowerFlowError(f"transformer {trafo.name!r} ({trafo.mrid}): {len(ends)} ends, only 2 or 3 supported")


def _add_injections(net: pp.pandapowerNet, model: NetworkModel) -> None:
    """One load and one static generator per bus, each the sum of the elements there."""
    load_pq: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    load_names: dict[int, list[str]] = defaultdict(list)
    for ld in model.loads:
        load_pq[ld.bus][0] += ld.p_w
        load_pq[ld.bus][1] += ld.q_var
        load_names[ld.bus].append(ld.name)
    for bus, (p_w, q_var) in sorted(load_pq.items()):
        pp.create_load(net, bus, p_mw=p_w / 1e6, q_mvar=q_var / 1e6, name=",".join(load_names[bus]))
    gen_pq: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    gen_names: dict[int, list[str]] = defaultdict(list)
    for der in model.ders:
        gen_pq[der.bus][0] += der.p_w
        gen_pq[der.bus][1] += der.q_var
        gen_names[der.bus].append(der.name)
    for bus, (p_w, q_var) in sorted(gen_pq.items()):
        pp.create_sgen(net, bus, p_mw=p_w / 1e6, q_mvar=q_var / 1e6, name=",".join(gen_names[bus]))


def _collect(model: NetworkModel, net: pp.pandapowerNet, solve_s: float, notes: tuple[str, ...]) -> BalancedPowerFlow:
    names = net.bus["name"]
    rb = net.res_bus
    buses = tuple(BusVoltage(str(names.at[i]), float(net.bus.vn_kv.at[i]), float(rb.vm_pu.at[i]),
                             float(rb.va_degree.at[i])) for i in net.bus.index)
    branches: list[BranchFlow] = []
    for i in net.line.index:
        r = net.res_line.loc[i]
        branches.append(BranchFlow(str(net.line.name.at[i]), BranchKind.LINE, str(names.at[net.line.from_bus.at[i]]),
                                   str(names.at[net.line.to_bus.at[i]]), float(r.p_from_mw), float(r.q_from_mvar),
                                   float(r.p_to_mw), float(r.q_to_mvar), float(r.pl_mw), float(r.ql_mvar)))
    for i in net.trafo.index:
        r = net.res_trafo.loc[i]
        branches.append(BranchFlow(str(net.trafo.name.at[i]), BranchKind.TRANSFORMER,
                                   str(names.at[net.trafo.hv_bus.at[i]]), str(names.at[net.trafo.lv_bus.at[i]]),
                                   float(r.p_hv_mw), float(r.q_hv_mvar), float(r.p_lv_mw), float(r.q_lv_mvar),
                                   float(r.pl_mw), float(r.ql_mvar)))
    for i in net.trafo3w.index:
        r = net.res_trafo3w.loc[i]
        t = net.trafo3w.loc[i]
        branches.append(BranchFlow(str(t["name"]), BranchKind.TRANSFORMER_3W, str(names.at[t.hv_bus]),
                                   f"{names.at[t.mv_bus]}+{names.at[t.lv_bus]}", float(r.p_hv_mw),
                                   float(r.q_hv_mvar), float(r.p_mv_mw + r.p_lv_mw), float(r.q_mv_mvar + r.q_lv_mvar),
                                   float(r.pl_mw), float(r.ql_mvar)))
    iterations = int(net._ppc.get("iterations", -1)) if net._ppc is not None else -1  # pandapower keeps it only here
    return BalancedPowerFlow(
        network=model.name, buses=buses, branches=tuple(branches),
        ext_grid_p_mw=float(net.res_ext_grid.p_mw.sum()), ext_grid_q_mvar=float(net.res_ext_grid.q_mvar.sum()),
        load_p_mw=float(net.res_load.p_mw.sum()), load_q_mvar=float(net.res_load.q_mvar.sum()),
        sgen_p_mw=float(net.res_sgen.p_mw.sum()), sgen_q_mvar=float(net.res_sgen.q_mvar.sum()),
        shunt_p_mw=float(net.res_shunt.p_mw.sum()), shunt_q_mvar=float(net.res_shunt.q_mvar.sum()),
        loss_p_mw=sum(b.pl_mw for b in branches), loss_q_mvar=sum(b.ql_mvar for b in branches),
        iterations=iterations, solve_s=solve_s, notes=notes)
