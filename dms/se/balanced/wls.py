"""Balanced WLS: polar state, sparse Jacobian, Gauss-Newton on the gain matrix ``G = Hᵀ W H`` factorised by SuperLU.

State ``x = [Va of every bus but the slack, Vm of every bus]``; the slack angle is kept at its power-flow value.
Observability is checked before the first iteration (see ``observability``): unobservable islands are reported in the
raised :class:`~dms.se.errors.NotObservableError`, never filled with pseudo-values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from dms.se.balanced.measurements import MeasKind, Side, measurement_name
from dms.se.balanced.model import BalancedNetwork
from dms.se.balanced.observability import ObservabilityReport, analyse_observability
from dms.se.errors import DivergenceError, NotObservableError, SeError

MIN_CURRENT_PU = 1e-6  # below this the |I| derivative is undefined: the row is zero (flat start)


@dataclass(frozen=True, slots=True)
class WlsOptions:
    tolerance: float = 1e-6  # max |dx| (rad, pu) at convergence
    max_iterations: int = 20
    check_observability: bool = True


@dataclass(frozen=True, slots=True, eq=False)
class BalancedWlsResult:
    v: np.ndarray  # complex bus voltages (pu), internal numbering
    iterations: int
    objective: float  # J = sum of weighted squared residuals
    residuals: np.ndarray  # z - h(x), per measurement
    dof: int  # measurements - states
    time_s: float
    jacobian: sp.csr_matrix  # at the solution
    gain_lu: spla.SuperLU  # of the gain matrix at the solution
    observability: ObservabilityReport | None

    @property
    def vm_pu(self) -> np.ndarray:
        return np.abs(self.v)

    @property
    def va_rad(self) -> np.ndarray:
        return np.angle(self.v)


def _parts(meas: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Measurement positions grouped by (kind, side)."""
    groups: dict[tuple[int, int], np.ndarray] = {}
    key = meas["kind"].astype(np.int64) * 2 + meas["side"]
    for k in np.unique(key):
        groups[(int(k) // 2, int(k) % 2)] = np.flatnonzero(key == k)
    return groups


def measurement_function(net: BalancedNetwork, meas: np.ndarray, v: np.ndarray) -> np.ndarray:
    """h(V) for every measurement (pu)."""
    out = np.empty(len(meas))
    s_bus = None
    for (kind, side), pos in _parts(meas).items():
        el = meas["element"][pos]
        if kind == MeasKind.V_MAG:
            out[pos] = np.abs(v[el])
        elif kind in (MeasKind.P_INJ, MeasKind.Q_INJ):
            if s_bus is None:
                s_bus = v * np.conj(net.ybus @ v)
            out[pos] = s_bus[el].real if kind == MeasKind.P_INJ else s_bus[el].imag
        else:
            y, ends = (net.yf, net.f_bus) if side == Side.FROM else (net.yt, net.t_bus)
            i_br = y[el] @ v
            if kind == MeasKind.I_MAG:
                out[pos] = np.abs(i_br)
            else:
                s = v[ends[el]] * np.conj(i_br)
                out[pos] = s.real if kind == MeasKind.P_FLOW else s.imag
    return out


def jacobian(net: BalancedNetwork, meas: np.ndarray, v: np.ndarray) -> sp.csr_matrix:
    """dh/dx, rows in measurement order, columns ``[Va (no slack), Vm]``."""
    n = net.n_bus
    vm = np.abs(v)
    vnorm = v / vm
    d_v = sp.diags(v)
    d_va = sp.diags(1j * v)  # dV/dVa
    d_vm = sp.diags(vnorm)  # dV/dVm
    blocks: list[sp.csr_matrix] = []
    order: list[np.ndarray] = []
    s_deriv = None
    for (kind, side), pos in _parts(meas).items():
        el = meas["element"][pos]
        if kind == MeasKind.V_MAG:
            rows = sp.csr_matrix((np.ones(len(el)), (np.arange(len(el)), el + n)), shape=(len(el), 2 * n))
        elif kind in (MeasKind.P_INJ, MeasKind.Q_INJ):
            if s_deriv is None:
                i_bus = net.ybus @ v
                ds_va = 1j * d_v @ np.conj(sp.diags(i_bus) - net.ybus @ d_v)
                ds_vm = d_v @ np.conj(net.ybus @ d_vm) + np.conj(sp.diags(i_bus)) @ d_vm
                s_deriv = sp.hstack([ds_va, ds_vm], format="csr")
            sub = s_deriv[el]
            rows = sub.real if kind == MeasKind.P_INJ else sub.imag
        else:
            y, ends = (net.yf, net.f_bus) if side == Side.FROM else (net.yt, net.t_bus)
            y_sub = y[el]
            i_br = y_sub @ v
            di = sp.hstack([y_sub @ d_va, y_sub @ d_vm], format="csr")
            if kind == MeasKind.I_MAG:
                mag = np.abs(i_br)
                scale = np.where(mag > MIN_CURRENT_PU, np.conj(i_br) / np.maximum(mag, MIN_CURRENT_PU), 0.0)
                rows = (sp.diags(scale) @ di).real
            else:
                c = sp.csr_matrix((np.ones(len(el)), (np.arange(len(el)), ends[el])), shape=(len(el), n))
                dv = sp.hstack([c @ d_va, c @ d_vm], format="csr")
                ds = sp.diags(np.conj(i_br)) @ dv + sp.diags(v[ends[el]]) @ np.conj(di)
                rows = ds.real if kind == MeasKind.P_FLOW else ds.imag
        blocks.append(sp.csr_matrix(rows))
        order.append(pos)
    stacked = sp.vstack(blocks, format="csr")
    perm = np.empty(len(meas), dtype=np.int64)
    perm[np.concatenate(order)] = np.arange(len(meas))
    keep = np.r_[np.arange(net.slack), np.arange(net.slack + 1, 2 * n)]  # drop the slack angle column
    return stacked[perm][:, keep]


def estimate(net: BalancedNetwork, meas: np.ndarray, *, options: WlsOptions = WlsOptions(),
             v0: np.ndarray | None = None) -> BalancedWlsResult:
    """Gauss-Newton WLS from a flat start (or ``v0``); raises NotObservableError naming the unobservable islands,
    DivergenceError when ``max_iterations`` is reached."""
    t0 = time.perf_counter()
    n = net.n_bus
    if len(meas) == 0:
        raise SeError("balanced estimate: no measurements")
    if np.any(meas["sigma"] <= 0):
        bad = int(np.flatnonzero(meas["sigma"] <= 0)[0])
        raise SeError(f"measurement {bad} {measurement_name(net, meas[bad])}: sigma must be > 0")
    report = None
    if options.check_observability:
        report = analyse_observability(net, meas)
        if not report.observable:
            raise NotObservableError(report.describe())
    weights = 1.0 / meas["sigma"] ** 2
    if v0 is None:
        va = np.zeros(n)
        va[net.slack] = net.slack_va_rad
        vm = np.ones(n)
        first_weights = np.where(meas["kind"] == MeasKind.I_MAG, 0.0, weights)  # |I| is flat at a flat start
    else:
        va, vm = np.angle(v0).copy(), np.abs(v0).copy()
        first_weights = weights
    not_slack = np.r_[np.arange(net.slack), np.arange(net.slack + 1, n)]
    z = meas["value"]
    for it in range(1, options.max_iterations + 1):
        v = vm * np.exp(1j * va)
        r = z - measurement_function(net, meas, v)
        h = jacobian(net, meas, v)
        w = sp.diags(first_weights if it == 1 else weights)
        ht_w = (h.T @ w).tocsr()
        gain = (ht_w @ h).tocsc()
        try:
            lu = spla.splu(gain, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                           options={"SymmetricMode": True})
        except RuntimeError as exc:
            raise NotObservableError(f"balanced estimate: gain matrix singular at iteration {it} ({exc})") from exc
        dx = lu.solve(ht_w @ r)
        if not np.all(np.isfinite(dx)):
            raise NotObservableError(f"balanced estimate: gain matrix numerically singular at iteration {it}")
        va[not_slack] += dx[: n - 1]
        vm += dx[n - 1:]
        if np.max(np.abs(dx)) < options.tolerance:
            v = vm * np.exp(1j * va)
            r = z - measurement_function(net, meas, v)
            if it > 1 or v0 is not None:  # |I| rows were unweighted in a flat first iteration: refactor
                return BalancedWlsResult(v=v, iterations=it, objective=float(np.sum(weights * r * r)), residuals=r,
                                         dof=len(meas) - (2 * n - 1), time_s=time.perf_counter() - t0, jacobian=h,
                                         gain_lu=lu, observability=report)
    raise DivergenceError(f"balanced estimate: no convergence in {options.max_iterations} iterations "
                          f"(last max |dx| {np.max(np.abs(dx)):.3g})")
