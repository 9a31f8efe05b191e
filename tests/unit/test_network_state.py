"""The DMS operating state over a network model, and the power-flow check every DMS proposal passes."""

from __future__ import annotations

import numpy as np
import pytest

from dms.errors import DmsError
from dms.flow_check import ViolationKind, VoltageBand, check_flow, new_violations
from dms.network_state import NetworkState, UnknownNetworkElementError
from models.sample_network import F_HZ, build_sample_network


@pytest.fixture(scope="module")
def state() -> NetworkState:
    return NetworkState.from_model(build_sample_network(), frequency_hz=F_HZ)


def test_from_model_takes_the_file_state(state: NetworkState) -> None:
    assert not state.closed("F1-RMU08-LBS2") and state.closed("F1-CB")
    assert set(state.open_switches()) == {"SS-BC", "F1-RMU08-LBS2", "F3-RMU08-LBS2", "F5-RMU08-LBS2"}
    assert state.customers_per_load().sum() == len(state.base.customers)
    assert state.model is state.model  # built once


def test_edits_return_new_states_and_apply_to_the_model(state: NetworkState) -> None:
    opened = state.with_switches({"F2-CB": False})
    assert state.closed("F2-CB") and not opened.closed("F2-CB")
    sw = next(s for s in opened.model.switches if s.name == "F2-CB")
    assert sw.open
    doubled = state.scaled_loads(2.0)
    assert doubled.model.loads[0].p_w == pytest.approx(2 * state.base.loads[0].p_w)
    with pytest.raises(ValueError):
        state.switch_closed[0] = False  # frozen arrays


def test_unknown_elements_and_out_of_range_edits_are_named(state: NetworkState) -> None:
    with pytest.raises(UnknownNetworkElementError, match="no switch named 'NOPE'"):
        state.with_switches({"NOPE": True})
    tap = state.base.tap_changers[0]
    with pytest.raises(DmsError, match=tap.name):
        state.with_taps({tap.name: tap.high_step + 1})
    with pytest.raises(DmsError, match="shape"):
        NetworkState(state.base, np.ones(3, bool), state.load_p_w, state.load_q_var, state.tap_step,
                     state.capacitor_sections, state.der_p_w, state.der_q_var)


def test_flow_check_of_the_normal_state_is_clean(state: NetworkState) -> None:
    check = check_flow(state)
    assert check.ok, check.summary()
    assert 0.95 < check.v_min_pu < check.v_max_pu < 1.05
    assert 0 < check.max_loading_pct < 100
    assert check.loss_p_w > 0 and not check.deenergised_loads


def test_flow_check_reports_dead_loads_and_new_violations(state: NetworkState) -> None:
    base = check_flow(state)
    dead = check_flow(state.with_switches({"F2-CB": False}))
    assert len(dead.deenergised_loads) == sum(1 for ld in state.base.loads
                                              if ld.feeder_mrid == next(f.mrid for f in state.base.feeders
                                                                        if f.name == "F2"))
    tight = check_flow(state, band=VoltageBand(0.99, 1.01))
    assert any(v.kind is ViolationKind.UNDERVOLTAGE for v in tight.violations)
    heavy = check_flow(state.scaled_loads(3.0))
    added = new_violations(base, heavy)
    assert added and any(v.kind in (ViolationKind.OVERLOAD, ViolationKind.UNDERVOLTAGE) for v in added)
    assert not new_violations(heavy, heavy)
