"""Import of the GridAPPS-D IEEE 13 and IEEE 123 CIM100 feeders (read-only reference data in ../shared/data/cim)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from support import IEEE13, IEEE123, requires_reference_feeders

from models.cim import load_cim, read_rdf
from models.model_cli import main
from models.network import DerKind, MeasurementKind, NetworkModel, Phase, SwitchKind

pytestmark = requires_reference_feeders()


@pytest.fixture(scope="module")
def ieee123() -> NetworkModel:
    return load_cim(IEEE123)


@pytest.fixture(scope="module")
def ieee13() -> NetworkModel:
    return load_cim(IEEE13)


@pytest.mark.timeout(60)
def test_ieee123_facts(ieee123: NetworkModel) -> None:
    counts = ieee123.counts()
    assert counts["topological_nodes"] == 130
    assert counts["line_segments"] == 118
    assert counts["loads"] == 91
    assert counts["tap_changers"] == 7
    assert counts["analog_measurements"] == 745
    assert counts["discrete_measurements"] == 37
    states = {s.name: (s.normal_open, s.open) for s in ieee123.switches}
    assert states == {**{f"sw{i}": (False, False) for i in range(1, 7)}, "sw7": (True, True), "sw8": (True, True)}
    assert {s.kind for s in ieee123.switches} == {SwitchKind.LOAD_BREAK_SWITCH}


@pytest.mark.timeout(60)
def test_ieee123_model_content(ieee123: NetworkModel) -> None:
    assert len(ieee123.sources) == 1 and ieee123.sources[0].nominal_v == pytest.approx(4160.0)
    assert len(ieee123.feeders) == 1
    assert all(line.feeder_mrid == ieee123.feeders[0].mrid for line in ieee123.lines)
    # Every line's impedance matrix matches its phase count and is symmetric.
    for line in ieee123.lines:
        n = len(line.phases)
        assert line.r_ohm_per_m.shape == (n, n), line.name
        assert (line.x_ohm_per_m == line.x_ohm_per_m.T).all(), line.name
        assert line.length_m > 0
    # Regulators: every tap changer sits on a transformer flagged as regulator, within its step range.
    regulators = {t.mrid for t in ieee123.transformers if t.is_regulator}
    for tc in ieee123.tap_changers:
        assert tc.transformer_mrid in regulators
        assert tc.low_step <= tc.step <= tc.high_step
        assert tc.control is not None and tc.control.target_value_v > 0
    assert sorted(tc.step for tc in ieee123.tap_changers) == [0.0, 0.0, 2.0, 4.0, 6.0, 6.0, 10.0]
    # sw8 is the single-phase tie: its one SwitchPhase says phase A.
    assert next(s for s in ieee123.switches if s.name == "sw8").phases == Phase.A
    assert sum(1 for b in ieee123.buses if b.phases) == 130  # every bus has at least one conductor phase
    assert sum(ld.p_w for ld in ieee123.loads) == pytest.approx(3_490_000.0)  # IEEE 123 total: 3490 kW


@pytest.mark.timeout(60)
def test_measurement_binding_round_trip(ieee123: NetworkModel) -> None:
    """An Analog on a line terminal maps to the bus of that terminal's ConnectivityNode, read straight from the file."""
    graph = read_rdf(IEEE123)
    line_mrids = {line.mrid for line in ieee123.lines}
    on_lines = [m for m in ieee123.measurements if m.kind is MeasurementKind.ANALOG and m.element_mrid in line_mrids]
    assert len(on_lines) > 100
    for meas in on_lines:
        terminal = graph.objects[graph.objects[meas.mrid].ref("Measurement.Terminal") or ""]
        node = graph.objects[terminal.ref("Terminal.ConnectivityNode") or ""]
        assert meas.bus is not None and ieee123.buses[meas.bus].name == node.name, meas.name
        assert terminal.ref("Terminal.ConductingEquipment") == meas.element_mrid
    # Every measurement with a terminal got a bus.
    assert all(m.bus is not None for m in ieee123.measurements if m.terminal_mrid is not None)


@pytest.mark.timeout(60)
def test_ieee13_loads_cleanly(ieee13: NetworkModel) -> None:
    counts = ieee13.counts()
    assert counts["topological_nodes"] == 22
    assert counts["line_segments"] == 11
    assert counts["loads"] == 16
    assert counts["analog_measurements"] == 161 and counts["discrete_measurements"] == 17
    units = Counter(u.kind for d in ieee13.ders for u in d.units)
    assert units == {DerKind.PHOTOVOLTAIC: 2, DerKind.BATTERY: 3}
    kinds = Counter(s.kind for s in ieee13.switches)
    assert kinds == {SwitchKind.BREAKER: 1, SwitchKind.RECLOSER: 1, SwitchKind.FUSE: 1,
                     SwitchKind.LOAD_BREAK_SWITCH: 2}
    # The README's "sectionaliser" is written as a LoadBreakSwitch named sect1, not as a cim:Sectionaliser.
    assert next(s for s in ieee13.switches if s.name == "sect1").kind is SwitchKind.LOAD_BREAK_SWITCH
    assert "Sectionaliser" not in ieee13.diagnostics.class_counts
    # Physics check: line 650632 uses IEEE configuration 601, Z11 = 0.3465 + j1.0179 ohm/mile.
    line = next(ln for ln in ieee13.lines if ln.name == "650632")
    assert line.r_ohm_per_m[0, 0] * 1609.344 == pytest.approx(0.3465, abs=1e-4)
    assert line.x_ohm_per_m[0, 0] * 1609.344 == pytest.approx(1.0179, abs=1e-4)
    # Split-phase secondary and tank transformers carry their phases.
    assert any(Phase.S1 in w.phases for t in ieee13.transformers for w in t.windings)
    assert len(ieee13.tap_changers) == 3


@pytest.mark.timeout(60)
def test_cli_on_ieee123(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    assert main(["summary", str(IEEE123), "--json"]) == 0
    elapsed_s = time.perf_counter() - started
    data = json.loads(capsys.readouterr().out)
    assert data["elements"]["topological_nodes"] == 130
    assert {s["name"]: s["normal_open"] for s in data["switches"]}["sw7"] is True
    assert data["skipped_classes"]["VoltageLimit"] == 8  # current limits are read (line ratings), voltage ones not
    assert data["cim_classes"]["Analog"] == 745
    assert data["import_s"] < 5.0 and elapsed_s < 10.0
