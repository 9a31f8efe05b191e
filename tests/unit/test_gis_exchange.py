"""Reconfiguration export as a CIM difference (models.gis_exchange) and the GIS CLI (models.gis_cli): the feeder
moves traced on a hand-written two-feeder network, IEEE 123 and (once committed) the embedded sample network, and
every exported document re-imported into its base (export -> apply round trip)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from support import IEEE123, requires_reference_feeders

from models.cim import build_network, read_rdf
from models.cim.difference import DM_NS, MD_NS, CimDifferenceError, apply_difference, parse_difference
from models.gis_cli import main as gis_main
from models.gis_exchange import (
    GisExchangeError,
    analyse_reconfiguration,
    feeding_state,
    reconfiguration_difference,
)
from models.network import NetworkModel
from models.sample_network import SAMPLE_NETWORK_PATH
from models.topology import BranchKind, build_topology_graph

pytestmark = pytest.mark.timeout(60)
DIFF_DIR = Path(__file__).resolve().parents[1] / "data" / "cim" / "diff"
TWO_FEEDERS = DIFF_DIR / "two_feeders.xml"
SAMPLE_NETWORK = SAMPLE_NETWORK_PATH
WHEN = datetime(2026, 11, 26, 16, 5, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))  # IST
CIM = "{http://iec.ch/TC57/CIM100#}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


@pytest.fixture(scope="module")
def two_feeders():  # type: ignore[no-untyped-def]
    graph = read_rdf(TWO_FEEDERS)
    return graph, build_network(graph)


def _statements(doc: bytes, side: str) -> dict[tuple[str, str], str]:
    """{(mRID, property): value or referenced mRID} of one side of a difference document."""
    root = ET.fromstring(doc)
    out = {}
    for frag in root.iter(f"{{{DM_NS}}}{side}Differences"):
        for desc in frag:
            mrid = desc.get(f"{RDF}about").removeprefix("urn:uuid:")
            for prop in desc:
                value = prop.get(f"{RDF}resource")
                out[(mrid, prop.tag.removeprefix(CIM))] = value.removeprefix("urn:uuid:") if value else prop.text
    return out


def test_tie_closed_and_ring_opened_moves_dt2_to_f2(two_feeders) -> None:  # type: ignore[no-untyped-def]
    _graph, model = two_feeders
    reconf = analyse_reconfiguration(model, {}, {"TIE": True, "SA": False}, WHEN, operator="JE Patil",
                                     reason="cable fault on LA2")
    assert [(s.name, s.closed_before, s.closed_after) for s in reconf.switches] == [("SA", True, False),
                                                                                  ("TIE", False, True)]
    assert [(m.name, m.old_feeder, m.new_feeder, m.customers) for m in reconf.transformers] == [("DT2", "F1", "F2",
                                                                                                 150)]
    assert [(m.name, m.old_feeder, m.new_feeder, m.transformer_mrid) for m in reconf.loads] == [("LD2", "F1", "F2",
                                                                                                 "DT2")]
    table = reconf.table()
    assert "DT2  F1          F2          LD2" in table and "TIE: open -> closed" in table
    data = reconf.to_json()
    assert data["transformers"][0]["new_feeder"] == "F2" and data["when"] == "2026-11-26T16:05:30+05:30"
    json.dumps(data)  # plain JSON


def test_exported_difference_content_and_round_trip(two_feeders) -> None:  # type: ignore[no-untyped-def]
    graph, model = two_feeders
    doc = reconfiguration_difference(model, {"TIE": False, "SA": True}, {"TIE": True, "SA": False}, WHEN,
                                     operator="JE Patil", reason="cable fault on LA2")
    root = ET.fromstring(doc)
    header = root.find(f"{{{DM_NS}}}DifferenceModel")
    assert header is not None
    assert header.findtext(f"{{{MD_NS}}}Model.created") == "2026-11-26T16:05:30+05:30"
    description = header.findtext(f"{{{MD_NS}}}Model.description") or ""
    for part in ("SA opened", "TIE closed", "DT2 F1 -> F2", "operator JE Patil", "reason: cable fault on LA2"):
        assert part in description, description
    assert _statements(doc, "forward") == {("SA", "Switch.open"): "true", ("TIE", "Switch.open"): "false",
                                           ("DT2", "Equipment.EquipmentContainer"): "F2",
                                           ("LD2", "Equipment.EquipmentContainer"): "F2"}
    assert _statements(doc, "reverse") == {("SA", "Switch.open"): "false", ("TIE", "Switch.open"): "true",
                                           ("DT2", "Equipment.EquipmentContainer"): "F1",
                                           ("LD2", "Equipment.EquipmentContainer"): "F1"}

    merged, after, summary = apply_difference(graph, parse_difference(doc, "export"))
    assert {s.name: s.open for s in after.switches} == {"CB1": False, "CB2": False, "SA": True, "TIE": False}
    assert {s.name: s.normal_open for s in after.switches}["TIE"] is True  # temporary: normal state kept
    assert {t.name: t.feeder_mrid for t in after.transformers} == {"DT1": "F1", "DT2": "F2", "DT3": "F2"}
    assert summary.header.created == "2026-11-26T16:05:30+05:30"
    # The merged model traced again gives the same feeders as the analysis under the new switch states.
    assert feeding_state(after).feeder_of_bus == feeding_state(model, {"TIE": True, "SA": False}).feeder_of_bus
    # Applying the same difference again is refused: its reverse side no longer matches.
    with pytest.raises(CimDifferenceError, match="LoadBreakSwitch SA 'SA': reverse value of Switch.open is 'false'"):
        apply_difference(merged, parse_difference(doc, "export"))


def test_permanent_reconfiguration_moves_the_normally_open_point(two_feeders) -> None:  # type: ignore[no-untyped-def]
    graph, model = two_feeders
    doc = reconfiguration_difference(model, {}, {"TIE": True, "SA": False}, WHEN, permanent=True)
    forward = _statements(doc, "forward")
    assert forward[("SA", "Switch.normalOpen")] == "true" and forward[("TIE", "Switch.normalOpen")] == "false"
    _merged, after, _summary = apply_difference(graph, parse_difference(doc, "export"))
    assert {s.name: (s.normal_open, s.open) for s in after.switches if s.name in ("SA", "TIE")} == {
        "SA": (True, True), "TIE": (False, False)}


def test_de_energised_dt_is_reported_but_keeps_its_container(two_feeders) -> None:  # type: ignore[no-untyped-def]
    _graph, model = two_feeders
    reconf = analyse_reconfiguration(model, {}, {"SA": False}, WHEN)
    assert [(m.name, m.old_feeder, m.new_feeder) for m in reconf.transformers] == [("DT2", "F1", "")]
    doc = reconfiguration_difference(model, {}, {"SA": False}, WHEN)
    assert ("DT2", "Equipment.EquipmentContainer") not in _statements(doc, "forward")
    assert "DT2 F1 -> dead" in reconf.description()


def test_unknown_switch_and_naive_time_are_refused(two_feeders) -> None:  # type: ignore[no-untyped-def]
    _graph, model = two_feeders
    with pytest.raises(GisExchangeError, match="after names switch 'SW99', which is not in network"):
        reconfiguration_difference(model, {}, {"SW99": True}, WHEN)
    with pytest.raises(GisExchangeError, match="has no time zone"):
        reconfiguration_difference(model, {}, {"TIE": True}, datetime(2026, 11, 26, 12, 0))


@requires_reference_feeders()
def test_ieee123_close_sw7_sw8_open_sw3_round_trip() -> None:
    graph = read_rdf(IEEE123)
    model = build_network(graph)
    after_states = {"sw7": True, "sw8": True, "sw3": False}
    reconf = analyse_reconfiguration(model, {}, after_states, WHEN)
    assert reconf.transformers == () and reconf.loads == ()  # one feeder: sections move, the feeder does not
    assert len(feeding_state(model, after_states).energised) == len(model.buses)
    doc = reconfiguration_difference(model, {}, after_states, WHEN, graph=graph)
    _merged, after, summary = apply_difference(graph, parse_difference(doc, "export"))
    states = {s.name: s.open for s in after.switches}
    assert states == {"sw1": False, "sw2": False, "sw3": True, "sw4": False, "sw5": False, "sw6": False,
                      "sw7": False, "sw8": False}
    sw8 = next(s for s in after.switches if s.name == "sw8")  # the only switch with a SwitchPhase in the file
    assert [(p.open, p.normal_open) for p in sw8.phase_states] == [(False, True)]  # kept in step, still a NOP
    assert sorted((o.cim_class, o.name) for o in summary.changed) == [
        ("LoadBreakSwitch", "sw3"), ("LoadBreakSwitch", "sw7"), ("LoadBreakSwitch", "sw8"),
        ("SwitchPhase", graph.of("SwitchPhase")[0].name)]


def test_cli_export_then_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reconf.xml"
    code = gis_main(["export-changes", str(TWO_FEEDERS), "--close", "TIE", "--open", "SA", "--at",
                     "2026-11-26T10:35:30+00:00", "--operator", "op", "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "DT2  F1          F2" in printed and out.is_file()
    code = gis_main(["apply-diff", str(TWO_FEEDERS), str(out), "--json", "--output", str(tmp_path / "m.xml")])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["created"] == "2026-11-26T10:35:30+00:00"
    assert data["by_class"]["PowerTransformer"] == {"added": 0, "removed": 0, "changed": 1}
    dt2 = next(o for o in data["changed"] if o["name"] == "DT2")
    assert dt2["changes"] == [{"property": "Equipment.EquipmentContainer", "old": "F1", "new": "F2",
                               "old_name": "F1", "new_name": "F2"}]
    merged = build_network(read_rdf(tmp_path / "m.xml"))
    assert {s.name: s.open for s in merged.switches}["TIE"] is False
    # The merged file is the new base: the same export is now stale against it.
    assert gis_main(["apply-diff", str(tmp_path / "m.xml"), str(out)]) == 2
    assert "reverse value of Switch.open" in capsys.readouterr().err


def test_cli_make_diff_of_a_full_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A full model from the GIS (here: the base after a reconfiguration) checked and turned into a difference."""
    export = tmp_path / "reconf.xml"
    assert gis_main(["export-changes", str(TWO_FEEDERS), "--close", "TIE", "--open", "SA", "--output",
                     str(export)]) == 0
    full = tmp_path / "full.xml"
    assert gis_main(["apply-diff", str(TWO_FEEDERS), str(export), "--output", str(full)]) == 0
    capsys.readouterr()
    diff = tmp_path / "diff.xml"
    assert gis_main(["make-diff", str(TWO_FEEDERS), str(full), "--output", str(diff), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert sorted(o["name"] for o in data["changed"]) == ["DT2", "LD2", "SA", "TIE"]
    assert _statements(diff.read_bytes(), "forward") == _statements(export.read_bytes(), "forward")


def test_cli_refuses_unknown_switch_and_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gis_main(["export-changes", str(TWO_FEEDERS), "--close", "NOPE"]) == 2
    assert "names switch 'NOPE'" in capsys.readouterr().err
    assert gis_main(["apply-diff", str(TWO_FEEDERS), str(tmp_path / "absent.xml")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert gis_main(["export-changes", str(TWO_FEEDERS), "--close", "TIE", "--at", "yesterday"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_cli_export_to_stdout_is_the_document(capsys: pytest.CaptureFixture[str]) -> None:
    assert gis_main(["export-changes", str(TWO_FEEDERS), "--close", "TIE"]) == 0
    doc = capsys.readouterr().out.encode()
    created = datetime.fromisoformat(ET.fromstring(doc).findtext(f".//{{{MD_NS}}}Model.created") or "")
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60


# ---- ring feeders in the embedded sample network's conventions (ring_feeders.xml now, sample_network.xml once
# ---- committed: 6 feeders, normally-open ties) ----------------------------------------------------------------------
def _tie_and_ring_switch(model: NetworkModel) -> tuple[str, str, str, str]:
    """The F1-F2 normally-open tie, and a closed ring switch of F1 half-way between F1's breaker and the tie."""
    feeders = {f.name: f.mrid for f in model.feeders}
    normal = feeding_state(model, {s.mrid: not s.normal_open for s in model.switches})
    tie = next(s for s in model.switches if s.normal_open and {
        normal.feeder_of_bus.get(s.from_bus), normal.feeder_of_bus.get(s.to_bus)} == {feeders["F1"], feeders["F2"]})
    f1_end = tie.from_bus if normal.feeder_of_bus.get(tie.from_bus) == feeders["F1"] else tie.to_bus
    import networkx as nx

    graph = build_topology_graph(model, {s.mrid: not s.normal_open for s in model.switches})
    breaker = next(s for s in model.switches if s.name == "F1-CB")
    path = min((nx.shortest_path(graph, end, f1_end) for end in (breaker.from_bus, breaker.to_bus)), key=len)
    ring = [data["mrid"] for a, b in zip(path, path[1:], strict=False) for data in graph.get_edge_data(a, b).values()
            if data["kind"] is BranchKind.SWITCH and "-LBS" in data["name"] and data["mrid"] != tie.mrid]
    assert ring, f"no ring switch between F1-CB and {tie.name}"
    return tie.name, ring[len(ring) // 2], feeders["F1"], feeders["F2"]


@pytest.mark.parametrize("path", [
    DIFF_DIR / "ring_feeders.xml",
    pytest.param(SAMPLE_NETWORK, marks=pytest.mark.skipif(not SAMPLE_NETWORK.is_file(),
                                                          reason=f"{SAMPLE_NETWORK} not generated yet")),
], ids=["ring_feeders", "sample_network"])
def test_f1_f2_tie_closed_ring_opened_moves_dts_from_f1_to_f2(path: Path) -> None:
    graph = read_rdf(path)
    model = build_network(graph)
    tie, ring_mrid, f1, f2 = _tie_and_ring_switch(model)
    reconf = analyse_reconfiguration(model, {}, {tie: True, ring_mrid: False}, WHEN, reason="planned outage",
                                     graph=graph)
    assert reconf.transformers, "no DT moved"
    assert all(m.old_feeder == "F1" and m.new_feeder == "F2" for m in reconf.transformers)
    assert all(m.name.startswith("F1-RMU") and m.name.endswith("-DT") for m in reconf.transformers)
    if path.name == "ring_feeders.xml":  # opening F1-RMU02-LBS2 leaves RMU03 and RMU04 to the tie
        assert [m.name for m in reconf.transformers] == ["F1-RMU03-DT", "F1-RMU04-DT"]
        assert [m.customers for m in reconf.transformers] == [103, 104]
        assert [m.usage_points for m in reconf.transformers] == [("170010000301", "170010000302"),
                                                                 ("170010000401",)]
        assert reconf.to_json()["loads"][1]["usage_points"] == ["170010000401"]
    doc = reconfiguration_difference(model, {}, {tie: True, ring_mrid: False}, WHEN, reason="planned outage")
    forward, reverse = _statements(doc, "forward"), _statements(doc, "reverse")
    for m in reconf.transformers:
        assert forward[(m.mrid, "Equipment.EquipmentContainer")] == f2
        assert reverse[(m.mrid, "Equipment.EquipmentContainer")] == f1
    _merged, after, _summary = apply_difference(graph, parse_difference(doc, "export"))
    moved = {m.mrid for m in reconf.transformers}
    assert all(t.feeder_mrid == f2 for t in after.transformers if t.mrid in moved)
    assert {s.name: s.open for s in after.switches}[tie] is False
