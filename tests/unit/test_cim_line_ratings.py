"""Line current ratings (``LineSegment.rated_current_a`` / ``emergency_current_a``) from CIM CurrentLimits: where the
limit sets hang (terminal, CIMHub's shared set referenced from terminals, equipment), normal vs emergency, the lowest
over the terminals, what is ignored, the IEEE feeders, the sample network and the export round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from models.cim import CimError, load_cim
from models.cim.export import to_rdf_xml
from models.model_cli import main
from models.network import NetworkModel
from models.sample_network import CABLES, EMERGENCY_FACTOR, FEEDER_RATING_A, OVERHEAD, SAMPLE_NETWORK_PATH
from tests.support import IEEE13, IEEE123, requires_reference_feeders

MINIMAL = Path(__file__).resolve().parents[1] / "data" / "cim" / "minimal.xml"
NS = "http://iec.ch/TC57/CIM100#"

# CIMHub's two types (acceptableDuration 5e9 s = permanent, 7200 s = emergency) and a lower-limit type.
TYPES = f"""
<cim:OperationalLimitType rdf:ID="_NORM"><cim:IdentifiedObject.name>NormAmpsType</cim:IdentifiedObject.name>
  <cim:OperationalLimitType.acceptableDuration>5000000000.0</cim:OperationalLimitType.acceptableDuration>
  <cim:OperationalLimitType.direction rdf:resource="{NS}OperationalLimitDirectionKind.absoluteValue"/>
</cim:OperationalLimitType>
<cim:OperationalLimitType rdf:ID="_EMERG"><cim:IdentifiedObject.name>EmergencyAmpsType</cim:IdentifiedObject.name>
  <cim:OperationalLimitType.acceptableDuration>7200.0</cim:OperationalLimitType.acceptableDuration>
  <cim:OperationalLimitType.direction rdf:resource="{NS}OperationalLimitDirectionKind.absoluteValue"/>
</cim:OperationalLimitType>
<cim:OperationalLimitType rdf:ID="_LOW"><cim:IdentifiedObject.name>LowType</cim:IdentifiedObject.name>
  <cim:OperationalLimitType.direction rdf:resource="{NS}OperationalLimitDirectionKind.low"/>
</cim:OperationalLimitType>
"""


def _limit_set(set_id: str, owner: str, limits: dict[str, float]) -> str:
    """An OperationalLimitSet (``owner`` is e.g. ``Terminal rdf:resource="#_TL1"``) and a CurrentLimit per type."""
    text = f'<cim:OperationalLimitSet rdf:ID="_{set_id}"><cim:OperationalLimitSet.{owner}/></cim:OperationalLimitSet>\n'
    for type_id, amps in limits.items():
        text += (f'<cim:CurrentLimit rdf:ID="_{set_id}_{type_id}">'
                 f'<cim:CurrentLimit.value>{amps}</cim:CurrentLimit.value>'
                 f'<cim:OperationalLimit.OperationalLimitSet rdf:resource="#_{set_id}"/>'
                 f'<cim:OperationalLimit.OperationalLimitType rdf:resource="#_{type_id}"/></cim:CurrentLimit>\n')
    return text


def _load_with(tmp_path: Path, extra: str, *, terminal_refs: dict[str, str] | None = None) -> NetworkModel:
    """minimal.xml (one line L1 with terminals TL1/TL2, one load with TLD) plus ``extra`` objects;
    ``terminal_refs`` adds ``ACDCTerminal.OperationalLimitSet`` to terminals as CIMHub writes it."""
    text = MINIMAL.read_text()
    for term, set_id in (terminal_refs or {}).items():
        anchor = f"<cim:IdentifiedObject.mRID>{term}</cim:IdentifiedObject.mRID>"
        assert anchor in text
        text = text.replace(anchor, f'{anchor}\n  <cim:ACDCTerminal.OperationalLimitSet rdf:resource="#_{set_id}"/>')
    path = tmp_path / "feeder.xml"
    path.write_text(text.replace("</rdf:RDF>", TYPES + extra + "</rdf:RDF>"))
    return load_cim(path)


def _rating(model: NetworkModel) -> tuple[float, float]:
    (line,) = model.lines
    return line.rated_current_a, line.emergency_current_a


def test_no_limits_leave_the_line_unrated() -> None:
    model = load_cim(MINIMAL)
    assert all(math.isnan(v) for v in _rating(model))


def test_set_on_a_terminal_gives_normal_and_emergency(tmp_path: Path) -> None:
    model = _load_with(tmp_path, _limit_set("S1", 'Terminal rdf:resource="#_TL1"', {"NORM": 200.0, "EMERG": 260.0}))
    assert _rating(model) == (200.0, 260.0)
    assert "OperationalLimitSet" not in model.diagnostics.skipped_classes


def test_shared_set_referenced_from_the_terminal_as_cimhub_writes_it(tmp_path: Path) -> None:
    # CIMHub writes one set per distinct rating, naming one terminal of some other element; every terminal that
    # has this rating points at it.
    shared = _limit_set("S1", 'Terminal rdf:resource="#_TLD"', {"NORM": 400.0, "EMERG": 600.0})
    model = _load_with(tmp_path, shared, terminal_refs={"TL1": "S1"})
    assert _rating(model) == (400.0, 600.0)


def test_lowest_limit_over_both_terminals_and_the_equipment(tmp_path: Path) -> None:
    extra = (_limit_set("S1", 'Terminal rdf:resource="#_TL1"', {"NORM": 200.0, "EMERG": 300.0})
             + _limit_set("S2", 'Terminal rdf:resource="#_TL2"', {"NORM": 150.0, "EMERG": 320.0})
             + _limit_set("S3", 'Equipment rdf:resource="#_L1"', {"EMERG": 280.0}))
    assert _rating(_load_with(tmp_path, extra)) == (150.0, 280.0)


def test_lower_limits_and_limits_on_other_equipment_are_ignored(tmp_path: Path) -> None:
    extra = (_limit_set("S1", 'Terminal rdf:resource="#_TL1"', {"LOW": 5.0, "NORM": 90.0})
             + _limit_set("S2", 'Terminal rdf:resource="#_TLD"', {"NORM": 10.0, "EMERG": 12.0}))
    normal, emergency = _rating(_load_with(tmp_path, extra))
    assert normal == 90.0 and math.isnan(emergency)


def test_cgmes_limit_kind_decides_before_the_duration(tmp_path: Path) -> None:
    types = f"""
<cim:OperationalLimitType rdf:ID="_PATL"><cim:OperationalLimitType.kind rdf:resource="{NS}LimitKind.patl"/>
  <cim:OperationalLimitType.acceptableDuration>60</cim:OperationalLimitType.acceptableDuration>
</cim:OperationalLimitType>
<cim:OperationalLimitType rdf:ID="_TATL">
  <cim:OperationalLimitType.isInfiniteDuration>false</cim:OperationalLimitType.isInfiniteDuration>
</cim:OperationalLimitType>
"""
    extra = types + _limit_set("S1", 'Equipment rdf:resource="#_L1"', {"PATL": 210.0, "TATL": 250.0})
    assert _rating(_load_with(tmp_path, extra)) == (210.0, 250.0)


def test_bad_current_limits_are_reported_by_name(tmp_path: Path) -> None:
    extra = _limit_set("S1", 'Terminal rdf:resource="#_TL1"', {"NORM": -5.0, "NOPE": 100.0})
    with pytest.raises(CimError) as caught:
        _load_with(tmp_path, extra)
    text = str(caught.value)
    assert "S1_NORM" in text and "must be positive" in text
    assert "S1_NOPE" in text and "refers to NOPE, which is not in the file" in text


@requires_reference_feeders()
def test_ieee13_lines_carry_their_limits() -> None:
    lines = {ln.name: ln for ln in load_cim(IEEE13).lines}
    assert all(not math.isnan(ln.rated_current_a) for ln in lines.values())
    # OpLimI_730.0_730.0, OpLimI_340.0_600.0, OpLimI_165.0_600.0 in the file
    assert (lines["650632"].rated_current_a, lines["650632"].emergency_current_a) == (730.0, 730.0)
    assert (lines["632633"].rated_current_a, lines["632633"].emergency_current_a) == (340.0, 600.0)
    assert (lines["684652"].rated_current_a, lines["684652"].emergency_current_a) == (165.0, 600.0)


@requires_reference_feeders()
def test_ieee123_lines_carry_their_limits() -> None:
    model = load_cim(IEEE123)
    assert len(model.lines) == 118
    # one shared OpLimI_400.0_600.0 set, referenced from terminal 1 of every line
    assert {(ln.rated_current_a, ln.emergency_current_a) for ln in model.lines} == {(400.0, 600.0)}


def test_sample_cables_are_rated_by_size() -> None:
    model = load_cim(SAMPLE_NETWORK_PATH)
    expected = {c.name: c.rated_a for c in (*CABLES.values(), OVERHEAD)}
    assert {c.rated_a for c in CABLES.values()} == {400.0, 355.0, 305.0} and OVERHEAD.rated_a == 300.0
    for line in model.lines:
        assert line.rated_current_a == expected[line.impedance_name], line.name
        assert line.emergency_current_a == pytest.approx(EMERGENCY_FACTOR * line.rated_current_a), line.name
    # The feeder rating the loads are scaled to is no more than the weakest conductor of any feeder.
    assert FEEDER_RATING_A <= min(line.rated_current_a for line in model.lines)
    heads = [ln for ln in model.lines if ln.name.endswith("-C01")]
    assert len(heads) == 6 and {ln.rated_current_a for ln in heads} == {400.0}


@pytest.mark.parametrize("source", ["sample", pytest.param("ieee13", marks=requires_reference_feeders())])
def test_export_round_trip_keeps_ratings(source: str, tmp_path: Path) -> None:
    model = load_cim(SAMPLE_NETWORK_PATH if source == "sample" else IEEE13)
    path = tmp_path / "again.xml"
    path.write_bytes(to_rdf_xml(model))
    again = load_cim(path)
    assert [(ln.mrid, ln.rated_current_a, ln.emergency_current_a) for ln in again.lines] == \
        [(ln.mrid, ln.rated_current_a, ln.emergency_current_a) for ln in model.lines]


def test_summary_cli_groups_lines_by_rating(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(SAMPLE_NETWORK_PATH), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["line_ratings"]
    assert {(r["rated_current_a"], r["emergency_current_a"]): r["lines"] for r in rows} == {
        (400.0, 480.0): 24, (355.0, 426.0): 12, (305.0, 366.0): 15, (300.0, 360.0): 4}
    assert main(["summary", str(MINIMAL), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["line_ratings"] == [
        {"rated_current_a": None, "emergency_current_a": None, "lines": 1}]
    assert main(["summary", str(SAMPLE_NETWORK_PATH)]) == 0
    assert "Line ratings (A)" in capsys.readouterr().out
