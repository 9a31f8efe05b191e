"""Bad data: chi-square detection on J, largest-normalised-residual (LNR) identification, iterative removal.

``Omega = R - H G⁻¹ Hᵀ``; only its diagonal is needed: ``G⁻¹ Hᵀ`` is solved with the gain factorisation the estimate
already holds, in column blocks (memory ``n_states x BLOCK``), and ``diag(H G⁻¹ Hᵀ)`` is a row-wise product.
Virtual (zero-injection) measurements are never removed; critical measurements (Omega ~ 0) cannot be tested.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2, norm

from dms.se.balanced.measurements import measurement_name
from dms.se.balanced.model import BalancedNetwork
from dms.se.balanced.wls import BalancedWlsResult, WlsOptions, estimate
from dms.se.errors import SeError

BLOCK = 1024
CRITICAL_OMEGA = 1e-8  # Omega_ii / sigma_i² below this: critical measurement, residual always ~0


class Detection(enum.Enum):
    CHI_SQUARE = "chi_square"  # LNR identification runs only while J exceeds the chi-square threshold
    LNR = "lnr"  # the largest normalised residual is tested every time, against a threshold raised for the number of
    # measurements (Bonferroni, so that clean data passes with ``confidence``); catches single errors that a
    # high-dof chi-square test misses, at the cost of a residual-covariance computation per estimate


@dataclass(frozen=True, slots=True)
class BadDataOptions:
    detection: Detection = Detection.CHI_SQUARE
    confidence: float = 0.99  # of the chi-square test
    lnr_threshold: float = 3.0  # normalised residual above which the largest one is removed
    max_removals: int = 10
    # 0: normalise every residual (exact LNR). N > 0: only the N largest weighted residuals |r|/sigma (a lower bound
    # of the normalised one) are normalised -- a pre-screening that makes LNR affordable on 10k-bus sets.
    lnr_candidates: int = 0


@dataclass(frozen=True, slots=True, eq=False)
class BadDataResult:
    result: BalancedWlsResult  # after the removals
    measurements: np.ndarray  # those kept
    removed: tuple[str, ...]  # names of the removed measurements, in order
    removed_normalized_residuals: tuple[float, ...]
    detected: bool  # the first chi-square test failed
    chi2_passed: bool  # of the final estimate (True when redundancy is too low to test: see ``testable``)
    testable: bool  # dof > 0


def chi_square_threshold(dof: int, confidence: float) -> float:
    """J above which bad data is suspected; +inf when there is no redundancy (nothing can be detected)."""
    return float(chi2.ppf(confidence, dof)) if dof > 0 else float("inf")


def lnr_threshold(options: BadDataOptions, n_measurements: int) -> float:
    """Normalised-residual threshold: the configured one, and in LNR mode at least the two-sided Bonferroni bound
    that the largest of ``n_measurements`` clean normalised residuals (standard normal) exceeds with probability
    ``1 - confidence``."""
    if options.detection is Detection.CHI_SQUARE or n_measurements == 0:
        return options.lnr_threshold
    return max(options.lnr_threshold, float(norm.isf((1.0 - options.confidence) / (2 * n_measurements))))


def normalized_residuals(result: BalancedWlsResult, meas: np.ndarray, *, only: np.ndarray | None = None) -> np.ndarray:
    """|r_i| / sqrt(Omega_ii) for every measurement (or the positions ``only``, others 0); 0 for critical ones."""
    pos = np.arange(len(meas)) if only is None else np.asarray(only, dtype=np.int64)
    h = result.jacobian[pos]
    sigma2 = meas["sigma"][pos] ** 2
    hgh = np.empty(len(pos))
    ht = h.T.tocsc()
    for start in range(0, len(pos), BLOCK):
        stop = min(start + BLOCK, len(pos))
        x = result.gain_lu.solve(ht[:, start:stop].toarray())  # G⁻¹ h_iᵀ for this block
        hgh[start:stop] = np.asarray(h[start:stop].multiply(x.T).sum(axis=1)).ravel()
    omega = sigma2 - hgh
    rn = np.zeros(len(meas))
    ok = omega > CRITICAL_OMEGA * sigma2
    rn[pos[ok]] = np.abs(result.residuals[pos[ok]]) / np.sqrt(omega[ok])
    return rn


def estimate_with_bad_data(net: BalancedNetwork, meas: np.ndarray, *, options: BadDataOptions = BadDataOptions(),
                           wls: WlsOptions | None = None) -> BadDataResult:
    """Estimate; while bad data is detected (chi-square fails, or with ``Detection.LNR`` always) and the largest
    normalised residual of a real measurement exceeds the threshold, remove that measurement and re-estimate from
    the previous state. ``detected`` tells whether the first estimate failed chi-square or (LNR mode) was flagged."""
    wls = wls or WlsOptions()
    result = estimate(net, meas, options=wls)
    removed: list[str] = []
    rns: list[float] = []
    detected = False
    first = True
    while True:
        passed = result.objective <= chi_square_threshold(result.dof, options.confidence)
        if result.dof <= 0 or (passed and options.detection is Detection.CHI_SQUARE):
            detected = detected or (first and not passed)
            break
        only = None
        if 0 < options.lnr_candidates < len(meas):
            weighted = np.abs(result.residuals) / meas["sigma"]
            weighted[meas["virtual"]] = 0.0
            only = np.argpartition(weighted, -options.lnr_candidates)[-options.lnr_candidates:]
        rn = normalized_residuals(result, meas, only=only)
        rn[meas["virtual"]] = 0.0
        worst = int(np.argmax(rn))
        threshold = lnr_threshold(options, int(np.count_nonzero(~meas["virtual"])))
        flagged = not passed if options.detection is Detection.CHI_SQUARE else bool(rn[worst] > threshold)
        if first:
            detected, first = flagged, False
        if rn[worst] <= threshold:
            break  # nothing identifiable (e.g. the error sits on critical measurements): keep the data, report it
        if len(removed) >= options.max_removals:
            raise SeError(f"bad data: still detected after removing {len(removed)} measurements "
                          f"({', '.join(removed)}); J = {result.objective:.1f}, next "
                          f"{measurement_name(net, meas[worst])} with normalised residual {rn[worst]:.1f}")
        removed.append(measurement_name(net, meas[worst]))
        rns.append(float(rn[worst]))
        meas = np.delete(meas, worst)
        result = estimate(net, meas, options=wls, v0=result.v)
    return BadDataResult(result=result, measurements=meas, removed=tuple(removed),
                         removed_normalized_residuals=tuple(rns), detected=detected, chi2_passed=passed,
                         testable=result.dof > 0)
