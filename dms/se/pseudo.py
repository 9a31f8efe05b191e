"""Pseudo-measurements for loads without telemetry, virtual zero injections and the angle reference.

- Load pseudo-measurements: the model load (its nominal P/Q, per phase) times a daily profile multiplier, then
  scaled per metered area so the pseudo loads behind each feeder-head / transformer meter add up to what the meter
  reads (innermost meter first; an outer meter scales only the loads no inner meter covers, against its reading less
  the inner areas' load). Sigma: ``pseudo_percent`` % of the value plus a floor — large, so any telemetry wins.
- Zero injections: every energised node with no load, DER or source gets P = Q = 0 with a tiny sigma.
- Buses fed only through delta windings: soft nominal |V| and angle (their zero sequence is unobservable).
- Angle references: V_ANGLE = nominal at every phase of one source bus per island (unless angles are measured).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dms.se.live_measurements import MeasurementBuilder
from dms.se.measurements import MeasurementKind, MeasurementSet
from dms.se.phase_network import ModelNetwork
from models.measurement_points import Quantity
from models.three_phase_injections import InjectionKind, build_injections

__all__ = ["LoadProfile", "PseudoOptions", "add_pseudo_and_virtual", "measured_load_totals", "meter_scaled_loads",
           "profile_multiplier"]


class LoadProfile(StrEnum):
    FLAT = "flat"
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"


# Per-unit demand at each full hour (peak 1.0): typical residential (morning and evening peaks) and commercial
# (business-hours plateau) shapes, the same families the simulators drive their loads with.
_SHAPES: dict[LoadProfile, tuple[float, ...]] = {
    LoadProfile.FLAT: (1.0,) * 24,
    LoadProfile.RESIDENTIAL: (0.45, 0.40, 0.37, 0.36, 0.37, 0.42, 0.58, 0.74, 0.76, 0.66, 0.60, 0.58,
                              0.58, 0.56, 0.55, 0.57, 0.63, 0.75, 0.90, 1.00, 0.98, 0.86, 0.70, 0.54),
    LoadProfile.COMMERCIAL: (0.30, 0.28, 0.27, 0.27, 0.28, 0.30, 0.38, 0.55, 0.80, 0.95, 1.00, 0.99,
                             0.93, 0.97, 0.99, 0.97, 0.92, 0.82, 0.66, 0.52, 0.44, 0.38, 0.34, 0.32),
}

# 100 W at 1 MVA: tighter makes the gain matrix too ill-conditioned next to closed-switch (milliohm) admittances
ZERO_INJECTION_SIGMA_PU = 1e-4
ANGLE_REFERENCE_SIGMA_RAD = 1e-4
FLOATING_SIGMA_PU = 0.05  # soft nominal voltage on delta-only buses: fixes their zero sequence, nothing else
SCALE_LIMITS = (0.05, 20.0)  # a meter cannot scale its pseudo loads beyond this (a bad meter must not wreck them)


def profile_multiplier(profile: LoadProfile, epoch_s: float | None = None) -> float:
    """Linear interpolation of the hourly shape at local time ``epoch_s`` (now when None)."""
    tm = time.localtime(time.time() if epoch_s is None else epoch_s)
    h = tm.tm_hour + tm.tm_min / 60.0 + tm.tm_sec / 3600.0
    shape = _SHAPES[profile]
    i = math.floor(h) % 24
    t = h - math.floor(h)
    return shape[i] * (1 - t) + shape[(i + 1) % 24] * t


@dataclass(frozen=True, slots=True)
class PseudoOptions:
    profile: LoadProfile = LoadProfile.RESIDENTIAL
    pseudo_percent: float = 30.0  # sigma of a pseudo load, % of its value
    pseudo_floor_kw: float = 2.0  # plus this floor (kW / kvar per phase)
    scale_to_meters: bool = True

    def __post_init__(self) -> None:
        if not self.pseudo_percent > 0 and not self.pseudo_floor_kw > 0:
            raise ValueError("pseudo options: pseudo_percent or pseudo_floor_kw must be > 0")


def _element_buses(mn: ModelNetwork) -> dict[str, set[int]]:
    assert mn.network.branch_node is not None
    out: dict[str, set[int]] = {}
    for row, el in enumerate(mn.terminal_element):
        out.setdefault(el, set()).add(int(mn.bus[mn.network.branch_node[row]]))
    return out


def meter_scaled_loads(mn: ModelNetwork, load_p_w: np.ndarray, load_q_var: np.ndarray, mset: MeasurementSet,
                       *, fixed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads scaled per metered area (see the module text). Meters: elements with P flow measurements. ``fixed``
    (bool per load): telemetered loads, counted in their area but not scaled."""
    model = mn.state.model
    d = mset.data
    meters: dict[tuple[str, int], list[float]] = {}  # (element, bus) -> [p_w, q_var, p phases, q phases]
    assert mn.network.branch_node is not None
    terminal_key = [(el, int(mn.bus[nd])) for el, nd in zip(mn.terminal_element, mn.network.branch_node, strict=True)]
    phases_at: dict[tuple[str, int], int] = {}
    for key in terminal_key:
        phases_at[key] = phases_at.get(key, 0) + 1
    for kind, col in ((MeasurementKind.P_FLOW, 0), (MeasurementKind.Q_FLOW, 1)):
        for row, value in zip(d["node"][d["kind"] == kind], d["value"][d["kind"] == kind], strict=True):
            acc = meters.setdefault(terminal_key[int(row)], [0.0, 0.0, 0.0, 0.0])
            acc[col] += float(value) * mn.s_base_va
            acc[col + 2] += 1
    # A meter with a phase missing (excluded or bad) would scale its whole area by a partial total: not used.
    meters = {key: [p, q, float(nq == phases_at[key])] for key, (p, q, n_p, nq) in meters.items()
              if n_p == phases_at[key]}
    if not meters:
        return load_p_w.copy(), load_q_var.copy()
    elements = _element_buses(mn)
    nbus = len(model.buses)
    load_bus = np.array([ld.bus for ld in model.loads], dtype=np.int64)
    src = {s.bus for s in model.sources}
    areas = []
    for (el, bus), (p, q, has_q) in meters.items():
        rows, cols = [], []
        for other, bs in elements.items():
            if other == el:
                continue
            bl = sorted(bs)
            rows += [bl[0]] * (len(bl) - 1)
            cols += bl[1:]
        g = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(nbus, nbus))
        _, label = connected_components(g, directed=False)
        if any(label[s] == label[bus] for s in src):  # the meter looks away from the source: downstream is beyond
            far = [b for b in elements[el] if b != bus]
            if not far:
                continue
            down = label == label[far[0]]
            sign = 1.0
        else:
            down = label == label[bus]
            sign = -1.0
        if any(down[s] for s in src):
            continue  # both sides fed: not a radial meter
        areas.append((int(down.sum()), down[load_bus], sign * p, sign * q, bool(has_q)))
    p_out, q_out = load_p_w.astype(float).copy(), load_q_var.astype(float).copy()
    assigned = np.zeros(len(load_bus), dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool).copy()
    for _size, mask, p, q, has_q in sorted(areas, key=lambda a: a[0]):
        inner = mask & assigned
        free = mask & ~assigned
        if not free.any():
            continue
        lo, hi = SCALE_LIMITS
        base_p = p_out[free].sum()
        kp = float(np.clip((p - p_out[inner].sum()) / base_p, lo, hi)) if base_p > 0 else 1.0
        base_q = q_out[free].sum()
        kq = float(np.clip((q - q_out[inner].sum()) / base_q, lo, hi)) if has_q and base_q > 0 else kp
        p_out[free] *= kp
        q_out[free] *= kq
        assigned |= free
    return p_out, q_out


def measured_load_totals(builder: MeasurementBuilder) -> tuple[np.ndarray, np.ndarray]:
    """Per model load: the telemetered P / Q summed over its measured phases, NaN where nothing is measured."""
    n = len(builder.mn.state.model.loads)
    p, q = np.full(n, np.nan), np.full(n, np.nan)
    for (i, _ph, quantity), (value, _sigma, _mid) in builder.load_values.items():
        arr = p if quantity is Quantity.P_KW else q
        arr[i] = value if np.isnan(arr[i]) else arr[i] + value
    return p, q


def add_pseudo_and_virtual(builder: MeasurementBuilder, load_p_w: np.ndarray, load_q_var: np.ndarray,
                           options: PseudoOptions) -> None:
    """Injections at load (and DER) nodes: telemetered load phases (``builder.load_values``) where there are
    any, pseudo values otherwise; zero injections elsewhere (not at sources); references. ``load_p_w`` /
    ``load_q_var`` follow ``model.loads`` (already scaled)."""
    mn = builder.mn
    n = mn.size
    s = mn.s_base_va
    floor = options.pseudo_floor_kw * 1e3
    inj = {MeasurementKind.P_INJ: np.zeros(n), MeasurementKind.Q_INJ: np.zeros(n)}
    var = {MeasurementKind.P_INJ: np.zeros(n), MeasurementKind.Q_INJ: np.zeros(n)}
    pseudo = {MeasurementKind.P_INJ: np.zeros(n, dtype=bool), MeasurementKind.Q_INJ: np.zeros(n, dtype=bool)}
    names: dict[tuple[MeasurementKind, int], list[str]] = {}
    has = np.zeros(n, dtype=bool)
    # Every load and DER as the project's load model places it (wye phase-neutral, delta phase-phase, ZIP shares),
    # evaluated at the no-load voltages; a telemetered load phase replaces its branch's power. Each branch's power
    # is then split onto its two nodes (a delta branch loads both its phases, with the right angles).
    injections = build_injections(mn.state.with_loads(load_p_w, load_q_var).model, mn.phase_model)
    n_pm = len(mn.phase_model.node_names)
    live = np.zeros(n_pm, dtype=bool)
    live[mn.pm_node] = True
    injections = injections.only_at(live)
    t = injections.table
    v_pm = np.zeros(n_pm + 1, dtype=complex)
    x0 = mn.no_load_state
    v_pm[mn.pm_node] = x0[n:] * mn.base_v * np.exp(1j * x0[:n])
    s_row = injections.branch_power_va(v_pm[:n_pm])
    sig_p = np.abs(s_row.real) * options.pseudo_percent / 100.0 + floor
    sig_q = np.abs(s_row.imag) * options.pseudo_percent / 100.0 + floor
    row_pseudo = np.ones((len(t), 2), dtype=bool)
    row_mid: dict[tuple[int, int], str] = {}
    phase_of = mn.phase_model.node_phase
    for r, row in enumerate(t):
        if row["kind"] != InjectionKind.LOAD:
            continue
        ph = int(phase_of[row["a"]])
        for col, quantity in ((0, Quantity.P_KW), (1, Quantity.Q_KVAR)):
            got = builder.load_values.get((int(row["owner"]), ph, quantity))
            if got is None:
                continue
            value, sigma, mid = got
            s_row[r] = complex(value, s_row[r].imag) if col == 0 else complex(s_row[r].real, value)
            (sig_p if col == 0 else sig_q)[r] = sigma
            row_pseudo[r, col] = False
            row_mid[(r, col)] = mid
    vab = v_pm[t["a"]] - v_pm[t["b"]]
    ends = ((t["a"], -v_pm[t["a"]] / vab), (t["b"], v_pm[t["b"]] / vab))  # injected power = coef * drawn power
    est = mn.est_node
    for nodes_pm, coef in ends:
        for r in range(len(t)):
            k_pm = int(nodes_pm[r])
            if k_pm >= n_pm:
                continue  # ground
            node = int(est[k_pm])
            has[node] = True
            injected = coef[r] * s_row[r]
            scale = abs(coef[r])
            for col, kind, value, sigma in ((0, MeasurementKind.P_INJ, injected.real, sig_p[r]),
                                            (1, MeasurementKind.Q_INJ, injected.imag, sig_q[r])):
                inj[kind][node] += value
                var[kind][node] += (sigma * scale) ** 2
                if row_pseudo[r, col]:
                    pseudo[kind][node] = True
                else:  # a phase-phase branch feeds two nodes: neither row may carry the point's name alone
                    shared = int(t["b"][r]) < n_pm
                    names.setdefault((kind, node), []).append(("~" if shared else "") + row_mid[(r, col)])
    for node in np.flatnonzero(has):
        label = mn.node_label(int(node))
        for kind in (MeasurementKind.P_INJ, MeasurementKind.Q_INJ):
            measured = names.get((kind, int(node)), [])
            is_pseudo = bool(pseudo[kind][node])
            mid = measured[0] if len(measured) == 1 and not is_pseudo and not measured[0].startswith("~") else \
                f"{'pseudo' if is_pseudo else 'load'} {kind.name} {label}"
            builder.add_pu(mid, kind, int(node), int(node), inj[kind][node] / s, math.sqrt(var[kind][node]) / s,
                           is_pseudo)
    zero = ~has
    zero[mn.source_nodes] = False
    for node in np.flatnonzero(zero):
        label = mn.node_label(int(node))
        for kind in (MeasurementKind.P_INJ, MeasurementKind.Q_INJ):
            builder.add_pu(f"virtual {kind.name} {label}", kind, int(node), int(node), 0.0, ZERO_INJECTION_SIGMA_PU,
                           True)
    for node in mn.floating_nodes:
        label = mn.node_label(int(node))
        builder.add_pu(f"pseudo V_MAG {label}", MeasurementKind.V_MAG, int(node), int(node), 1.0,
                       FLOATING_SIGMA_PU, True)
        builder.add_pu(f"pseudo V_ANGLE {label}", MeasurementKind.V_ANGLE, int(node), int(node), 0.0,
                       FLOATING_SIGMA_PU, True)
    have_angle = {mn.bus[int(k)] for k in builder.nodes_of(MeasurementKind.V_ANGLE)}
    for node in mn.reference_nodes:
        if mn.bus[int(node)] in have_angle:
            continue  # a measured angle (PMU) at the source bus is the reference
        builder.add_pu(f"reference angle {mn.node_label(int(node))}", MeasurementKind.V_ANGLE, int(node), int(node),
                       0.0, ANGLE_REFERENCE_SIGMA_RAD, True)
