"""What one model-based estimate delivers (frozen; arrays read-only): node voltages with standard deviations,
branch terminal flows, losses, the chi-square verdict, bad data, unobservable and de-energised buses, timings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BRANCH_ESTIMATE_DTYPE", "NODE_ESTIMATE_DTYPE", "BadMeasurement", "EstimateResult"]

NODE_ESTIMATE_DTYPE = np.dtype([
    ("node", "U68"), ("bus", "U64"), ("phase", "U2"), ("v_pu", np.float64), ("v_kv", np.float64),
    ("angle_deg", np.float64), ("v_sigma_pu", np.float64), ("angle_sigma_deg", np.float64),
    ("observable", np.bool_),
])
BRANCH_ESTIMATE_DTYPE = np.dtype([
    ("element", "U64"), ("terminal", np.int8), ("bus", "U64"), ("phase", "U2"), ("p_w", np.float64),
    ("q_var", np.float64), ("i_a", np.float64),
])


@dataclass(frozen=True, slots=True)
class BadMeasurement:
    """A measurement the bad-data test removed: its id (the point name for telemetry), the value it read, the
    estimate of the same quantity without it, and its normalised residual when it was removed."""

    measurement: str
    value: float  # engineering units of the point (kV, kW, kvar, A)
    estimate: float
    normalized_residual: float


@dataclass(frozen=True, slots=True, eq=False)
class EstimateResult:
    time_ms: int  # UTC epoch ms when the snapshot was taken
    network: str
    trigger: str  # "periodic", "topology", "request", "cli"
    converged: bool
    error: str  # why there is no estimate ("" when converged)
    nodes: np.ndarray  # NODE_ESTIMATE_DTYPE, energised nodes (unobservable ones NaN, observable False)
    branches: np.ndarray  # BRANCH_ESTIMATE_DTYPE, power/current into each element at each terminal phase
    loss_p_w: float
    loss_q_var: float
    objective: float
    chi2_threshold: float
    bad_data_detected: bool  # the first chi-square test failed
    bad_data: tuple[BadMeasurement, ...]
    unobservable_buses: tuple[str, ...]
    deenergised_buses: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]  # (point, reason) left out before estimating
    measurements: int  # used (telemetry + pseudo + virtual)
    telemetered: int  # of which from telemetry
    iterations: int
    solve_ms: float
    load_p_w: np.ndarray  # per model load: estimated consumption (0 de-energised, pseudo value unobservable)
    load_q_var: np.ndarray

    def __post_init__(self) -> None:
        for name in ("nodes", "branches", "load_p_w", "load_q_var"):
            arr = np.array(getattr(self, name), copy=True)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def chi2_passed(self) -> bool:
        return self.converged and self.objective <= self.chi2_threshold

    def summary(self) -> str:
        if not self.converged:
            return f"state estimate of {self.network!r} failed: {self.error}"
        obs = self.nodes[self.nodes["observable"]]
        vmin = float(obs["v_pu"].min()) if len(obs) else float("nan")
        vmax = float(obs["v_pu"].max()) if len(obs) else float("nan")
        verdict = "passed" if self.chi2_passed else "failed"
        return (f"state estimate of {self.network!r}: {len(obs)}/{len(self.nodes)} nodes observable, |V| "
                f"{vmin:.4f}..{vmax:.4f} pu, losses {self.loss_p_w / 1e3:.1f} kW; J = {self.objective:.1f} "
                f"(chi-square limit {self.chi2_threshold:.1f}, {verdict}); {len(self.bad_data)} bad "
                f"measurement(s); {self.measurements} measurements ({self.telemetered} telemetered); "
                f"{self.iterations} iterations in {self.solve_ms:.1f} ms")
