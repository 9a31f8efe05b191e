"""Switching orders off-line: validation against the interlock rules on a simulated copy of the sample network,
study simulation (customers and power flow per step), persistence and the SwitchingPlan export/import."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dms.network_state import NetworkState
from dms.switching import (
    FORMAT,
    Marking,
    OrderState,
    OrderStore,
    PlanFormatError,
    ProblemKind,
    StepAction,
    StepStatus,
    SwitchingOrder,
    SwitchingStep,
    order_document,
    order_specs_from_document,
    simulate_steps,
    validate_steps,
)
from models.network import NetworkModel, SwitchKind
from models.sample_network import F_HZ, build_sample_network
from scada.tags import TagKind

OPEN, CLOSE, EARTH = StepAction.OPEN, StepAction.CLOSE, StepAction.EARTH


@pytest.fixture(scope="module")
def model() -> NetworkModel:
    return build_sample_network()


def _mrid(model: NetworkModel, name: str) -> str:
    for group in (model.switches, model.lines, model.buses):
        for x in group:
            if x.name == name:
                return x.mrid
    return ""


def _steps(model: NetworkModel, *specs: tuple[StepAction, str]) -> list[SwitchingStep]:
    return [SwitchingStep(i, a, t, _mrid(model, t), False) for i, (a, t) in enumerate(specs, start=1)]


def _validate(model: NetworkModel, *specs: tuple[StepAction, str], **kw: object):  # noqa: ANN202
    closed = np.array([not s.open for s in model.switches])
    return validate_steps(model, closed, _steps(model, *specs), **kw)  # type: ignore[arg-type]


def _kinds(report) -> list[tuple[int, ProblemKind]]:  # noqa: ANN001
    return [(p.step, p.kind) for p in report.problems]


def test_a_clean_transfer_validates(model: NetworkModel) -> None:
    report = _validate(model, (OPEN, "F2-RMU06-LBS2"), (CLOSE, "F1-RMU08-LBS2"), (OPEN, "F2-RMU07-LBS1"),
                       (EARTH, "F2-C07"))
    assert report.ok, report.problems


def test_closing_the_f3_f4_tie_parallels_the_grid_infeeds(model: NetworkModel) -> None:
    report = _validate(model, (OPEN, "F3-RMU06-LBS2"), (CLOSE, "F3-RMU08-LBS2"))
    assert report.ok  # after opening F3 at RMU06 the tie picks up a dead tail: no parallel
    report = _validate(model, (CLOSE, "F3-RMU08-LBS2"))
    assert _kinds(report) == [(1, ProblemKind.PARALLELS_SOURCES)]
    assert "SS-GRID1" in report.problems[0].reason and "SS-GRID2" in report.problems[0].reason
    allowed = _validate(model, (CLOSE, "F3-RMU08-LBS2"), parallel_allowed=["F3-RMU08-LBS2"])
    assert allowed.ok
    tagged = _validate(model, (CLOSE, "F3-RMU08-LBS2"),
                       markings=[Marking("F3-RMU08-LBS2", TagKind.PARALLEL_ALLOWED, "tag 1")])
    assert tagged.ok


def test_opening_a_disconnector_under_load(model: NetworkModel) -> None:
    """The sample has no disconnectors: make F1-RMU04-LBS2 one."""
    switches = tuple(dataclasses.replace(s, kind=SwitchKind.DISCONNECTOR) if s.name == "F1-RMU04-LBS2" else s
                     for s in model.switches)
    m = dataclasses.replace(model, switches=switches)
    report = _validate(m, (OPEN, "F1-RMU04-LBS2"))
    assert _kinds(report) == [(1, ProblemKind.DISCONNECTOR_UNDER_LOAD)]
    assert "F1-RMU04-LBS2" in report.problems[0].reason and "load" in report.problems[0].reason
    # with the load picked up elsewhere first (tie closed, far end opened) it carries nothing: allowed
    assert _validate(m, (OPEN, "F1-RMU05-LBS1"), (OPEN, "F1-RMU04-LBS2")).ok
    # closed into a ring through the tie, opening it would break a loop current
    ring = _validate(m, (CLOSE, "F1-RMU08-LBS2"), (OPEN, "F1-RMU04-LBS2"))
    assert _kinds(ring) == [(2, ProblemKind.DISCONNECTOR_UNDER_LOAD)]
    assert "loop" in ring.problems[0].reason


def test_closing_onto_an_earthed_or_faulted_section(model: NetworkModel) -> None:
    report = _validate(model, (OPEN, "F2-RMU06-LBS2"), (OPEN, "F2-RMU07-LBS1"), (EARTH, "F2-C07"),
                       (CLOSE, "F2-RMU06-LBS2"))
    assert _kinds(report) == [(4, ProblemKind.CLOSES_ONTO_EARTHED)]
    assert "F2-C07" in report.problems[0].reason
    live_mark = _validate(model, (OPEN, "F2-RMU06-LBS2"), (CLOSE, "F2-RMU06-LBS2"),
                          markings=[Marking("F2-C07", TagKind.FAULTED, "tag 9 by op (cable fault)")])
    assert _kinds(live_mark) == [(2, ProblemKind.CLOSES_ONTO_FAULTED)]
    # earthing a live cable is refused, as is unearthing one without earths
    assert _kinds(_validate(model, (EARTH, "F2-C07"))) == [(1, ProblemKind.EARTHS_LIVE_ELEMENT)]
    assert _kinds(_validate(model, (StepAction.UNEARTH, "F2-C07"))) == [(1, ProblemKind.NOT_MARKED)]


def test_state_unknown_elements_and_tags(model: NetworkModel) -> None:
    report = _validate(model, (CLOSE, "F1-CB"), (OPEN, "NO-SUCH-SWITCH"), (OPEN, "F1-C03"),
                       (StepAction.TAG, "F1-RMU03-LBS2"),
                       (OPEN, "F1-RMU03-LBS2"), (StepAction.UNTAG, "F1-RMU03-LBS2"), (CLOSE, "F1-RMU03-LBS2"))
    assert _kinds(report) == [(1, ProblemKind.ALREADY_IN_STATE), (2, ProblemKind.UNKNOWN_ELEMENT),
                              (3, ProblemKind.NOT_A_SWITCH), (5, ProblemKind.TAGGED)]  # applied anyway: 7 closes again
    assert all(f"step {p.step}" in p.text() and p.target in p.text() for p in report.problems)


def test_simulation_lists_customers_off_and_on_per_step(model: NetworkModel) -> None:
    state = NetworkState.from_model(model, frequency_hz=F_HZ)
    steps = _steps(model, (OPEN, "F2-RMU06-LBS2"), (CLOSE, "F1-RMU08-LBS2"), (OPEN, "F2-RMU07-LBS1"))
    report = simulate_steps(state, steps)
    assert report.ok, report
    s1, s2, s3 = report.steps
    customers = {ld.name: ld.customer_count for ld in model.loads}
    tail = customers["F2-RMU07-LOAD"] + customers["F2-RMU08-LOAD"]
    assert s1.deenergised_loads == ("F2-RMU07-LOAD", "F2-RMU08-LOAD") and s1.customers_off == tail > 0
    assert s1.customers_without_supply == tail
    assert s2.energised_loads == s1.deenergised_loads and s2.customers_on == tail
    assert s2.customers_without_supply == 0
    assert s3.customers_off == s3.customers_on == 0
    assert all(s.flow_ok and "pu" in s.flow_summary for s in report.steps)
    # a paralleling step is reported with the simulation too
    bad = simulate_steps(state, _steps(model, (CLOSE, "F3-RMU08-LBS2")), flow=False)
    assert [p.kind for p in bad.problems] == [ProblemKind.PARALLELS_SOURCES] and not bad.ok


def _order(model: NetworkModel) -> SwitchingOrder:
    steps = (SwitchingStep(1, OPEN, "F2-RMU06-LBS2", _mrid(model, "F2-RMU06-LBS2"), True, "open the ring"),
             SwitchingStep(2, CLOSE, "F1-RMU08-LBS2", _mrid(model, "F1-RMU08-LBS2"), True),
             SwitchingStep(3, OPEN, "F2-RMU07-LBS1", _mrid(model, "F2-RMU07-LBS1"), False, "crew at RMU07"),
             SwitchingStep(4, EARTH, "F2-C07", _mrid(model, "F2-C07"), False, "earth both ends"),
             SwitchingStep(5, StepAction.TAG, "F2-RMU06-LBS2", _mrid(model, "F2-RMU06-LBS2"), False))
    return SwitchingOrder(7, "Cable F2-C07 outage", "joint repair", "alice", OrderState.APPROVED, 1_700_000_000_000,
                          1_700_000_100_000, steps, approved_by="bob", network=model.name)


def test_export_is_a_cim_switching_plan_and_imports_back(model: NetworkModel) -> None:
    order = _order(model)
    doc = json.loads(json.dumps(order_document(order)))
    assert doc["format"] == FORMAT
    plan = doc["SwitchingPlan"]
    assert plan["name"] == order.title and plan["status"]["value"] == "approved"
    groups = plan["SwitchingStepGroups"]
    assert [g["description"] for g in groups] == ["control room (telemetered)", "field crew (manual)"]
    actions = [a for g in groups for a in g["SwitchingActions"]]
    assert [(a["class"], a["kind"], a["sequenceNumber"]) for a in actions] == [
        ("SwitchAction", "open", 1), ("SwitchAction", "close", 2), ("SwitchAction", "open", 3),
        ("GroundAction", "ground", 4), ("TagAction", "place", 5)]
    assert actions[0]["OperatedSwitch"] == {"mRID": _mrid(model, "F2-RMU06-LBS2"), "name": "F2-RMU06-LBS2"}
    assert actions[3]["GroundedEquipment"]["mRID"] == _mrid(model, "F2-C07")
    spec = order_specs_from_document(json.dumps(doc))
    assert spec.title == order.title and spec.purpose == order.purpose
    assert [(s.action, s.target, s.note) for s in spec.steps] == [(s.action, s.target_mrid, s.note)
                                                                  for s in order.steps]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.update(format="other/1"), "format"),
    (lambda d: d["SwitchingPlan"].update(name=""), "SwitchingPlan.name"),
    (lambda d: d["SwitchingPlan"]["SwitchingStepGroups"][0]["SwitchingActions"][0].update(kind="toggle"),
     "SwitchingActions[0]"),
    (lambda d: d["SwitchingPlan"]["SwitchingStepGroups"][1]["SwitchingActions"][0].update(sequenceNumber=1),
     "duplicate sequenceNumber"),
])
def test_a_malformed_plan_is_refused_naming_the_field(model: NetworkModel, edit, message: str) -> None:  # noqa: ANN001
    doc = order_document(_order(model))
    edit(doc)
    with pytest.raises(PlanFormatError, match=re.escape(message)):
        order_specs_from_document(doc)
    with pytest.raises(PlanFormatError, match="not JSON"):
        order_specs_from_document("{nope")


def test_orders_persist_across_a_reopen(model: NetworkModel, tmp_path: Path) -> None:
    store = OrderStore(tmp_path / "switching.sqlite")
    created = store.create(_order(model))
    done = dataclasses.replace(created.steps[0], status=StepStatus.DONE, executed_by="bob", executed_ms=123,
                               detail="ok")
    store.save(created.with_step(done, updated_ms=456, state=OrderState.EXECUTING))
    store.close()
    again = OrderStore(tmp_path / "switching.sqlite")
    got = again.get(created.id)
    assert got.state is OrderState.EXECUTING and got.updated_ms == 456
    assert got.steps[0] == done and got.steps[1:] == created.steps[1:]
    assert [o.id for o in again.list(OrderState.EXECUTING)] == [created.id] and not again.list(OrderState.DRAFT)
    with pytest.raises(LookupError, match="no switching order 999"):
        again.get(999)
    again.close()
