"""Three-phase (phase-level) weighted-least-squares state estimator.

State: the complex voltage of every phase node in polar form (angle in rad, magnitude in pu of the node's nominal
voltage) plus the ratio of every voltage regulator. Measurements: voltage magnitudes and angles, active/reactive
power injections, regulator ratios (:class:`~dms.se.measurements.MeasurementKind`). Gauss-Newton on the normal
equations with a sparse Jacobian and a sparse LU of the gain matrix (scipy.sparse.linalg.splu).

Regulators: the network's Y-bus holds each regulator at ratio 1 (a series admittance ``y`` between primary ``p`` and
regulated node ``r``). With ratio ``a`` (ideal ``V_r = a V_p`` behind ``y``) the currents are
``I_p = a² y V_p − a y V_r`` and ``I_r = −a y V_p + y V_r``; the difference to ratio 1 is added per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from dms.se.errors import DivergenceError, NotObservableError, SeError
from dms.se.measurements import BRANCH_KINDS, MeasurementKind, MeasurementSet

I_FLOOR_PU = 1e-6  # |I| below which a current-magnitude row has no usable gradient (flat start: no flow)


class StartMode(StrEnum):
    FLAT = "flat"  # 1 pu at nominal angles, regulators at ratio 1
    PREVIOUS = "previous"  # the given state (e.g. the previous snapshot's estimate)


@dataclass(frozen=True, slots=True, eq=False)
class PhaseNetwork:
    """Phase-level network for the estimator: nodes, per-unit Y-bus, nominal angles, regulators (ratio 1 in Y)."""

    node_names: tuple[str, ...]
    ybus_pu: sp.csr_matrix  # complex, n x n, per unit of each node's nominal voltage and the power base
    vnom_angle_rad: np.ndarray  # nominal angle of each node
    reg_primary: np.ndarray  # node index of each regulator's primary side
    reg_regulated: np.ndarray  # node index of each regulator's regulated side
    # Branch terminals (optional): row k gives the current into an element at node ``branch_node[k]`` as
    # ``branch_matrix[k] @ V`` (pu). Branch measurements (P/Q flow, |I|) refer to these rows; they do not follow
    # regulator ratio states (build networks with fixed taps when regulators carry branch measurements).
    branch_matrix: sp.csr_matrix | None = None
    branch_node: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.node_names)
        if (self.branch_matrix is None) != (self.branch_node is None):
            raise SeError("phase network: branch_matrix and branch_node go together")
        if self.branch_matrix is not None and self.branch_node is not None:
            if self.branch_matrix.shape != (len(self.branch_node), n):
                raise SeError(f"phase network: branch matrix shape {self.branch_matrix.shape} does not match "
                              f"{len(self.branch_node)} terminals x {n} nodes")
        if self.ybus_pu.shape != (n, n):
            raise SeError(f"phase network: Y-bus shape {self.ybus_pu.shape} does not match {n} nodes")
        if self.vnom_angle_rad.shape != (n,):
            raise SeError(f"phase network: {self.vnom_angle_rad.shape} nominal angles for {n} nodes")
        if self.reg_primary.shape != self.reg_regulated.shape:
            raise SeError("phase network: regulator primary and regulated lists differ in length")
        for p, r in zip(self.reg_primary, self.reg_regulated, strict=True):
            if self.ybus_pu[p, r] == 0:
                raise SeError(f"regulator {self.node_names[p]} -> {self.node_names[r]}: no coupling in the Y-bus")

    @property
    def size(self) -> int:
        return len(self.node_names)


@dataclass(frozen=True, slots=True)
class WlsOptions:
    max_iterations: int = 20
    tolerance: float = 1e-7  # largest state update (rad / pu) at convergence
    max_halvings: int = 0  # step halvings when a step raises the objective (0: plain Gauss-Newton)


@dataclass(frozen=True, slots=True, eq=False)
class WlsResult:
    """Estimate of one snapshot. ``residuals`` and ``jacobian`` rows follow the measurement set's order."""

    vm_pu: np.ndarray
    va_rad: np.ndarray
    taps: np.ndarray
    iterations: int
    objective: float  # J = sum((z - h(x))² / sigma²)
    residuals: np.ndarray
    jacobian: sp.csr_matrix = field(repr=False)
    gain_lu: object = field(repr=False)  # scipy SuperLU of the gain matrix at the solution

    @property
    def state(self) -> np.ndarray:
        return np.concatenate([self.va_rad, self.vm_pu, self.taps])


class ThreePhaseWls:
    """Estimator bound to one network; :meth:`estimate` runs one snapshot."""

    def __init__(self, network: PhaseNetwork, options: WlsOptions | None = None) -> None:
        self.network = network
        self.options = options or WlsOptions()
        n, p, r = network.size, network.reg_primary, network.reg_regulated
        # series admittance of each regulator (indexing with empty arrays would return a matrix)
        self._y_reg = -np.asarray(network.ybus_pu[p, r]).ravel() if len(p) else np.zeros(0, dtype=complex)
        self._reg_index = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(p, r, strict=True))}
        self._delta_rows = np.concatenate([p, p, r])
        self._delta_cols = np.concatenate([p, r, p])
        self._n = n

    @property
    def state_size(self) -> int:
        return 2 * self._n + len(self._y_reg)

    def flat_state(self) -> np.ndarray:
        return np.concatenate([self.network.vnom_angle_rad, np.ones(self._n), np.ones(len(self._y_reg))])

    def _check_branches(self, mset: MeasurementSet) -> None:
        is_branch = np.isin(mset.data["kind"], [int(k) for k in BRANCH_KINDS])
        if not is_branch.any():
            return
        nb = 0 if self.network.branch_node is None else len(self.network.branch_node)
        rows = mset.data["node"][is_branch]
        if rows.min() < 0 or rows.max() >= nb:
            bad = int(np.flatnonzero(is_branch)[np.argmax((rows < 0) | (rows >= nb))])
            raise SeError(f"branch measurement {mset.ids[bad]!r}: terminal row {mset.data['node'][bad]} is not one "
                          f"of the network's {nb} branch terminals")

    def _branch_rows(self, rows: np.ndarray, v: np.ndarray, vm: np.ndarray,
                     kind: MeasurementKind) -> tuple[np.ndarray, sp.csr_matrix]:
        """h and Jacobian block (without tap columns) of branch measurements on terminal ``rows``."""
        assert self.network.branch_matrix is not None and self.network.branch_node is not None
        a = self.network.branch_matrix[rows]
        at = self.network.branch_node[rows]
        m, n = len(rows), self._n
        cur = a @ v
        di_dth = a @ sp.diags(1j * v)
        di_dvm = a @ sp.diags(v / vm)
        if kind is MeasurementKind.I_MAG:
            mag = np.abs(cur)
            scale = np.conj(cur) / np.maximum(mag, I_FLOOR_PU)
            block = sp.hstack([sp.diags(scale) @ di_dth, sp.diags(scale) @ di_dvm]).real
            return mag, sp.csr_matrix(block)
        sel = sp.csr_matrix((np.ones(m), (np.arange(m), at)), shape=(m, n))
        vt = v[at]
        s = vt * np.conj(cur)
        ds_dth = sp.diags(np.conj(cur)) @ sel @ sp.diags(1j * v) + sp.diags(vt) @ di_dth.conj()
        ds_dvm = sp.diags(np.conj(cur)) @ sel @ sp.diags(v / vm) + sp.diags(vt) @ di_dvm.conj()
        ds = sp.hstack([ds_dth, ds_dvm])
        if kind is MeasurementKind.P_FLOW:
            return s.real, sp.csr_matrix(ds.real)
        return s.imag, sp.csr_matrix(ds.imag)

    def _tap_columns(self, mset: MeasurementSet) -> np.ndarray:
        rows = mset.data[mset.data["kind"] == MeasurementKind.TAP]
        try:
            return np.array([self._reg_index[(int(a), int(b))] for a, b in zip(rows["node"], rows["node2"],
                                                                              strict=True)], dtype=np.int64)
        except KeyError as exc:
            a, b = exc.args[0]
            names = self.network.node_names
            raise SeError(f"tap measurement {names[a]} -> {names[b]}: no such regulator in the network") from None

    def ybus(self, taps: np.ndarray) -> sp.csr_matrix:
        """The Y-bus with the regulators at the given ratios."""
        y, a = self._y_reg, taps
        data = np.concatenate([(a * a - 1) * y, -(a - 1) * y, -(a - 1) * y])
        delta = sp.csr_matrix((data, (self._delta_rows, self._delta_cols)), shape=(self._n, self._n))
        return (self.network.ybus_pu + delta).tocsr()

    def _evaluate(self, x: np.ndarray, mset: MeasurementSet, tap_cols: np.ndarray) -> tuple[np.ndarray, sp.csr_matrix]:
        """h(x) and the Jacobian, rows in the measurement set's order."""
        n, nr = self._n, len(self._y_reg)
        th, vm, a = x[:n], x[n:2 * n], x[2 * n:]
        v = vm * np.exp(1j * th)
        ybus = self.ybus(a)
        cur = ybus @ v
        s = v * np.conj(cur)
        vd = sp.diags(v)
        ds_dth = 1j * (sp.diags(s) - vd @ (ybus @ vd).conj())
        ds_dvm = vd @ (ybus @ sp.diags(v / vm)).conj() + sp.diags(np.conj(cur) * v / vm)
        p, r, y = self.network.reg_primary, self.network.reg_regulated, self._y_reg
        k = np.arange(nr)
        ds_da = sp.csr_matrix((np.concatenate([v[p] * np.conj(2 * a * y * v[p] - y * v[r]),
                                               v[r] * np.conj(-y * v[p])]),
                               (np.concatenate([p, r]), np.concatenate([k, k]))), shape=(n, nr))
        ds = sp.hstack([ds_dth, ds_dvm, ds_da]).tocsr()

        d = mset.data
        kind, node = d["kind"], d["node"]
        m = len(d)
        h = np.empty(m)
        rows: list[sp.csr_matrix] = []
        order: list[np.ndarray] = []
        for kd in MeasurementKind:
            sel = np.flatnonzero(kind == kd)
            if not sel.size:
                continue
            nodes = node[sel]
            if kd is MeasurementKind.P_INJ:
                h[sel] = s.real[nodes]
                block = ds[nodes].real
            elif kd is MeasurementKind.Q_INJ:
                h[sel] = s.imag[nodes]
                block = ds[nodes].imag
            elif kd is MeasurementKind.V_MAG:
                h[sel] = vm[nodes]
                block = sp.csr_matrix((np.ones(sel.size), (np.arange(sel.size), n + nodes)),
                                      shape=(sel.size, self.state_size))
            elif kd is MeasurementKind.V_ANGLE:
                h[sel] = th[nodes] - self.network.vnom_angle_rad[nodes]
                block = sp.csr_matrix((np.ones(sel.size), (np.arange(sel.size), nodes)),
                                      shape=(sel.size, self.state_size))
            elif kd in BRANCH_KINDS:
                h[sel], part = self._branch_rows(nodes, v, vm, kd)
                block = sp.hstack([part, sp.csr_matrix((sel.size, nr))])
            else:
                h[sel] = a[tap_cols]
                block = sp.csr_matrix((np.ones(sel.size), (np.arange(sel.size), 2 * n + tap_cols)),
                                      shape=(sel.size, self.state_size))
            rows.append(sp.csr_matrix(block))
            order.append(sel)
        perm = np.concatenate(order)
        jac = sp.vstack(rows).tocsr()
        inverse = np.empty(m, dtype=np.int64)
        inverse[perm] = np.arange(m)
        return h, jac[inverse]

    def estimate(self, mset: MeasurementSet, *, start: StartMode = StartMode.FLAT,
                 x0: np.ndarray | None = None) -> WlsResult:
        """Gauss-Newton from a flat start or from ``x0`` (``start=PREVIOUS``)."""
        if start is StartMode.PREVIOUS:
            if x0 is None or x0.shape != (self.state_size,):
                raise SeError(f"previous-state start needs a state of {self.state_size} values")
            x = x0.copy()
        else:
            x = self.flat_state()
        tap_cols = self._tap_columns(mset)
        self._check_branches(mset)
        z, w = mset.data["value"], 1.0 / mset.data["sigma"] ** 2
        wd = sp.diags(w)
        # Gauss-Newton, optionally with step halving: a step that raises the objective is halved (up to
        # ``max_halvings`` times); far from the solution, flows through near-zero impedances (closed switches)
        # overshoot. Off by default: on noisy data near the optimum it can stall the plain iteration's convergence.
        x_old, dx, j_old, halvings = x.copy(), np.zeros_like(x), np.inf, 0
        it = 0
        while it < self.options.max_iterations:
            h, jac = self._evaluate(x, mset, tap_cols)
            res = z - h
            j = float(np.sum(w * res * res))
            if j > j_old * (1.0 + 1e-9) and halvings < self.options.max_halvings:
                halvings += 1
                x = x_old + dx * 0.5 ** halvings
                continue
            it += 1
            halvings = 0
            gain = (jac.T @ wd @ jac).tocsc()
            try:
                lu = splu(gain)
            except RuntimeError as exc:
                raise NotObservableError(f"gain matrix is singular ({exc}): {len(mset)} measurements do not "
                                         f"determine {self.state_size} states") from None
            dx = lu.solve(jac.T @ (w * res))
            if not np.all(np.isfinite(dx)):
                raise NotObservableError("gain matrix is numerically singular: the state is not observable")
            x_old, j_old = x.copy(), j
            x = x + dx
            if np.max(np.abs(dx)) < self.options.tolerance:
                h, jac = self._evaluate(x, mset, tap_cols)
                res = z - h
                lu = splu((jac.T @ wd @ jac).tocsc())
                n = self._n
                return WlsResult(vm_pu=x[n:2 * n].copy(), va_rad=x[:n].copy(), taps=x[2 * n:].copy(), iterations=it,
                                 objective=float(np.sum(w * res * res)), residuals=res, jacobian=jac, gain_lu=lu)
        raise DivergenceError(f"WLS did not converge in {self.options.max_iterations} iterations "
                              f"(last update {np.max(np.abs(dx)):.3g})")
