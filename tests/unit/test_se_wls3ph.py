"""Three-phase WLS on a small 4-node network: exact measurements give back the exact state; bad-data processing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dms.se.bad_data import chi_square_threshold, estimate_with_bad_data, normalized_residuals
from dms.se.errors import NotObservableError
from dms.se.measurements import MeasurementKind, MeasurementSet, measurement_array
from dms.se.wls3ph import PhaseNetwork, StartMode, ThreePhaseWls

# Nodes: 0 source, 1 regulator primary, 2 regulated side, 3 load; lines 0-1, 1-2 (regulator), 2-3, 1-3.
BRANCHES = [(0, 1, 4 - 8j), (1, 2, 20 - 60j), (2, 3, 3 - 6j), (1, 3, 1 - 2j)]


def _network() -> PhaseNetwork:
    y = sp.lil_matrix((4, 4), dtype=complex)
    for a, b, yb in BRANCHES:
        y[a, a] += yb
        y[b, b] += yb
        y[a, b] -= yb
        y[b, a] -= yb
    y[3, 3] += 0.05j  # a capacitor
    return PhaseNetwork(("n0", "n1", "n2", "n3"), y.tocsr(), np.zeros(4), np.array([1]), np.array([2]))


TRUE_VM = np.array([1.0, 0.985, 1.02, 0.99])
TRUE_VA = np.array([0.0, -0.01, -0.012, -0.02])
TRUE_TAP = np.array([1.03])


def _exact_measurements(est: ThreePhaseWls) -> MeasurementSet:
    net = est.network
    ybus = est.ybus(TRUE_TAP)
    v = TRUE_VM * np.exp(1j * TRUE_VA)
    s = v * np.conj(ybus @ v)
    rows = [(MeasurementKind.V_MAG, i, TRUE_VM[i], 0.01) for i in range(4)]
    rows += [(MeasurementKind.V_ANGLE, 0, 0.0, 0.001)]
    rows += [(MeasurementKind.P_INJ, i, s.real[i], 0.01) for i in range(1, 4)]
    rows += [(MeasurementKind.Q_INJ, i, s.imag[i], 0.01) for i in range(1, 4)]
    rows += [(MeasurementKind.P_INJ, 0, s.real[0], 0.02), (MeasurementKind.Q_INJ, 0, s.imag[0], 0.02)]
    data = measurement_array(len(rows) + 1)
    for k, (kind, node, value, sigma) in enumerate(rows):
        data[k] = (kind, node, node, value, sigma, False)
    data[-1] = (MeasurementKind.TAP, net.reg_primary[0], net.reg_regulated[0], TRUE_TAP[0], 0.001, False)
    return MeasurementSet(tuple(f"m{k}" for k in range(len(data))), data)


def test_exact_measurements_give_the_exact_state() -> None:
    est = ThreePhaseWls(_network())
    result = est.estimate(_exact_measurements(est))
    assert np.allclose(result.vm_pu, TRUE_VM, atol=1e-8)
    assert np.allclose(result.va_rad, TRUE_VA, atol=1e-8)
    assert np.allclose(result.taps, TRUE_TAP, atol=1e-8)
    assert result.objective < 1e-10
    again = est.estimate(_exact_measurements(est), start=StartMode.PREVIOUS, x0=result.state)
    assert again.iterations <= 2


def test_tap_without_measurement_is_estimated() -> None:
    est = ThreePhaseWls(_network())
    mset = _exact_measurements(est)
    mset = mset.without(np.flatnonzero(mset.data["kind"] == MeasurementKind.TAP))
    assert np.allclose(est.estimate(mset).taps, TRUE_TAP, atol=1e-8)


def test_unobservable_state_is_reported() -> None:
    est = ThreePhaseWls(_network())
    mset = _exact_measurements(est)
    only_v = mset.without(np.flatnonzero(mset.data["kind"] != MeasurementKind.V_MAG))
    with pytest.raises(NotObservableError, match="gain matrix"):
        est.estimate(only_v)


def _noisy(est: ThreePhaseWls, seed: int) -> MeasurementSet:
    mset = _exact_measurements(est)
    rng = np.random.default_rng(seed)
    return mset.with_values(mset.data["value"] + rng.normal(0.0, 0.2, len(mset)) * mset.data["sigma"])


def test_clean_data_passes_chi_square_and_keeps_every_measurement() -> None:
    est = ThreePhaseWls(_network())
    out = estimate_with_bad_data(est, _noisy(est, 1))
    assert not out.detected
    assert out.removed == ()


def test_gross_error_is_detected_identified_and_removed() -> None:
    est = ThreePhaseWls(_network())
    mset = _noisy(est, 2)
    bad = mset.ids.index("m7")  # P injection at node 3
    values = mset.data["value"].copy()
    values[bad] += 30 * mset.data["sigma"][bad]
    corrupted = mset.with_values(values)
    first = est.estimate(corrupted)
    assert first.objective > chi_square_threshold(len(corrupted) - est.state_size)
    assert int(np.argmax(normalized_residuals(first, corrupted))) == bad
    out = estimate_with_bad_data(est, corrupted)
    assert out.detected
    assert out.removed == ("m7",)
    assert np.allclose(out.result.vm_pu, TRUE_VM, atol=5e-3)
