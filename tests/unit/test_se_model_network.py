"""The three-phase estimator on the project's own phase model: exact measurements from models.three_phase_flow give
back the flow's voltages (IEEE 13 and the sample network), live points with bad quality are left out, a gross
error is removed and named, an area without measurements is reported unobservable, pseudo loads follow the meters."""

from __future__ import annotations

import numpy as np
import pytest
from support import IEEE13, requires_reference_feeders

from dms.network_state import NetworkState
from dms.se.live_measurements import MeasurementAccuracy, MeasurementBuilder, live_measurements
from dms.se.measurements import MeasurementKind
from dms.se.model_estimate import EstimatorOptions, estimate_model
from dms.se.phase_network import ModelNetwork, build_model_network, unobservable_buses
from dms.se.pseudo import PseudoOptions, add_pseudo_and_virtual, meter_scaled_loads
from dms.se.synthetic import flow_point_values, snapshot_of
from models.cim import load_cim
from models.config import StationConfig, load_station_config
from models.measurement_points import Quantity
from models.network import Phase
from models.points import Quality
from models.samples import sample_network_station_path
from models.three_phase_flow import ThreePhaseFlow, run_three_phase_powerflow


@pytest.fixture(scope="module")
def sample() -> StationConfig:
    return load_station_config(sample_network_station_path())


def _truth(mn: ModelNetwork, flow: ThreePhaseFlow) -> np.ndarray:
    """Complex per-unit voltages of the flow on the estimator's nodes."""
    idx = {n: i for i, n in enumerate(flow.nodes["node"])}
    rows = flow.nodes[[idx[n] for n in mn.network.node_names]]
    return rows["v_v"] / mn.base_v * np.exp(1j * np.deg2rad(rows["angle_deg"]))


def _exact_injections(b: MeasurementBuilder, v: np.ndarray, sigma_pu: float = 1e-4) -> None:
    """P/Q injections at every non-source node, |V| and angle at the source bus, from the true voltages."""
    mn = b.mn
    s = v * np.conj(mn.network.ybus_pu @ v)
    src = set(mn.source_nodes.tolist())
    for k in range(mn.size):
        if k in src:
            b.add_pu(f"v {k}", MeasurementKind.V_MAG, k, k, abs(v[k]), 1e-4)
            b.add_pu(f"a {k}", MeasurementKind.V_ANGLE, k, k, np.angle(v[k]) - mn.network.vnom_angle_rad[k], 1e-5)
            continue
        b.add_pu(f"p {k}", MeasurementKind.P_INJ, k, k, s[k].real, sigma_pu)
        b.add_pu(f"q {k}", MeasurementKind.Q_INJ, k, k, s[k].imag, sigma_pu)


@requires_reference_feeders()
def test_ieee13_exact_measurements_give_back_the_flow_voltages() -> None:
    model = load_cim(IEEE13)
    state = NetworkState.from_model(model, frequency_hz=60.0)
    mn = build_model_network(state)
    flow = run_three_phase_powerflow(state.model)
    v = _truth(mn, flow)
    b = MeasurementBuilder(mn)
    _exact_injections(b, v)
    bus = {x.name: x.index for x in model.buses}
    phases = {"A": Phase.A, "B": Phase.B, "C": Phase.C}
    used = 0
    for row in flow.branches:  # P, Q and |I| of the regulator, the breaker and the feeder-head line
        if str(row["element"]) in ("Reg", "brkr1", "650632") and str(row["phase"]) in phases:
            for q, value in ((Quantity.P_KW, row["p_w"] / 1e3), (Quantity.Q_KVAR, row["q_var"] / 1e3),
                             (Quantity.CURRENT_A, row["i_a"])):
                used += b.branch(f"{row['element']} {row['terminal']} {row['phase']} {q.value}", q,
                                 str(row["element"]), phases[str(row["phase"])], float(value),
                                 abs(float(value)) * 0.005 + 0.1, bus=bus[str(row["bus"])])
    assert used == 54  # 3 elements x 2 terminals x 3 phases x 3 quantities
    mset = b.build()
    result, _ = estimate_model(mn, mset, pseudo_p_w=state.load_p_w, pseudo_q_var=state.load_q_var)
    assert result.converged, result.summary()
    assert not result.unobservable_buses and not result.bad_data
    assert np.abs(result.nodes["v_pu"] - np.abs(v)).max() < 1e-4
    # Branch flows and losses of the estimate are the flow's.
    assert abs(result.loss_p_w - flow.loss_p_w) < 0.01 * abs(flow.loss_p_w) + 100


def _sample_state(config: StationConfig) -> tuple[NetworkState, NetworkState, ThreePhaseFlow, ModelNetwork]:
    assert config.network is not None
    state = NetworkState.from_model(config.network, frequency_hz=config.frequency_hz)
    rng = np.random.default_rng(3)
    truth = state.with_loads(state.load_p_w * rng.uniform(0.4, 0.9, len(state.load_p_w)),
                             state.load_q_var * rng.uniform(0.4, 0.9, len(state.load_q_var)))
    return state, truth, run_three_phase_powerflow(truth.model), build_model_network(state)


def test_sample_network_exact_telemetry_and_injections_give_back_the_flow(sample: StationConfig) -> None:
    state, truth, flow, mn = _sample_state(sample)
    v = _truth(mn, flow)
    b = MeasurementBuilder(mn)
    excluded = live_measurements(b, sample, snapshot_of(flow_point_values(sample, truth.model, flow)),
                                 accuracy=MeasurementAccuracy())
    telemetered = len(b)
    assert telemetered > 200
    assert all("LBS2" in e.point for e in excluded)  # the open ties only
    _exact_injections(b, v, sigma_pu=1e-4)
    result, _ = estimate_model(mn, b.build(), pseudo_p_w=truth.load_p_w, pseudo_q_var=truth.load_q_var)
    assert result.converged, result.summary()
    assert np.abs(result.nodes["v_pu"] - np.abs(v)).max() < 1e-4
    assert np.isfinite(result.nodes["v_sigma_pu"]).all() and (result.nodes["v_sigma_pu"] > 0).all()
    # Loads are the consumption at the actual voltage (the model's loads are voltage dependent): the flow's total.
    assert abs(result.load_p_w.sum() - flow.load_p_w) < 1e-4 * flow.load_p_w
    assert np.allclose(result.load_p_w, truth.load_p_w, rtol=0.02)


def test_pseudo_loads_follow_the_feeder_meters(sample: StationConfig) -> None:
    state, truth, flow, mn = _sample_state(sample)
    b = MeasurementBuilder(mn)
    live_measurements(b, sample, snapshot_of(flow_point_values(sample, truth.model, flow)),
                      accuracy=MeasurementAccuracy())
    p, q = meter_scaled_loads(mn, state.load_p_w, state.load_q_var, b.build())
    # Model loads are nominal; the meters read the lighter truth: the pseudo total follows (within the losses).
    assert abs(p.sum() - truth.load_p_w.sum()) < 0.03 * truth.load_p_w.sum()
    assert abs(p.sum() - state.load_p_w.sum()) > 0.2 * state.load_p_w.sum()
    assert (p > 0).all() and (q > 0).all()


def test_bad_quality_points_are_left_out(sample: StationConfig) -> None:
    state, truth, flow, mn = _sample_state(sample)
    values = flow_point_values(sample, truth.model, flow)
    ids = {p.name: p.id for p in sample.points}
    marks = {"F1-CB.P.ph_A": Quality.INVALID, "F1-CB.Q.ph_A": Quality.NOT_TOPICAL, "F2-CB.P.ph_A": Quality.COMM_LOST,
             "F2-CB.Q.ph_A": Quality.OPERATOR_BLOCKED, "F3-CB.P.ph_A": Quality.QUESTIONABLE,
             "F3-CB.Q.ph_A": Quality.QUESTIONABLE}
    quality = {ids[n]: int(q) for n, q in marks.items()}
    b = MeasurementBuilder(mn)
    excluded = live_measurements(b, sample, snapshot_of(values, quality=quality), accuracy=MeasurementAccuracy(),
                                 own_flags={ids["F3-CB.Q.ph_A"]})  # flagged by the estimator itself: kept
    out = {e.point: e.reason for e in excluded}
    for name in ("F1-CB.P.ph_A", "F1-CB.Q.ph_A", "F2-CB.P.ph_A", "F2-CB.Q.ph_A", "F3-CB.P.ph_A"):
        assert name in out
    assert "NOT_TOPICAL" in out["F1-CB.Q.ph_A"] and "another application" in out["F3-CB.P.ph_A"]
    used = set(b.build().ids)
    assert "F3-CB.Q.ph_A" in used and "F1-CB.P.ph_A" not in used


def test_a_gross_error_is_removed_and_named(sample: StationConfig) -> None:
    state, truth, flow, mn = _sample_state(sample)
    values = flow_point_values(sample, truth.model, flow, noise_pct=0.3, seed=4)
    bad_id = next(p.id for p in sample.points if p.name == "F2-RMU03-LBS1.A.ph_B")
    true_value = values[bad_id]
    values[bad_id] = true_value * 2.5
    b = MeasurementBuilder(mn)
    live_measurements(b, sample, snapshot_of(values), accuracy=MeasurementAccuracy())
    p, q = meter_scaled_loads(mn, state.load_p_w, state.load_q_var, b.build())
    add_pseudo_and_virtual(b, p, q, PseudoOptions())
    result, _ = estimate_model(mn, b.build(), pseudo_p_w=p, pseudo_q_var=q, options=EstimatorOptions(std_dev=False))
    assert result.converged and result.bad_data_detected
    assert [x.measurement for x in result.bad_data] == ["F2-RMU03-LBS1.A.ph_B"]
    bad = result.bad_data[0]
    assert bad.normalized_residual > 10
    assert abs(bad.estimate - true_value) < 0.1 * true_value
    assert result.chi2_passed
    v = np.abs(_truth(mn, flow))
    assert np.abs(result.nodes["v_pu"] - v).max() < 0.01


def test_an_area_without_measurements_is_reported_unobservable(sample: StationConfig) -> None:
    state, truth, flow, mn = _sample_state(sample)
    b = MeasurementBuilder(mn)
    live_measurements(b, sample, snapshot_of(flow_point_values(sample, truth.model, flow)),
                      accuracy=MeasurementAccuracy())
    p, q = meter_scaled_loads(mn, state.load_p_w, state.load_q_var, b.build())
    add_pseudo_and_virtual(b, p, q, PseudoOptions())
    full = b.build()
    # Drop every injection at one distribution transformer's LV bus (its load unknown) and at its HV bus (so KCL
    # there cannot give the transformer's current either): the LV bus is not observable, the HV bus still is.
    lv = "F4-RMU05-DT-LV"
    dt = next(t for t in sample.network.transformers if t.name == "F4-RMU05-DT")  # type: ignore[union-attr]
    hv = sample.network.buses[dt.windings[0].bus].name  # type: ignore[union-attr]
    inj = np.isin(full.data["kind"], [MeasurementKind.P_INJ, MeasurementKind.Q_INJ])
    at = np.isin(mn.bus[full.data["node2"]], [dt.windings[0].bus, dt.windings[1].bus]) & inj
    keep = ~at
    assert (~keep).sum() == 12, hv
    from dms.se.measurements import MeasurementSet

    mset = MeasurementSet(tuple(m for m, k in zip(full.ids, keep, strict=True) if k), full.data[keep])
    bad = unobservable_buses(mn, mset)
    assert [sample.network.buses[int(x)].name for x in bad] == [lv]  # type: ignore[union-attr]
    result, _ = estimate_model(mn, mset, pseudo_p_w=p, pseudo_q_var=q, options=EstimatorOptions(std_dev=False))
    assert result.converged, result.summary()
    assert result.unobservable_buses == (lv,)
    dead = result.nodes["bus"] == lv
    assert np.isnan(result.nodes["v_pu"][dead]).all() and not result.nodes["observable"][dead].any()
    assert np.isfinite(result.nodes["v_pu"][~dead]).all()


def test_de_energised_parts_are_left_out(sample: StationConfig) -> None:
    assert sample.network is not None
    state = NetworkState.from_model(sample.network, frequency_hz=sample.frequency_hz).with_switches({"F1-CB": False})
    mn = build_model_network(state)
    assert any(b.startswith("F1-") for b in mn.deenergised_buses)
    assert not any(str(n).startswith("F1-RMU03") for n in mn.network.node_names)
