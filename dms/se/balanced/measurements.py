"""Measurements of the balanced estimator as one structured array (per unit), built in bulk.

Kinds: bus voltage magnitude, P/Q bus injection, P/Q branch flow and current magnitude at either branch end.
Zero-injection buses add *virtual* P/Q injections of 0 with a small sigma; they are never removed as bad data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from dms.se.balanced.model import BalancedNetwork


class MeasKind(enum.IntEnum):
    V_MAG = 0
    P_INJ = 1
    Q_INJ = 2
    P_FLOW = 3
    Q_FLOW = 4
    I_MAG = 5


class Side(enum.IntEnum):
    FROM = 0
    TO = 1


BUS_KINDS = (MeasKind.V_MAG, MeasKind.P_INJ, MeasKind.Q_INJ)
MEAS_DTYPE = np.dtype([("kind", "u1"), ("element", "i8"), ("side", "u1"), ("value", "f8"), ("sigma", "f8"),
                       ("virtual", "?")])
VIRTUAL_SIGMA_PU = 1e-4  # zero-injection pseudo-measurements: exact in reality, weighted 1e8 (not infinite)


def make_measurements(n: int) -> np.ndarray:
    return np.zeros(n, dtype=MEAS_DTYPE)


def measurement_name(net: BalancedNetwork, row: np.void) -> str:
    """A human name: ``"P_FLOW line 12 from (value 0.4312 pu)"``."""
    kind = MeasKind(int(row["kind"]))
    if kind in BUS_KINDS:
        where = net.bus_names[int(row["element"])]
    else:
        where = f"{net.branch_names[int(row['element'])]} {Side(int(row['side'])).name.lower()}"
    tag = " virtual" if row["virtual"] else ""
    return f"{kind.name}{tag} {where} (value {float(row['value']):.4f} pu)"


def with_zero_injections(net: BalancedNetwork, meas: np.ndarray) -> np.ndarray:
    """Append virtual P/Q injections of 0 at zero-injection buses that carry no injection measurement yet."""
    zi = np.flatnonzero(net.zero_injection)
    rows = []
    for kind in (MeasKind.P_INJ, MeasKind.Q_INJ):
        have = meas["element"][meas["kind"] == kind]
        buses = np.setdiff1d(zi, have)
        add = make_measurements(len(buses))
        add["kind"], add["element"], add["sigma"], add["virtual"] = kind, buses, VIRTUAL_SIGMA_PU, True
        rows.append(add)
    return np.concatenate([meas, *rows])


@dataclass(frozen=True, slots=True)
class MeasurementPlan:
    """Which quantities are measured and their standard deviations (per unit of the network base)."""

    sigma_v_pu: float = 0.004
    sigma_pq_pu: float = 0.01  # injections and flows
    sigma_i_pu: float = 0.01
    v_fraction: float = 1.0  # share of buses with a voltage measurement (the slack always has one)
    injection_fraction: float = 1.0  # share of injection buses with P/Q injection measurements
    flow_fraction: float = 1.0  # share of branches with P/Q flow at the from end
    flow_both_ends: bool = False
    current_fraction: float = 0.0  # share of branches with a current magnitude at the from end


def generate_measurements(net: BalancedNetwork, plan: MeasurementPlan = MeasurementPlan(), *, seed: int = 0,
                          noise: bool = True) -> np.ndarray:
    """Measurements from the power-flow voltages (``net.v_powerflow``) plus seeded Gaussian noise of ``plan``'s
    sigmas; zero-injection buses get virtual measurements instead of metered injections."""
    from dms.se.balanced.wls import measurement_function  # local: wls imports this module

    rng = np.random.default_rng(seed)
    parts = []
    v_buses = np.flatnonzero(rng.random(net.n_bus) < plan.v_fraction)
    v_buses = np.union1d(v_buses, [net.slack])
    parts.append(_rows(MeasKind.V_MAG, v_buses, Side.FROM, plan.sigma_v_pu))
    inj = np.flatnonzero(~net.zero_injection & (rng.random(net.n_bus) < plan.injection_fraction))
    parts += [_rows(MeasKind.P_INJ, inj, Side.FROM, plan.sigma_pq_pu), _rows(MeasKind.Q_INJ, inj, Side.FROM,
                                                                              plan.sigma_pq_pu)]
    flows = np.flatnonzero(rng.random(net.n_branch) < plan.flow_fraction)
    sides = (Side.FROM, Side.TO) if plan.flow_both_ends else (Side.FROM,)
    for side in sides:
        parts += [_rows(MeasKind.P_FLOW, flows, side, plan.sigma_pq_pu),
                  _rows(MeasKind.Q_FLOW, flows, side, plan.sigma_pq_pu)]
    # |I| is not differentiable at 0: meter only branches carrying well above the noise (as in the field)
    i_true = np.abs(net.yf @ net.v_powerflow)
    cur = np.flatnonzero((rng.random(net.n_branch) < plan.current_fraction) & (i_true > 10 * plan.sigma_i_pu))
    parts.append(_rows(MeasKind.I_MAG, cur, Side.FROM, plan.sigma_i_pu))
    meas = np.concatenate(parts)
    meas["value"] = measurement_function(net, meas, net.v_powerflow)
    if noise:
        meas["value"] += rng.standard_normal(len(meas)) * meas["sigma"]
    return with_zero_injections(net, meas)


def _rows(kind: MeasKind, elements: np.ndarray, side: Side, sigma: float) -> np.ndarray:
    rows = make_measurements(len(elements))
    rows["kind"], rows["element"], rows["side"], rows["sigma"] = kind, elements, side, sigma
    return rows
