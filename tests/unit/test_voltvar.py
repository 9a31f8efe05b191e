"""Volt/VAR engine, daily operation limits and CLI on IEEE 13 (three single-phase regulators, two capacitor banks),
IEEE 123 (seven regulators, four banks) and the embedded sample network (two OLTCs, 50 Hz)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import IEEE13, IEEE123, requires_reference_feeders

from dms.flow_check import ViolationKind, VoltageBand
from dms.network_state import NetworkState
from dms.voltvar import (
    ControlKind,
    DailyLimitError,
    DailyLimits,
    Objective,
    OperationCounter,
    VoltVarAction,
    VoltVarError,
    VoltVarOptions,
    VoltVarProposal,
    optimise,
)
from dms.voltvar.cli import main as cli_main
from models.cim import load_cim
from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH

WIDE = VoltageBand(0.95, 1.07)  # IEEE 13 starts with rg60 at 1.068 pu: inside this band, outside the default one


@pytest.fixture(scope="module")
def ieee13() -> NetworkState:
    if not IEEE13.is_file():
        pytest.skip("reference CIM models not found")
    return NetworkState.from_model(load_cim(IEEE13))


@pytest.fixture(scope="module")
def ieee123() -> NetworkState:
    if not IEEE123.is_file():
        pytest.skip("reference CIM models not found")
    return NetworkState.from_model(load_cim(IEEE123))


@pytest.fixture(scope="module")
def sample() -> NetworkState:
    return NetworkState.from_model(load_cim(SAMPLE_NETWORK_PATH), frequency_hz=F_HZ)


def _inside(p: VoltVarProposal, band: VoltageBand) -> None:
    assert p.feasible, p.message
    assert p.after.voltage_violations == 0
    assert band.low_pu <= p.after.v_min_pu and p.after.v_max_pu <= band.high_pu


def _within_ranges(state: NetworkState, p: VoltVarProposal) -> None:
    m = state.base
    for a in p.actions:
        if a.kind is ControlKind.TAP:
            tc = m.tap_changers[state.index_of("tap changer", a.element)]
            assert tc.low_step <= a.after <= tc.high_step
            assert a.after == int(a.after)
        else:
            cap = m.capacitors[state.index_of("capacitor", a.element)]
            assert 0 <= a.after <= max(cap.maximum_sections, 1)


@requires_reference_feeders()
def test_ieee13_losses_never_increase_from_a_feasible_start(ieee13: NetworkState) -> None:
    p = optimise(ieee13, VoltVarOptions(band=WIDE))
    assert p.before.voltage_violations == 0
    _inside(p, WIDE)
    assert p.verified and not p.new_violations
    assert p.after.loss_p_w <= p.before.loss_p_w
    _within_ranges(ieee13, p)
    # the proposed state really has the actions applied, and its flow gives the reported losses
    for a in p.actions:
        i = p.state.index_of("tap changer" if a.kind is ControlKind.TAP else "capacitor", a.element)
        got = p.state.tap_step[i] if a.kind is ControlKind.TAP else p.state.capacitor_sections[i]
        assert got == a.after


@requires_reference_feeders()
def test_ieee13_switches_a_capacitor_back_in_for_losses(ieee13: NetworkState) -> None:
    start = ieee13.with_capacitors({"cap1": 0})
    p = optimise(start, VoltVarOptions(band=WIDE))
    cap = [a for a in p.actions if a.element == "cap1"]
    assert cap and cap[0].before == 0 and cap[0].after == 1 and cap[0].kind is ControlKind.CAPACITOR
    assert p.after.loss_p_w < p.before.loss_p_w - 10e3  # cap1 carries ~17 kW of losses on IEEE 13
    _inside(p, WIDE)
    assert p.verified


@requires_reference_feeders()
def test_ieee13_default_band_brings_the_regulator_output_back_inside(ieee13: NetworkState) -> None:
    p = optimise(ieee13)
    assert p.before.voltage_violations == 2  # rg60.A and rg60.C above 1.05 pu
    _inside(p, VoltageBand())
    assert "back inside" in p.message
    assert {a.kind for a in p.actions} == {ControlKind.TAP}
    # lower voltage draws more current: at most a pre-existing overload grows, never a voltage violation appears
    assert all(v.kind is ViolationKind.OVERLOAD for v in p.new_violations)
    before_overloaded = {v.element for v in p.before.violations if v.kind is ViolationKind.OVERLOAD}
    assert {v.element for v in p.new_violations} <= before_overloaded


@requires_reference_feeders()
def test_ieee13_cvr_reduces_demand_inside_the_band(ieee13: NetworkState) -> None:
    p = optimise(ieee13, VoltVarOptions(objective=Objective.CVR, band=WIDE))
    _inside(p, WIDE)
    assert p.verified
    assert p.after.load_p_w < p.before.load_p_w - 5e3
    assert p.after.v_min_pu < p.before.v_min_pu  # lower voltages are how CVR saves
    assert p.objective_value(p.after) == p.after.load_p_w


@requires_reference_feeders()
def test_ieee123_losses_and_cvr(ieee123: NetworkState) -> None:
    losses = optimise(ieee123)
    _inside(losses, VoltageBand())
    assert losses.verified
    assert losses.after.loss_p_w <= losses.before.loss_p_w
    cvr = optimise(ieee123, VoltVarOptions(objective=Objective.CVR))
    _inside(cvr, VoltageBand())
    assert cvr.verified, [v.text() for v in cvr.new_violations]
    assert cvr.after.load_p_w < cvr.before.load_p_w - 20e3  # ~56 kW (1.6 %) measured
    assert all(a.kind is ControlKind.TAP for a in cvr.actions)
    _within_ranges(ieee123, cvr)
    assert cvr.elapsed_ms < 10_000


@requires_reference_feeders()
def test_daily_limit_blocks_and_caps_tap_operations(ieee123: NetworkState) -> None:
    free = optimise(ieee123, VoltVarOptions(objective=Objective.CVR))
    moved = {a.element: a.operations for a in free.actions}
    assert max(moved.values()) > 2
    # none left on any regulator: no tap action at all, each listed as blocked
    none_left = {t.name: 0 for t in ieee123.base.tap_changers}
    p = optimise(ieee123, VoltVarOptions(objective=Objective.CVR, operations_left=none_left))
    assert not [a for a in p.actions if a.kind is ControlKind.TAP]
    assert set(p.blocked) == set(none_left)
    assert "daily operation limit" in p.message
    # two left each: no regulator moves more than two steps
    p2 = optimise(ieee123, VoltVarOptions(objective=Objective.CVR,
                                          operations_left={t.name: 2 for t in ieee123.base.tap_changers}))
    assert p2.actions and all(a.operations <= 2 for a in p2.actions)
    assert p2.after.load_p_w > free.after.load_p_w  # the limit costs part of the saving


@requires_reference_feeders()
def test_infeasible_band_is_reported(ieee13: NetworkState, capsys: pytest.CaptureFixture[str]) -> None:
    p = optimise(ieee13, VoltVarOptions(band=VoltageBand(0.99, 1.0)))
    assert not p.feasible
    assert p.after.voltage_violations > 0
    assert "cannot be met" in p.message and "0.990-1.000 pu" in p.message and "worst" in p.message
    assert cli_main([str(IEEE13), "--band", "0.99,1.0"]) == 0
    out = capsys.readouterr().out
    assert "band NOT met" in out and "cannot be met" in out


def test_sample_network_oltc_only_at_50_hz(sample: NetworkState) -> None:
    assert len(sample.base.tap_changers) == 2 and sample.frequency_hz == 50
    p = optimise(sample, VoltVarOptions(objective=Objective.CVR))
    _inside(p, VoltageBand())
    assert p.verified
    assert p.actions and all(a.kind is ControlKind.TAP for a in p.actions)
    assert p.after.load_p_w < p.before.load_p_w
    losses = optimise(sample)
    assert losses.verified and losses.after.loss_p_w <= losses.before.loss_p_w


def test_options_are_validated() -> None:
    with pytest.raises(VoltVarError, match="min_gain_w"):
        VoltVarOptions(min_gain_w=-1)
    with pytest.raises(VoltVarError, match="overload_tolerance"):
        VoltVarOptions(overload_tolerance=2)
    with pytest.raises(VoltVarError):
        DailyLimits(max_tap_operations=-1)


def test_operation_counter_persists_per_day(tmp_path: Path, sample: NetworkState) -> None:
    now = [1_700_000_000.0]
    path = tmp_path / "voltvar.sqlite"
    counter = OperationCounter(path, DailyLimits(max_tap_operations=5, max_capacitor_switchings=2),
                               clock=lambda: now[0])
    tap = VoltVarAction(ControlKind.TAP, "SS-TR1-OLTC", "ABC", 6, 9)
    counter.check(tap)
    counter.record(tap, "operator")
    assert counter.used("SS-TR1-OLTC") == 3
    left = counter.operations_left(sample.base)
    assert left == {"SS-TR1-OLTC": 2, "SS-TR2-OLTC": 5}
    with pytest.raises(DailyLimitError, match=r"SS-TR1-OLTC.*3 operation\(s\) needed, 2 of 5 left"):
        counter.check(VoltVarAction(ControlKind.TAP, "SS-TR1-OLTC", "ABC", 9, 6))
    counter.close()
    reopened = OperationCounter(path, DailyLimits(max_tap_operations=5), clock=lambda: now[0])
    assert reopened.used("SS-TR1-OLTC") == 3  # survives a restart
    entry = next(e for e in reopened.entries(sample.base) if e.element == "SS-TR1-OLTC")
    assert (entry.used, entry.limit, entry.left, entry.kind) == (3, 5, 2, ControlKind.TAP)
    now[0] += 86_400  # the next day starts from zero
    assert reopened.used("SS-TR1-OLTC") == 0
    assert reopened.operations_left(sample.base)["SS-TR1-OLTC"] == 5
    reopened.close()


def test_cli_json_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([str(SAMPLE_NETWORK_PATH), "--objective", "cvr", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["objective"] == "cvr" and data["feasible"] and data["verified"]
    assert data["after"]["demand_kw"] < data["before"]["demand_kw"]
    assert {a["kind"] for a in data["actions"]} == {"tap"}
    missing = tmp_path / "nothing.xml"
    assert cli_main([str(missing)]) == 2
    assert "nothing.xml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli_main([str(SAMPLE_NETWORK_PATH), "--band", "1.05,0.95"])
    assert exc.value.code == 2
    assert "--band" in capsys.readouterr().err
