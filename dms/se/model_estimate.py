"""One estimate on a :class:`~dms.se.phase_network.ModelNetwork`: observability, WLS with bad-data removal, and
the results in engineering units (shared by the real-time service, the CLI and the benchmark)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from dms.se.bad_data import BadDataOptions, estimate_with_bad_data
from dms.se.errors import SeError
from dms.se.live_measurements import MeasurementAccuracy, MeasurementBuilder
from dms.se.measurements import MeasurementKind, MeasurementSet
from dms.se.phase_network import DEFAULT_S_BASE_VA, ModelNetwork, flow_start_state, restrict, unobservable_buses
from dms.se.pseudo import PseudoOptions, add_pseudo_and_virtual, measured_load_totals, meter_scaled_loads
from dms.se.results import BRANCH_ESTIMATE_DTYPE, NODE_ESTIMATE_DTYPE, BadMeasurement, EstimateResult
from dms.se.wls3ph import StartMode, ThreePhaseWls, WlsOptions
from models.network import Phase

__all__ = ["EstimatorOptions", "estimate_model", "estimate_with_pseudo"]

_PHASE_NAME = {int(Phase.A): "A", int(Phase.B): "B", int(Phase.C): "C", int(Phase.S1): "s1", int(Phase.S2): "s2"}
STD_CHUNK = 512


@dataclass(frozen=True, slots=True)
class EstimatorOptions:
    s_base_va: float = DEFAULT_S_BASE_VA
    accuracy: MeasurementAccuracy = field(default_factory=MeasurementAccuracy)
    pseudo: PseudoOptions = field(default_factory=PseudoOptions)
    bad_data: BadDataOptions = field(default_factory=lambda: BadDataOptions(keep_pseudo=True))
    # 1e-6 pu/rad: closed switches (milliohms) leave a numerical noise floor near 1e-7 in the updates
    wls: WlsOptions = field(default_factory=lambda: WlsOptions(tolerance=1e-6))
    std_dev: bool = True  # compute voltage standard deviations (diagonal of the gain inverse)

    def __post_init__(self) -> None:
        if not self.s_base_va > 0:
            raise ValueError(f"estimator options: s_base_va must be > 0, got {self.s_base_va}")


def _to_engineering(mn: ModelNetwork, kind: int, node2: int, value_pu: float) -> float:
    """A measurement value in pu back to its point's units (kV, kW, kvar, A)."""
    if kind == MeasurementKind.V_MAG:
        return value_pu * mn.base_v[node2] / 1e3
    if kind == MeasurementKind.I_MAG:
        return value_pu * mn.s_base_va / mn.base_v[node2]
    if kind == MeasurementKind.V_ANGLE:
        return float(np.rad2deg(value_pu))
    return value_pu * mn.s_base_va / 1e3


def _std_devs(jacobian: sp.csr_matrix, sigma: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Standard deviations of angle and magnitude states: sqrt of the diagonal of the gain inverse, from a sparse LU
    with a symmetric ordering (little fill on feeders) solved for the identity columns in chunks."""
    gain = (jacobian.T @ sp.diags(1.0 / sigma**2) @ jacobian).tocsc()
    try:
        lu = splu(gain, permc_spec="MMD_AT_PLUS_A")
    except RuntimeError:
        return np.full(n, np.nan), np.full(n, np.nan)
    diag = np.empty(2 * n)
    for start in range(0, 2 * n, STD_CHUNK):
        cols = np.arange(start, min(start + STD_CHUNK, 2 * n))
        rhs = np.zeros((gain.shape[0], len(cols)))
        rhs[cols, np.arange(len(cols))] = 1.0
        diag[cols] = lu.solve(rhs)[cols, np.arange(len(cols))]
    sd = np.sqrt(np.maximum(diag, 0.0))
    return sd[:n], sd[n:]


def estimate_model(mn: ModelNetwork, mset: MeasurementSet, *, pseudo_p_w: np.ndarray, pseudo_q_var: np.ndarray,
                   options: EstimatorOptions | None = None, x0: np.ndarray | None = None, trigger: str = "request",
                   excluded: tuple[tuple[str, str], ...] = (), time_ms: int | None = None,
                   ) -> tuple[EstimateResult, np.ndarray | None]:
    """Estimate; returns the result and the full state (angles, magnitudes) for a warm start next time (None when it
    failed or part of the network was unobservable). ``pseudo_*`` are the pseudo loads used (per model load)."""
    opts = options or EstimatorOptions()
    t0 = time.perf_counter()
    stamp = int(time.time() * 1e3) if time_ms is None else time_ms
    model = mn.state.model
    telemetered = int((~mset.data["pseudo"]).sum())
    bad_buses = unobservable_buses(mn, mset)
    network, sub, keep = restrict(mn, mset, bad_buses)
    unobservable = tuple(model.buses[int(b)].name for b in bad_buses)
    n_full = mn.size
    nodes = np.zeros(n_full, dtype=NODE_ESTIMATE_DTYPE)
    nodes["node"] = mn.network.node_names
    nodes["bus"] = [model.buses[int(b)].name for b in mn.bus]
    nodes["phase"] = [_PHASE_NAME.get(int(p), "?") for p in mn.phase]
    for col in ("v_pu", "v_kv", "angle_deg", "v_sigma_pu", "angle_sigma_deg"):
        nodes[col] = np.nan

    def failed(reason: str) -> tuple[EstimateResult, None]:
        return EstimateResult(stamp, model.name, trigger, False, reason, nodes, np.zeros(0, BRANCH_ESTIMATE_DTYPE),
                              float("nan"), float("nan"), float("nan"), float("nan"), False, (), unobservable,
                              mn.deenergised_buses, excluded, len(mset), telemetered, 0,
                              (time.perf_counter() - t0) * 1e3, np.asarray(pseudo_p_w, dtype=float),
                              np.asarray(pseudo_q_var, dtype=float)), None

    if not len(keep):
        return failed("no observable node")
    estimator = ThreePhaseWls(network, opts.wls)
    if x0 is not None and x0.shape == (2 * n_full,) and len(keep) == n_full:
        start = x0
    else:
        full = flow_start_state(mn, pseudo_p_w, pseudo_q_var)
        start = np.concatenate([full[:n_full][keep], full[n_full:][keep]])
    try:
        out = estimate_with_bad_data(estimator, sub, options=opts.bad_data, start=StartMode.PREVIOUS, x0=start)
    except SeError as exc:
        return failed(str(exc))
    res = out.result
    v = np.zeros(n_full, dtype=complex)
    v[keep] = res.vm_pu * np.exp(1j * res.va_rad)
    observable = np.zeros(n_full, dtype=bool)
    observable[keep] = True
    nodes["observable"] = observable
    nodes["v_pu"][keep] = res.vm_pu
    nodes["v_kv"][keep] = res.vm_pu * mn.base_v[keep] / 1e3
    nodes["angle_deg"][keep] = np.rad2deg(res.va_rad)
    if opts.std_dev:
        sd_a, sd_m = _std_devs(res.jacobian, out.measurements.data["sigma"], len(keep))
        nodes["v_sigma_pu"][keep] = sd_m
        nodes["angle_sigma_deg"][keep] = np.rad2deg(sd_a)

    # Branch terminal flows of the observable part (rows touching only kept nodes).
    bm, bn = mn.network.branch_matrix, mn.network.branch_node
    assert bm is not None and bn is not None
    rows_ok = (np.asarray(abs(bm[:, ~observable]).sum(axis=1)).ravel() == 0) & observable[bn]
    cur = bm[rows_ok] @ v
    s = v[bn[rows_ok]] * np.conj(cur) * mn.s_base_va
    branches = np.zeros(int(rows_ok.sum()), dtype=BRANCH_ESTIMATE_DTYPE)
    idx = np.flatnonzero(rows_ok)
    branches["element"] = [mn.terminal_element[i] for i in idx]
    branches["terminal"] = mn.terminal_number[idx]
    branches["bus"] = nodes["bus"][bn[idx]]
    branches["phase"] = nodes["phase"][bn[idx]]
    branches["p_w"], branches["q_var"] = s.real, s.imag
    branches["i_a"] = np.abs(cur) * mn.s_base_va / mn.base_v[bn[idx]]
    guard = mn.phase_model.float_guard_s[mn.pm_node]
    loss_p = float(s.real.sum() + (np.abs(v * mn.base_v) ** 2 * guard).sum())
    loss_q = float(s.imag.sum())

    # Loads: the estimated node injections shared among the node's loads by their pseudo values.
    s_node = v * np.conj(mn.network.ybus_pu @ v) * mn.s_base_va
    load_p = np.asarray(pseudo_p_w, dtype=float).copy()
    load_q = np.asarray(pseudo_q_var, dtype=float).copy()
    shares: dict[int, list[tuple[int, float]]] = {}
    for i, ld in enumerate(model.loads):
        at = [mn.node_of(ld.bus, ph) for ph in (Phase.A, Phase.B, Phase.C, Phase.S1, Phase.S2) if ph in ld.phases]
        at = [k for k in at if k is not None]
        if not at:
            load_p[i] = load_q[i] = 0.0  # de-energised
            continue
        for k in at:
            shares.setdefault(k, []).append((i, abs(float(pseudo_p_w[i])) / len(at) + 1e-9))
    est_p = np.zeros(len(model.loads))
    est_q = np.zeros(len(model.loads))
    covered = np.zeros(len(model.loads), dtype=bool)
    for k, items in shares.items():
        if not observable[k]:
            continue
        total = sum(w for _, w in items)
        der_here = any(d.bus == int(mn.bus[k]) for d in model.ders)
        if der_here:
            continue  # the node's injection mixes load and DER: keep the pseudo value
        for i, w in items:
            est_p[i] += -s_node[k].real * w / total
            est_q[i] += -s_node[k].imag * w / total
            covered[i] = True
    load_p[covered] = est_p[covered]
    load_q[covered] = est_q[covered]

    bad: list[BadMeasurement] = []
    if out.removed:
        index = {mid: i for i, mid in enumerate(sub.ids)}
        rows = np.array([index[mid] for mid in out.removed])
        one = MeasurementSet(tuple(out.removed), sub.data[rows].copy())
        h, _ = estimator._evaluate(res.state, one, estimator._tap_columns(one))
        for j, (mid, rn) in enumerate(zip(out.removed, out.removed_residuals, strict=True)):
            d = one.data[j]
            node2 = int(keep[int(d["node2"])])
            bad.append(BadMeasurement(mid, _to_engineering(mn, int(d["kind"]), node2, float(d["value"])),
                                      _to_engineering(mn, int(d["kind"]), node2, float(h[j])), rn))
    full_state = np.concatenate([np.angle(v), np.abs(v)]) if len(keep) == n_full else None
    result = EstimateResult(stamp, model.name, trigger, True, "", nodes, branches, loss_p, loss_q, res.objective,
                            out.chi2_threshold, out.detected, tuple(bad), unobservable, mn.deenergised_buses,
                            excluded, len(out.measurements), telemetered, res.iterations,
                            (time.perf_counter() - t0) * 1e3, load_p, load_q)
    return result, full_state


def estimate_with_pseudo(mn: ModelNetwork, add_telemetry: Callable[[MeasurementBuilder], list],
                         base_p_w: np.ndarray, base_q_var: np.ndarray, *, options: EstimatorOptions | None = None,
                         x0: np.ndarray | None = None, trigger: str = "request", time_ms: int | None = None,
                         ) -> tuple[EstimateResult, np.ndarray | None]:
    """The whole pipeline: telemetry (``add_telemetry(builder)`` adds it and returns what it left out), pseudo loads
    (``base_*`` per model load, telemetered loads replaced, scaled to the meters), zero injections, estimate. When
    bad data was removed and the pseudo loads were scaled to meters, the scaling is redone without the removed
    measurements and the estimate repeated (a bad feeder meter must not skew the pseudo loads it scaled)."""
    opts = options or EstimatorOptions()

    def run(skip: frozenset[str]) -> tuple[EstimateResult, np.ndarray | None]:
        builder = MeasurementBuilder(mn)
        excluded = add_telemetry(builder)
        telemetry = builder.build()
        if skip:
            keep = np.array([mid not in skip for mid in telemetry.ids], dtype=bool)
            telemetry = MeasurementSet(tuple(m for m, k in zip(telemetry.ids, keep, strict=True) if k),
                                       telemetry.data[keep])
        mp, mq = measured_load_totals(builder)
        p0 = np.where(np.isnan(mp), base_p_w, mp)
        q0 = np.where(np.isnan(mq), base_q_var, mq)
        if opts.pseudo.scale_to_meters:
            p0, q0 = meter_scaled_loads(mn, p0, q0, telemetry, fixed=~np.isnan(mp))
        add_pseudo_and_virtual(builder, p0, q0, opts.pseudo)
        return estimate_model(mn, builder.build(), pseudo_p_w=p0, pseudo_q_var=q0, options=opts, x0=x0,
                              trigger=trigger, excluded=tuple((e.point, e.reason) for e in excluded),
                              time_ms=time_ms)

    result, x = run(frozenset())
    if result.converged and result.bad_data and opts.pseudo.scale_to_meters:
        again, x2 = run(frozenset(b.measurement for b in result.bad_data))
        if again.converged:
            return again, x2
    return result, x
