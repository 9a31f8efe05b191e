"""Balanced WLS state estimator on pandapower's IEEE 118-bus case: exact recovery, observability, bad data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pandapower as pp
    import pandapower.networks as pn

from dms.se.balanced import (
    BadDataOptions,
    Detection,
    MeasKind,
    MeasurementPlan,
    Side,
    analyse_observability,
    estimate,
    estimate_with_bad_data,
    generate_measurements,
    measurement_function,
    measurement_name,
    network_from_pandapower,
)
from dms.se.errors import NotObservableError, SeError


@pytest.fixture(scope="module")
def solved():
    net = pn.case118()
    pp.runpp(net)
    return net, network_from_pandapower(net)


def test_model_flows_match_pandapower_results(solved):
    net, model = solved
    meas = generate_measurements(model, MeasurementPlan(), noise=False)
    lines = model.branch_names.index("line 0"), model.branch_names.index(f"line {net.line.index[-1]}")
    sel = meas[(meas["kind"] == MeasKind.P_FLOW) & (meas["side"] == Side.FROM)]
    sel = sel[np.isin(sel["element"], lines)]
    got = measurement_function(model, sel, model.v_powerflow) * model.base_mva
    np.testing.assert_allclose(got, net.res_line.p_from_mw.values[[0, -1]], atol=1e-6)


def test_exact_measurements_recover_the_power_flow_state(solved):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(current_fraction=0.3), noise=False)
    assert np.any(meas["kind"] == MeasKind.I_MAG) and np.any(meas["virtual"])
    result = estimate(model, meas)
    assert np.max(np.abs(result.v - model.v_powerflow)) < 1e-8
    assert result.objective < 1e-8


def test_injections_only_are_observable_by_the_numerical_step(solved):
    _, model = solved
    plan = MeasurementPlan(flow_fraction=0.0)  # no flows: the greedy merge alone cannot close the meshes
    meas = generate_measurements(model, plan, noise=False)
    assert analyse_observability(model, meas).observable
    assert np.max(np.abs(estimate(model, meas).v - model.v_powerflow)) < 1e-8


def test_unobservable_island_is_reported_not_filled(solved):
    _, model = solved
    degree = np.bincount(np.r_[model.f_bus, model.t_bus], minlength=model.n_bus)
    leaf = int(np.flatnonzero((degree == 1) & ~model.zero_injection)[0])
    branch = int(np.flatnonzero((model.f_bus == leaf) | (model.t_bus == leaf))[0])
    neighbour = int(model.t_bus[branch] if model.f_bus[branch] == leaf else model.f_bus[branch])
    meas = generate_measurements(model, MeasurementPlan(), noise=False)
    is_bus = np.isin(meas["kind"], [MeasKind.V_MAG, MeasKind.P_INJ, MeasKind.Q_INJ])
    drop = (is_bus & np.isin(meas["element"], [leaf]))
    drop |= ~is_bus & (meas["element"] == branch)
    drop |= np.isin(meas["kind"], [MeasKind.P_INJ, MeasKind.Q_INJ]) & (meas["element"] == neighbour)
    meas = meas[~drop]
    report = analyse_observability(model, meas)
    assert not report.observable
    assert report.unobservable_islands == ((leaf,),)
    with pytest.raises(NotObservableError, match=model.bus_names[leaf]):
        estimate(model, meas)


def test_gross_error_is_detected_and_only_it_is_removed(solved):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(), seed=3)
    target = int(np.flatnonzero(meas["kind"] == MeasKind.P_FLOW)[10])
    meas["value"][target] += 20 * meas["sigma"][target]
    name = measurement_name(model, meas[target])
    out = estimate_with_bad_data(model, meas)
    assert out.detected and out.chi2_passed
    assert out.removed == (name,)
    assert out.removed_normalized_residuals[0] > 3.0
    assert len(out.measurements) == len(meas) - 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_data_removes_nothing(solved, seed):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(current_fraction=0.3), seed=seed)
    out = estimate_with_bad_data(model, meas, options=BadDataOptions(confidence=0.99))
    assert out.removed == ()
    assert not out.detected and out.testable


def test_lnr_mode_finds_an_error_the_chi_square_test_misses(solved):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(), seed=5)
    target = int(np.flatnonzero(meas["kind"] == MeasKind.Q_FLOW)[20])
    meas["value"][target] += 7 * meas["sigma"][target]  # J ~544 < 567 (99 % chi-square), normalised residual ~8
    assert estimate_with_bad_data(model, meas).removed == ()  # J stays under the chi-square threshold
    out = estimate_with_bad_data(model, meas, options=BadDataOptions(detection=Detection.LNR))
    assert out.detected
    assert out.removed == (measurement_name(model, meas[target]),)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lnr_mode_keeps_clean_data(solved, seed):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(current_fraction=0.3), seed=seed)
    out = estimate_with_bad_data(model, meas, options=BadDataOptions(detection=Detection.LNR))
    assert out.removed == () and not out.detected


def test_errors_name_the_measurement(solved):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(), noise=False)
    k = int(np.flatnonzero(meas["kind"] == MeasKind.Q_FLOW)[0])
    meas["sigma"][k] = 0.0
    with pytest.raises(SeError, match=r"Q_FLOW line \d+ from .*sigma must be > 0"):
        estimate(model, meas)


def test_model_needs_a_solved_net():
    with pytest.raises(SeError, match="runpp"):
        network_from_pandapower(pn.case9())


def test_prescreened_lnr_agrees_with_exact_lnr(solved):
    _, model = solved
    meas = generate_measurements(model, MeasurementPlan(), seed=6)
    target = int(np.flatnonzero(meas["kind"] == MeasKind.P_INJ)[5])
    meas["value"][target] -= 25 * meas["sigma"][target]
    exact = estimate_with_bad_data(model, meas)
    screened = estimate_with_bad_data(model, meas, options=BadDataOptions(lnr_candidates=50))
    assert exact.removed == screened.removed == (measurement_name(model, meas[target]),)
