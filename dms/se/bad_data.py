"""Bad-data processing: chi-square detection and largest-normalised-residual (LNR) identification with removal.

The residual covariance diagonal is ``Omega_ii = sigma_i² − h_i G⁻¹ h_iᵀ``; ``G⁻¹ Hᵀ`` comes from the sparse LU of the
gain matrix the estimator already holds, and only the diagonal of ``H G⁻¹ Hᵀ`` is formed (row-wise products).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2

from dms.se.measurements import MeasurementSet
from dms.se.wls3ph import StartMode, ThreePhaseWls, WlsResult

CRITICAL_OMEGA = 1e-10  # relative Omega below which a measurement is critical (its residual is always ~0)


@dataclass(frozen=True, slots=True)
class BadDataOptions:
    confidence: float = 0.99  # chi-square detection confidence
    lnr_threshold: float = 3.0  # normalised residual above which a measurement is bad
    max_removals: int = 10
    keep_pseudo: bool = False  # never remove pseudo/virtual rows (live estimates: only telemetry can be bad data)


@dataclass(frozen=True, slots=True, eq=False)
class BadDataResult:
    result: WlsResult  # estimate after the removals
    measurements: MeasurementSet  # the measurements kept
    removed: tuple[str, ...]  # ids removed, in order
    removed_residuals: tuple[float, ...]  # the normalised residual of each when it was removed
    detected: bool  # the first chi-square test failed
    chi2_threshold: float  # of the final estimate


def chi_square_threshold(dof: int, confidence: float = 0.99) -> float:
    """The objective J above which bad data is suspected (``dof`` = measurements − states)."""
    if dof <= 0:
        return float("inf")  # no redundancy: nothing can be detected
    return float(chi2.ppf(confidence, dof))


def normalized_residuals(result: WlsResult, mset: MeasurementSet) -> np.ndarray:
    """|r_i| / sqrt(Omega_ii) per measurement; 0 for critical measurements (Omega ~ 0)."""
    jac = result.jacobian
    sigma2 = mset.data["sigma"] ** 2
    x = result.gain_lu.solve(np.asarray(jac.T.todense()))  # G⁻¹ Hᵀ, states x measurements
    hgh = np.asarray(jac.multiply(x.T).sum(axis=1)).ravel() / sigma2  # diag(H G⁻¹ Hᵀ W)
    omega = sigma2 * (1.0 - hgh)
    rn = np.zeros(len(mset))
    ok = omega > CRITICAL_OMEGA * sigma2
    rn[ok] = np.abs(result.residuals[ok]) / np.sqrt(omega[ok])
    return rn


def estimate_with_bad_data(estimator: ThreePhaseWls, mset: MeasurementSet, *, options: BadDataOptions | None = None,
                           start: StartMode = StartMode.FLAT, x0: np.ndarray | None = None) -> BadDataResult:
    """Estimate; while chi-square fails, remove the measurement with the largest normalised residual and re-estimate
    (warm start) until the test passes, no residual exceeds the threshold or ``max_removals`` is reached."""
    opts = options or BadDataOptions()
    result = estimator.estimate(mset, start=start, x0=x0)
    threshold = chi_square_threshold(len(mset) - estimator.state_size, opts.confidence)
    detected = result.objective > threshold
    removed: list[str] = []
    residuals: list[float] = []
    while result.objective > threshold and len(removed) < opts.max_removals:
        rn = normalized_residuals(result, mset)
        if opts.keep_pseudo:
            rn[mset.data["pseudo"]] = 0.0
        worst = int(np.argmax(rn))
        if rn[worst] <= opts.lnr_threshold:
            break
        removed.append(mset.ids[worst])
        residuals.append(float(rn[worst]))
        mset = mset.without(np.array([worst]))
        result = estimator.estimate(mset, start=StartMode.PREVIOUS, x0=result.state)
        threshold = chi_square_threshold(len(mset) - estimator.state_size, opts.confidence)
    return BadDataResult(result=result, measurements=mset, removed=tuple(removed),
                         removed_residuals=tuple(residuals), detected=detected,
                         chi2_threshold=threshold)
