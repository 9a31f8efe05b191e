"""IEC 61970-552 difference models (models.cim.difference): applied to IEEE 123 and small hand-written feeders,
refused whole (naming object and property) when dangling, stale, duplicate or invalid as a network."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import IEEE123, requires_reference_feeders

from models.cim import CimError, build_network, read_rdf
from models.cim.difference import (
    CimDifferenceError,
    DifferenceHeader,
    Fragment,
    apply_difference,
    compare_graphs,
    difference_document,
    graph_document,
    parse_difference,
    read_difference,
)

DIFF_DIR = Path(__file__).resolve().parents[1] / "data" / "cim" / "diff"
CIM_DATA = DIFF_DIR.parent
SW3 = "C0E08600-353A-425F-8120-4D0DA40BEA29"
S1A = "EA157357-3736-4481-8CDE-722C5713C786"
L1 = "EA408DC0-D30B-41FC-B34E-3D1398982845"
pytestmark = pytest.mark.timeout(60)
HEADER = DifferenceHeader("d1ff0000-0000-4000-8000-0000000000aa", "2026-11-26T12:00:00Z", "test")


@pytest.fixture(scope="module")
def ieee123():  # type: ignore[no-untyped-def]
    if not IEEE123.is_file():
        pytest.skip(f"reference feeder {IEEE123} not present")
    return read_rdf(IEEE123)


@pytest.fixture(scope="module")
def two_feeders():  # type: ignore[no-untyped-def]
    return read_rdf(DIFF_DIR / "two_feeders.xml")


def _snapshot(graph) -> dict[str, tuple]:  # type: ignore[no-untyped-def]
    return {m: (o.cim_class, dict(o.values), {k: tuple(v) for k, v in o.refs.items()})
            for m, o in graph.objects.items()}


@requires_reference_feeders()
def test_change_diff_updates_ieee123_and_leaves_the_base_alone(ieee123) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(ieee123)
    graph, model, summary = apply_difference(ieee123, DIFF_DIR / "ieee123_change.xml")

    s1a = next(ld for ld in model.loads if ld.name == "s1a")
    assert (s1a.p_w, s1a.q_var) == (50000.0, 25000.0)
    assert s1a.phase_p_w[0][1] == 50000.0
    assert next(sw for sw in model.switches if sw.name == "sw3").open is True
    l_new = next(line for line in model.lines if line.name == "l_new")
    assert model.buses[l_new.from_bus].name == "1" and model.buses[l_new.to_bus].name == "n_new"
    assert l_new.length_m == 250.0 and model.buses[l_new.to_bus].nominal_v == 4160.0
    assert (len(model.lines), len(model.buses)) == (119, 131)

    assert summary.header.created == "2026-11-26T10:00:00Z"
    assert summary.by_class()["Terminal"] == {"added": 2, "removed": 0, "changed": 0}
    assert {(o.cim_class, o.name) for o in summary.added} == {
        ("TopologicalNode", "n_new"), ("ConnectivityNode", "n_new"), ("ACLineSegment", "l_new"),
        ("Terminal", "l_new_T1"), ("Terminal", "l_new_T2")}
    sw3 = next(o for o in summary.changed if o.mrid == SW3)
    assert [(c.prop, c.old, c.new) for c in sw3.changes] == [("Switch.open", "False", "true")]
    assert summary.removed == ()

    assert _snapshot(ieee123) == before  # the base graph is immutable: a new graph was built
    assert graph.objects[SW3].values["Switch.open"] == "true"
    assert ieee123.objects[SW3].values["Switch.open"] == "False"


@requires_reference_feeders()
@pytest.mark.parametrize(("name", "expected"), [
    ("ieee123_dangling.xml", ["Terminal d1ff0000-0000-4000-8000-000000000022 'l_new_T2'",
                              "Terminal.ConnectivityNode refers to d1ff0000-0000-4000-8000-0000000000ff",
                              "dangling reference"]),
    ("ieee123_stale.xml", [f"LoadBreakSwitch {SW3} 'sw3'",
                           "reverse value of Switch.open is 'true' but the base model has 'False'", "stale"]),
    ("ieee123_duplicate.xml", [f"ACLineSegment {L1} 'l_new'", "already has ACLineSegment 'l1'",
                               "duplicate mRID"]),
])
def test_bad_diff_is_refused_whole_naming_object_and_property(ieee123, name: str,  # type: ignore[no-untyped-def]
                                                             expected: list[str]) -> None:
    before = _snapshot(ieee123)
    with pytest.raises(CimDifferenceError) as info:
        apply_difference(ieee123, DIFF_DIR / name)
    text = str(info.value)
    for part in expected:
        assert part in text, text
    assert len(info.value.problems) == 1, text  # one cause, one problem (no follow-on noise)
    assert _snapshot(ieee123) == before


@requires_reference_feeders()
def test_result_that_is_no_valid_network_is_refused(ieee123) -> None:  # type: ignore[no-untyped-def]
    """Reverse-only: l1 loses its impedance. The statements match the base; build_network refuses the result."""
    imp = ieee123.objects[L1].ref("ACLineSegment.PerLengthImpedance")
    doc = difference_document(HEADER, [], [Fragment(L1, None, {}, {"ACLineSegment.PerLengthImpedance": (imp,)})])
    with pytest.raises(CimDifferenceError) as info:
        apply_difference(ieee123, parse_difference(doc, "no_impedance_diff"))
    assert isinstance(info.value, CimError)
    assert f"ACLineSegment {L1} 'l1': has no impedance" in str(info.value)
    assert "(not applied: with it" in str(info.value) and "is no valid network model): 1 CIM problem" in str(info.value)


@requires_reference_feeders()
def test_removing_an_object_still_referenced_is_dangling(ieee123) -> None:  # type: ignore[no-untyped-def]
    """s1a is measured (Analog objects refer to it): removing the load alone would leave those dangling."""
    obj = ieee123.objects[S1A]
    doc = difference_document(HEADER, [], [Fragment(S1A, "EnergyConsumer", dict(obj.values), dict(obj.refs))])
    with pytest.raises(CimDifferenceError) as info:
        apply_difference(ieee123, parse_difference(doc, "remove_s1a"))
    text = str(info.value)
    assert f"refers to {S1A}, which the difference removes (dangling reference)" in text
    assert "EnergyConsumerPhase 8EC7F315-6F8C-410C-9B51-2D6BAA33031B 's1a_A'" in text


def test_removal_with_its_terminal_applies(two_feeders) -> None:  # type: ignore[no-untyped-def]
    ld3, term = two_feeders.objects["LD3"], two_feeders.objects["T-LD3-1"]
    doc = difference_document(HEADER, [], [Fragment(o.mrid, o.cim_class, dict(o.values), dict(o.refs))
                                           for o in (ld3, term)])
    _graph, model, summary = apply_difference(two_feeders, parse_difference(doc, "remove_ld3"))
    assert [ld.name for ld in model.loads] == ["LD1", "LD2"]
    assert {(o.cim_class, o.name) for o in summary.removed} == {("EnergyConsumer", "LD3"), ("Terminal", "LD3_T1")}
    assert len(build_network(two_feeders).loads) == 3


def test_forward_value_without_reverse_is_a_conflict(two_feeders) -> None:  # type: ignore[no-untyped-def]
    doc = difference_document(HEADER, [Fragment("LD1", None, {"EnergyConsumer.p": "1.0"})], [])
    with pytest.raises(CimDifferenceError, match=r"EnergyConsumer LD1 'LD1': forward value of EnergyConsumer.p is "
                                                 r"'1.0' but the old value '200000.0' is not in the reverse"):
        apply_difference(two_feeders, parse_difference(doc, "conflict"))


def test_change_of_unknown_object_is_refused(two_feeders) -> None:  # type: ignore[no-untyped-def]
    doc = difference_document(HEADER, [Fragment("NOPE", None, {"EnergyConsumer.p": "1.0"})],
                              [Fragment("NOPE2", None, {"EnergyConsumer.p": "2.0"})])
    with pytest.raises(CimDifferenceError) as info:
        apply_difference(two_feeders, parse_difference(doc, "unknown"))
    text = str(info.value)
    assert "NOPE: forward differences change it but it is neither in the base model nor added" in text
    assert "NOPE2: reverse differences refer to it but it is not in the base model" in text


def test_rdf_id_style_base_and_hash_references(tmp_path: Path) -> None:
    """minimal.xml names objects rdf:ID="_LD1"; a difference saying rdf:about="#_LD1" means the same object."""
    text = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:cim="http://iec.ch/TC57/CIM100#"
 xmlns:dm="http://iec.ch/2002/schema/CIM_difference_model#">
<dm:DifferenceModel rdf:about="#_D1">
 <dm:forwardDifferences rdf:parseType="Statements">
  <rdf:Description rdf:about="#_LD1"><cim:EnergyConsumer.p>12000</cim:EnergyConsumer.p></rdf:Description>
 </dm:forwardDifferences>
 <dm:reverseDifferences rdf:parseType="Statements">
  <rdf:Description rdf:about="#_LD1"><cim:EnergyConsumer.p>1.0e4</cim:EnergyConsumer.p></rdf:Description>
 </dm:reverseDifferences>
</dm:DifferenceModel>
</rdf:RDF>"""
    path = tmp_path / "d.xml"
    path.write_text(text, encoding="utf-8")
    assert read_difference(path).header.mrid == "D1"
    _graph, model, _summary = apply_difference(read_rdf(CIM_DATA / "minimal.xml"), path)
    assert model.loads[0].p_w == 12000.0


@pytest.mark.parametrize(("text", "message"), [
    (b"<rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'/>", "holds 0 dm:DifferenceModel"),
    (b"<rdf:RDF", "not well-formed XML at line 1"),
])
def test_malformed_difference_is_refused(text: bytes, message: str) -> None:
    with pytest.raises(CimDifferenceError, match=message):
        parse_difference(text, "bad")


def test_missing_difference_file_is_refused(tmp_path: Path, two_feeders) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CimDifferenceError, match="cannot be read"):
        apply_difference(two_feeders, tmp_path / "absent.xml")


@requires_reference_feeders()
def test_merged_graph_written_and_read_back_is_the_same(ieee123, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    graph, model, _summary = apply_difference(ieee123, DIFF_DIR / "ieee123_change.xml")
    path = tmp_path / "merged.xml"
    path.write_bytes(graph_document(graph))
    again = read_rdf(path)
    assert _snapshot(again) == _snapshot(graph)
    assert build_network(again).counts() == model.counts()


@requires_reference_feeders()
def test_full_model_compared_to_the_base_is_the_same_difference(ieee123) -> None:  # type: ignore[no-untyped-def]
    """A full GIS export checked like an incremental one: compare, write, read back, apply -> the same model."""
    merged, _model, summary = apply_difference(ieee123, DIFF_DIR / "ieee123_change.xml")
    diff = compare_graphs(ieee123, merged, HEADER)
    doc = difference_document(diff.header, diff.forward, diff.reverse)
    again, _model2, summary2 = apply_difference(ieee123, parse_difference(doc, "compared"))
    assert _snapshot(again) == _snapshot(merged)
    assert summary2.by_class() == summary.by_class()
    assert {(o.mrid, o.changes) for o in summary2.changed} == {(o.mrid, o.changes) for o in summary.changed}
    assert compare_graphs(ieee123, ieee123, HEADER).forward == ()
