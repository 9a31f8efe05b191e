"""CIM reader and builder on small hand-written files (tests/data/cim): valid input, each kind of malformed input,
skipped classes, phase codes and the summary CLI's exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.cim import CimError, load_cim, read_rdf
from models.cim.rdf import normalise_id
from models.model_cli import main
from models.network import MeasurementKind, Phase, phase_from_cim, phase_text

DATA = Path(__file__).resolve().parents[1] / "data" / "cim"


def test_minimal_feeder_builds_every_element() -> None:
    model = load_cim(DATA / "minimal.xml")
    assert model.name == "feeder1"
    assert [b.name for b in model.buses] == ["sourcebus", "loadbus"]
    (line,) = model.lines
    assert (model.buses[line.from_bus].name, model.buses[line.to_bus].name) == ("sourcebus", "loadbus")
    assert line.phases == (Phase.A,)
    assert line.length_m == 100.0
    assert line.r_ohm_per_m.shape == (1, 1) and line.r_ohm_per_m[0, 0] == pytest.approx(0.0002)
    assert not line.r_ohm_per_m.flags.writeable
    assert line.feeder_mrid == "F1"
    (load,) = model.loads
    assert (load.p_w, load.q_var, load.phases) == (10000.0, 5000.0, Phase.A)
    assert model.buses[1].phases == Phase.A
    assert model.buses[0].phases == Phase.A | Phase.B | Phase.C  # the source is three-phase
    assert model.buses[1].nominal_v == 4160.0
    # Location points: the first sits at terminal 1's bus, the last at terminal 2's.
    assert (model.buses[0].x, model.buses[0].y, model.buses[1].x, model.buses[1].y) == (10.0, 20.0, 30.0, 40.0)
    (meas,) = model.measurements
    assert meas.kind is MeasurementKind.ANALOG and meas.element_mrid == "L1" and meas.terminal_mrid == "TL2"
    assert meas.bus is not None and model.buses[meas.bus].name == "loadbus"
    assert model.bus_of_connectivity_node("N2") == 1
    assert model.bus_table()["nominal_v"][1] == 4160.0
    assert model.diagnostics.skipped_classes == {}


@pytest.mark.parametrize(
    ("file", "cim_class", "mrid", "name", "fragment"),
    [
        ("dangling_terminal_node.xml", "Terminal", "TL2", "line1_T2", "refers to N9, which is not in the file"),
        ("dangling_impedance.xml", "ACLineSegment", "L1", "line1", "refers to Z9, which is not in the file"),
        ("no_impedance.xml", "ACLineSegment", "L1", "line1", "has no impedance"),
        ("unknown_phase.xml", "ACLineSegmentPhase", "LP1", "line1_A", "unknown phase code 'SinglePhaseKind.X'"),
        ("duplicate_mrid.xml", "EnergyConsumer", "LD1", "load2", "duplicate mRID"),
        ("missing_terminal.xml", "ACLineSegment", "L1", "line1", "has 1 terminal(s), needs 2"),
    ],
)
def test_malformed_input_raises_one_error_naming_class_mrid_and_problem(
    file: str, cim_class: str, mrid: str, name: str, fragment: str
) -> None:
    result = None
    with pytest.raises(CimError) as caught:
        result = load_cim(DATA / file)
    assert result is None  # nothing half-loaded is returned
    matching = [p for p in caught.value.problems if p.cim_class == cim_class and p.mrid == mrid]
    assert matching, caught.value.problems
    assert matching[0].name == name
    assert fragment in matching[0].message
    text = str(caught.value)
    assert cim_class in text and mrid in text and fragment in text


def test_every_problem_is_collected_before_raising() -> None:
    with pytest.raises(CimError) as caught:
        load_cim(DATA / "dangling_terminal_node.xml")
    classes = {p.cim_class for p in caught.value.problems}
    assert classes == {"Terminal", "ACLineSegment"}  # the dangling terminal, and the line it leaves one-ended


def test_not_well_formed_and_missing_files() -> None:
    with pytest.raises(CimError, match="not well-formed XML at line"):
        load_cim(DATA / "not_well_formed.xml")
    with pytest.raises(CimError, match="does not exist"):
        load_cim(DATA / "no_such_file.xml")


def test_unknown_classes_are_listed_as_skipped() -> None:
    model = load_cim(DATA / "unknown_class.xml")
    assert model.diagnostics.skipped_classes == {"Widget": 2, "{http://example.com/ext#}Thing": 1}
    assert model.diagnostics.class_counts["Widget"] == 2
    assert len(model.lines) == 1


def test_identifier_styles_are_normalised() -> None:
    assert normalise_id("urn:uuid:ABC-1") == "ABC-1"
    assert normalise_id("#_ABC-1") == "ABC-1"
    assert normalise_id("_ABC-1") == "ABC-1"
    graph = read_rdf(DATA / "minimal.xml")
    assert graph.objects["TL2"].ref("Terminal.ConnectivityNode") == "N2"
    assert graph.objects["LP1"].values["ACLineSegmentPhase.phase"] == "SinglePhaseKind.A"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("PhaseCode.ABCN", Phase.A | Phase.B | Phase.C | Phase.N),
        ("SinglePhaseKind.s1", Phase.S1),
        ("OrderedPhaseCodeKind.Ns2", Phase.N | Phase.S2),
        ("PhaseCode.s12N", Phase.S1 | Phase.S2 | Phase.N),
        ("PhaseCode.none", Phase.NONE),
        ("CN", Phase.C | Phase.N),
    ],
)
def test_phase_codes(code: str, expected: Phase) -> None:
    assert phase_from_cim(code) == expected


def test_unknown_phase_code_is_refused_and_text_round_trips() -> None:
    with pytest.raises(ValueError, match="'PhaseCode.Q'"):
        phase_from_cim("PhaseCode.Q")
    assert phase_text(Phase.A | Phase.C | Phase.N) == "ACN"
    assert phase_from_cim(phase_text(Phase.S1 | Phase.S2)) == Phase.S1 | Phase.S2


def test_cli_prints_tables_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(DATA / "minimal.xml")]) == 0
    assert "line_segments" in capsys.readouterr().out
    assert main(["summary", str(DATA / "unknown_class.xml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["elements"]["line_segments"] == 1
    assert data["skipped_classes"]["Widget"] == 2
    assert not math.isnan(data["import_s"])


def test_cli_broken_file_exits_2_with_message_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(DATA / "no_impedance.xml")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ACLineSegment L1 'line1': has no impedance" in captured.err
    assert main(["summary"]) == 2  # usage error: returned, not raised


def test_sequence_impedance_becomes_a_three_phase_matrix() -> None:
    (line,) = load_cim(DATA / "sequence_impedance.xml").lines
    assert line.phases == (Phase.A, Phase.B, Phase.C)  # no ACLineSegmentPhase: three-phase
    assert line.sequence is not None and line.sequence.r0_ohm_per_m == pytest.approx(0.0009)
    # self = (2 Z1 + Z0) / 3, mutual = (Z0 - Z1) / 3
    assert line.r_ohm_per_m[0, 0] == pytest.approx((2 * 0.0003 + 0.0009) / 3)
    assert line.x_ohm_per_m[0, 1] == pytest.approx((0.0018 - 0.0006) / 3)
    assert line.r_ohm_per_m.shape == (3, 3)


def test_measurement_on_a_terminal_of_another_element_is_refused() -> None:
    with pytest.raises(CimError) as caught:
        load_cim(DATA / "measurement_wrong_terminal.xml")
    (problem,) = caught.value.problems
    assert (problem.cim_class, problem.mrid) == ("Analog", "AN1")
    assert "belongs to LD1, not to its PowerSystemResource ACLineSegment L1" in problem.message
