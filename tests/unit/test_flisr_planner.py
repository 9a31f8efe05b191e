"""FLISR planner: fault location from FPIs, isolation, upstream and downstream restoration checked by power flow,
splitting/shedding when a tie cannot carry an area, DER islands. Sample network (50 Hz) and the IEEE feeders."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dms.flisr import (
    FaultLocationError,
    FlisrError,
    FlisrOptions,
    FlisrPlan,
    StepPurpose,
    SwitchAction,
    locate_fault,
    locate_section,
    plan_restoration,
    tripping_device,
)
from dms.flisr.cli import default_controllable
from dms.flow_check import VoltageBand
from dms.network_state import NetworkState, UnknownNetworkElementError
from models.cim import load_cim
from models.sample_network import F_HZ, build_sample_network
from tests.support import IEEE13, IEEE123, requires_reference_feeders


@pytest.fixture(scope="module")
def sample() -> NetworkState:
    return NetworkState.from_model(build_sample_network(), frequency_hz=F_HZ)


@pytest.fixture(scope="module")
def telemetered(sample: NetworkState) -> frozenset[str]:
    found = default_controllable(sample.base)
    assert found is not None
    return found


def _customers(state: NetworkState, prefix: str) -> int:
    per_load = state.customers_per_load()
    return int(sum(n for ld, n in zip(state.base.loads, per_load, strict=True) if ld.name.startswith(prefix)))


def _actions(plan: FlisrPlan) -> list[tuple[str, SwitchAction, StepPurpose]]:
    return [(s.switch, s.action, s.purpose) for s in plan.steps]


def _balanced(plan: FlisrPlan) -> None:
    assert plan.customers_interrupted == (plan.customers_restored_upstream + plan.customers_restored_downstream
                                          + plan.customers_unserved)
    assert [s.number for s in plan.steps] == list(range(1, len(plan.steps) + 1))


# ---------------------------------------------------------------------------------------------- location
def test_fault_is_located_between_the_last_fpi_that_picked_up_and_the_first_that_did_not(
        sample: NetworkState, telemetered: frozenset[str]) -> None:
    live = sample.with_switches({"F2-CB": False})  # as SCADA sees it after the trip
    fault = locate_fault(live, "F2-CB", ["F2-RMU03-LBS2", "F2-RMU03-LBS1"], controllable=telemetered)
    assert fault.tripped_switch == "F2-CB"
    assert fault.picked_up == ("F2-RMU03-LBS1", "F2-RMU03-LBS2")  # source side first
    assert set(fault.boundary_switches) == {"F2-RMU03-LBS2", "F2-RMU06-LBS1"}
    assert {"F2-C04", "F2-C05", "F2-C06", "F2-RMU04-DT", "F2-RMU05-DT"} == set(fault.faulted_elements)
    # the study entry point finds the same section from the line name
    studied = locate_section(sample, "F2-C05", controllable=telemetered)
    assert studied.boundary_switches == fault.boundary_switches
    assert studied.faulted_buses == fault.faulted_buses
    tripped, between = tripping_device(sample, "F2-C05")
    assert tripped == "F2-CB" and between[0] == "F2-RMU01-LBS1" and between[-1] == "F2-RMU04-LBS2"


def test_section_grows_to_the_nearest_controllable_switch(sample: NetworkState,
                                                          telemetered: frozenset[str]) -> None:
    fewer = telemetered - {"F2-RMU06-LBS1"}
    fault = locate_section(sample, "F2-C04", controllable=fewer)
    assert set(fault.boundary_switches) == {"F2-RMU03-LBS2", "F2-RMU06-LBS2"}
    assert "F2-RMU06-DT" in fault.faulted_elements


def test_manual_boundary_switches_when_nothing_controllable_bounds_the_section(sample: NetworkState) -> None:
    fault = locate_section(sample, "F2-C04", controllable={"F2-CB", "F1-RMU08-LBS2"})
    assert set(fault.boundary_switches) == {"F2-RMU03-LBS2", "F2-RMU06-LBS1"}
    assert "crew" in fault.description
    plan = plan_restoration(sample, fault, options=FlisrOptions(controllable=frozenset({"F2-CB", "F1-RMU08-LBS2"})))
    assert [s.telemetered for s in plan.isolation] == [False, False]
    assert all(s.telemetered for s in plan.restoration)
    _balanced(plan)


def test_location_errors_name_the_element(sample: NetworkState) -> None:
    with pytest.raises(UnknownNetworkElementError, match="NOPE"):
        locate_section(sample, "NOPE")
    with pytest.raises(UnknownNetworkElementError, match="no switch named 'NOPE'"):
        locate_fault(sample, "NOPE", [])
    with pytest.raises(FaultLocationError, match="F2-C04.*not energised"):
        locate_section(sample.with_switches({"F2-CB": False}), "F2-C04")
    with pytest.raises(UnknownNetworkElementError, match="controllable"):
        locate_section(sample, "F2-C04", controllable={"F2-CB", "XX"})
    with pytest.raises(FlisrError, match="repair_time_h"):
        FlisrOptions(repair_time_h=0)


# ---------------------------------------------------------------------------------------------- sample plans
def test_demo_fault_f2_c04_isolates_recloses_and_feeds_the_tail_from_f1(sample: NetworkState,
                                                                          telemetered: frozenset[str]) -> None:
    fault = locate_section(sample, "F2-C04", controllable=telemetered)
    plan = plan_restoration(sample, fault, options=FlisrOptions(controllable=telemetered))
    assert _actions(plan) == [
        ("F2-RMU03-LBS2", SwitchAction.OPEN, StepPurpose.ISOLATE),
        ("F2-RMU06-LBS1", SwitchAction.OPEN, StepPurpose.ISOLATE),
        ("F2-CB", SwitchAction.CLOSE, StepPurpose.RESTORE_UPSTREAM),
        ("F1-RMU08-LBS2", SwitchAction.CLOSE, StepPurpose.RESTORE_DOWNSTREAM),
    ]
    assert all(s.telemetered for s in plan.steps)
    assert plan.customers_interrupted == _customers(sample, "F2-")
    upstream = sum(_customers(sample, f"F2-RMU0{k}-") for k in (1, 2, 3))
    section = _customers(sample, "F2-RMU04-") + _customers(sample, "F2-RMU05-")
    assert plan.customers_restored_upstream == upstream
    assert plan.customers_unserved == section
    assert plan.customers_restored_downstream == plan.customers_interrupted - upstream - section > 0
    assert len(plan.options) == 1 and plan.options[0].accepted and plan.options[0].closes == ("F1-RMU08-LBS2",)
    assert "violations" not in plan.final_check
    assert not plan.shed_loads and not plan.der_islands
    assert plan.plan_ms > 0
    _balanced(plan)


def test_fault_on_the_first_cable_keeps_the_breaker_open(sample: NetworkState, telemetered: frozenset[str]) -> None:
    plan = plan_restoration(sample, locate_section(sample, "F2-C01", controllable=telemetered),
                            options=FlisrOptions(controllable=telemetered))
    assert _actions(plan) == [("F2-RMU03-LBS1", SwitchAction.OPEN, StepPurpose.ISOLATE),
                              ("F1-RMU08-LBS2", SwitchAction.CLOSE, StepPurpose.RESTORE_DOWNSTREAM)]
    assert plan.customers_restored_upstream == 0
    assert plan.customers_unserved == _customers(sample, "F2-RMU01-") + _customers(sample, "F2-RMU02-")
    assert any("F2-CB bounds the faulted section" in n for n in plan.notes)
    _balanced(plan)


def test_fault_next_to_the_tie_restores_the_last_rmu_through_it(sample: NetworkState,
                                                                 telemetered: frozenset[str]) -> None:
    plan = plan_restoration(sample, locate_section(sample, "F2-C08", controllable=telemetered),
                            options=FlisrOptions(controllable=telemetered))
    assert set(plan.fault.boundary_switches) == {"F2-RMU06-LBS2", "F2-RMU08-LBS1"}
    assert plan.restoration[-1].switch == "F1-RMU08-LBS2"
    assert plan.customers_restored_downstream == _customers(sample, "F2-RMU08-")
    assert plan.customers_unserved == _customers(sample, "F2-RMU07-")
    _balanced(plan)


def test_f3_f4_tie_feeds_a_dead_f4_tail_without_paralleling_the_infeeds(sample: NetworkState,
                                                                         telemetered: frozenset[str]) -> None:
    plan = plan_restoration(sample, locate_section(sample, "F4-C05", controllable=telemetered),
                            options=FlisrOptions(controllable=telemetered))
    assert plan.restoration[-1].switch == "F3-RMU08-LBS2"  # F4's side is dead: no paralleling of SS-GRID1/2
    assert plan.customers_restored_downstream > 0
    _balanced(plan)


def test_radial_end_recloser_fault_has_no_restoration_path(sample: NetworkState) -> None:
    plan = plan_restoration(sample, locate_section(sample, "F3-OH2"))
    assert plan.fault.tripped_switch == "F3-REC1"
    assert plan.restoration == ()
    assert plan.customers_unserved == plan.customers_interrupted > 0
    assert any("stay off until repair" in n for n in plan.notes)


def _overloaded_f1(sample: NetworkState) -> NetworkState:
    factor = np.array([2.0 if ld.name.startswith("F1-") else 1.0 for ld in sample.base.loads])
    return sample.scaled_loads(factor)


# a wide band so the tie is judged by its overload (F1-C01 above its 400 A rating), not by voltage
WIDE = VoltageBand(0.85, 1.10)


def test_tie_that_would_overload_is_rejected_and_the_least_important_load_is_shed(
        sample: NetworkState, telemetered: frozenset[str]) -> None:
    state = _overloaded_f1(sample)
    options = FlisrOptions(controllable=telemetered, band=WIDE)
    plan = plan_restoration(state, locate_section(state, "F2-C02", controllable=telemetered), options=options)
    whole = plan.options[0]
    assert whole.closes == ("F1-RMU08-LBS2",) and whole.opens == () and not whole.accepted
    assert "F1-C01 loaded" in whole.check and "adds" in whole.check
    chosen = [o for o in plan.options if o.accepted]
    assert len(chosen) == 1 and chosen[0].opens  # fed after cutting the area
    shed = [s for s in plan.restoration if s.purpose is StepPurpose.SHED_LOAD]
    assert shed and shed[0].number < plan.restoration[-1].number  # open in the dead area before the tie closes
    assert plan.restoration[-1].switch == "F1-RMU08-LBS2"
    assert plan.shed_loads and any("load shed" in n for n in plan.notes)
    assert "adds" not in plan.final_check
    area = sum(_customers(sample, f"F2-RMU0{k}-") for k in range(3, 9))
    assert 0 < plan.customers_restored_downstream < area
    _balanced(plan)


def test_priority_customers_are_kept_when_shedding(sample: NetworkState, telemetered: frozenset[str]) -> None:
    state = _overloaded_f1(sample)
    rmu03 = state.index_of("load", "F2-RMU03-LOAD")
    vip = next(c.consumer_number for c in state.base.customers if c.load == rmu03)
    options = FlisrOptions(controllable=telemetered, band=WIDE, priority_customers=frozenset({vip}))
    plan = plan_restoration(state, locate_section(state, "F2-C02", controllable=telemetered), options=options)
    assert plan.shed_loads and "F2-RMU03-LOAD" not in plan.shed_loads
    assert plan.priority_customers_unserved == 0
    _balanced(plan)


def test_no_tie_accepted_leaves_the_area_off_with_a_note(sample: NetworkState, telemetered: frozenset[str]) -> None:
    state = _overloaded_f1(sample)
    options = FlisrOptions(controllable=telemetered, band=WIDE, allow_load_shedding=False)
    plan = plan_restoration(state, locate_section(state, "F2-C02", controllable=telemetered), options=options)
    assert plan.restoration == () and plan.customers_restored == 0
    assert plan.customers_unserved == plan.customers_interrupted
    assert any("no restoration without violations" in n for n in plan.notes)


# ---------------------------------------------------------------------------------------------- IEEE feeders
@pytest.fixture(scope="module")
def ieee123() -> NetworkState:
    return NetworkState.from_model(load_cim(IEEE123))


@requires_reference_feeders()
def test_ieee123_fault_below_sw4_is_restored_through_sw7(ieee123: NetworkState) -> None:
    plan = plan_restoration(ieee123, locate_section(ieee123, "l117"))
    assert plan.fault.tripped_switch == "sw1"  # no breaker on IEEE 123: the feeder-head switch
    assert _actions(plan) == [("sw4", SwitchAction.OPEN, StepPurpose.ISOLATE),
                              ("sw5", SwitchAction.OPEN, StepPurpose.ISOLATE),
                              ("sw1", SwitchAction.CLOSE, StepPurpose.RESTORE_UPSTREAM),
                              ("sw7", SwitchAction.CLOSE, StepPurpose.RESTORE_DOWNSTREAM)]
    assert plan.customers_restored_downstream > 0
    _balanced(plan)


@requires_reference_feeders()
def test_ieee123_overloading_tie_sheds_the_part_it_cannot_carry(ieee123: NetworkState) -> None:
    plan = plan_restoration(ieee123, locate_section(ieee123, "l116"))
    assert set(plan.fault.boundary_switches) == {"sw2", "sw4", "sw6"}
    assert not any(s.switch == "sw8" for s in plan.steps)  # its bus 54 is inside the faulted section
    rejected = [o for o in plan.options if not o.accepted]
    assert rejected and rejected[0].closes == ("sw7",) and "adds" in rejected[0].check
    assert ("sw5", SwitchAction.OPEN, StepPurpose.SHED_LOAD) in _actions(plan)
    assert plan.shed_loads and plan.customers_restored_downstream > 0
    _balanced(plan)


@requires_reference_feeders()
def test_ieee123_radial_end_has_isolation_and_upstream_restoration_only(ieee123: NetworkState) -> None:
    plan = plan_restoration(ieee123, locate_section(ieee123, "l114"))
    assert _actions(plan) == [("sw3", SwitchAction.OPEN, StepPurpose.ISOLATE),
                              ("sw1", SwitchAction.CLOSE, StepPurpose.RESTORE_UPSTREAM)]
    assert plan.customers_unserved > 0 and plan.customers_restored_downstream == 0
    assert any("stay off until repair" in n for n in plan.notes)
    _balanced(plan)


@requires_reference_feeders()
def test_ieee13_der_island_kept_only_when_it_carries_its_load() -> None:
    state = NetworkState.from_model(load_cim(IEEE13))
    every = frozenset(s.name for s in state.base.switches)  # fuse1 named: a crew may pull it
    options = FlisrOptions(controllable=every, repair_time_h=4.0)
    fault = locate_section(state, "632633", controllable=every)
    assert "fuse1" in fault.boundary_switches and fault.tripped_switch == "brkr1"
    heavy = plan_restoration(state, fault, options=options)  # 400 kW at 634 against 240 kW PV + 2 x 25 kW battery
    assert heavy.der_islands == ()
    assert any("not kept as an island" in n for n in heavy.notes)
    light = state
    for name in ("634a", "634b", "634c"):
        light = light.with_load(name, 80e3, 40e3)
    kept = plan_restoration(light, fault, options=options)
    assert kept.der_islands == ("downstream of fuse1",)
    assert any("kept as a DER island" in n for n in kept.notes)
    assert kept.customers_restored_downstream == heavy.customers_restored_downstream + 3  # the three 634 loads
    _balanced(kept)


# ---------------------------------------------------------------------------------------------- a second tie
@pytest.fixture(scope="module")
def two_ties() -> NetworkState:
    """The sample with an extra normally-open tie F2-F3-TIE between F3-RMU05 and F2-RMU05 (both on SS-BUS1), so
    a dead F2 tail can be fed from F1 (at RMU08) and from F3 (at RMU05)."""
    model = build_sample_network()
    template = next(s for s in model.switches if s.name == "F1-RMU08-LBS2")
    tie = dataclasses.replace(template, mrid="test-f2-f3-tie", name="F2-F3-TIE", feeder_mrid=None,
                              from_bus=model.bus_by_name("F3-RMU05-BB").index,
                              to_bus=model.bus_by_name("F2-RMU05-BB").index)
    return NetworkState.from_model(dataclasses.replace(model, switches=(*model.switches, tie)), frequency_hz=F_HZ)


def _scaled(state: NetworkState, **factors: float) -> NetworkState:
    return state.scaled_loads(np.array([factors.get(ld.name[:2], 1.0) for ld in state.base.loads]))


def test_overloading_tie_is_rejected_and_the_other_tie_chosen(two_ties: NetworkState) -> None:
    state = _scaled(two_ties, F1=2.0)
    plan = plan_restoration(state, locate_section(state, "F2-C02"), options=FlisrOptions(band=WIDE))
    verdicts = {o.closes: o for o in plan.options}
    assert not verdicts[("F1-RMU08-LBS2",)].accepted and "F1-C01 loaded" in verdicts[("F1-RMU08-LBS2",)].check
    assert verdicts[("F2-F3-TIE",)].accepted
    assert _actions(plan)[-1] == ("F2-F3-TIE", SwitchAction.CLOSE, StepPurpose.RESTORE_DOWNSTREAM)
    assert not plan.shed_loads
    assert plan.customers_unserved == _customers(state, "F2-RMU01-") + _customers(state, "F2-RMU02-")


def test_area_no_single_tie_can_carry_is_split_between_two_ties(two_ties: NetworkState) -> None:
    state = _scaled(two_ties, F1=2.0, F3=2.3)
    plan = plan_restoration(state, locate_section(state, "F2-C02"), options=FlisrOptions(band=WIDE))
    singles = [o for o in plan.options if len(o.closes) == 1]
    assert len(singles) == 2 and not any(o.accepted for o in singles)
    assert any("F3-C01 loaded" in o.check for o in singles) and any("F1-C01 loaded" in o.check for o in singles)
    split = [o for o in plan.options if o.accepted]
    assert split and all(len(o.closes) == 2 and len(o.opens) == 1 for o in split)
    actions = _actions(plan)
    cut = actions[1]
    assert cut[1] is SwitchAction.OPEN and cut[2] is StepPurpose.RESTORE_DOWNSTREAM  # split before the closes
    assert {a[0] for a in actions[2:]} == {"F1-RMU08-LBS2", "F2-F3-TIE"}
    assert not plan.shed_loads and plan.customers_restored_downstream == sum(
        _customers(state, f"F2-RMU0{k}-") for k in range(3, 9))
    _balanced(plan)


def test_candidate_budget_bounds_the_flow_checks(two_ties: NetworkState) -> None:
    state = _scaled(two_ties, F1=2.0, F3=2.3)
    plan = plan_restoration(state, locate_section(state, "F2-C02"),
                            options=FlisrOptions(band=WIDE, max_candidates=2))
    assert sum(1 for o in plan.options if not o.check.startswith("not checked")) == 2
    assert any("budget" in n for n in plan.notes) and plan.customers_restored_downstream == 0


def test_live_state_with_the_breaker_already_open_gives_the_same_plan(sample: NetworkState,
                                                                       telemetered: frozenset[str]) -> None:
    options = FlisrOptions(controllable=telemetered)
    study = plan_restoration(sample, locate_section(sample, "F2-C04", controllable=telemetered), options=options)
    live = sample.with_switches({"F2-CB": False})
    fault = locate_fault(live, "F2-CB", ["F2-RMU03-LBS1", "F2-RMU03-LBS2"], controllable=telemetered)
    plan = plan_restoration(live, fault, options=options)
    assert _actions(plan) == _actions(study)
    assert plan.customers_interrupted == study.customers_interrupted
    assert plan.customers_restored == study.customers_restored


def test_a_held_tie_is_never_planned(sample: NetworkState) -> None:
    """A tie with a hold tag (or bounding an earthed section) is left alone: the F2 tail then has no path."""
    fault = locate_section(sample, "F2-C04")
    plan = plan_restoration(sample, fault, options=FlisrOptions(held=frozenset({"F1-RMU08-LBS2"})))
    assert "F1-RMU08-LBS2" not in {s.switch for s in plan.steps}
    assert plan.customers_restored_downstream == 0 and plan.customers_restored_upstream > 0
    assert any("F1-RMU08-LBS2" in n and "not used" in n for n in plan.notes)
