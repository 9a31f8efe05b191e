"""GIS model updates in a running ControlCenter (no adapters) over real gRPC on 127.0.0.1: CIM differences applied
live to IEEE 123 (new line and bus in the colouring, model version +1, persisted for a restart), refused whole when
stale, dangling or breaking a point binding, dry runs changing nothing, roles enforced; and the reconfiguration of the
embedded sample network exported as a CIM difference listing the DTs that changed feeder."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import IEEE123, requires_reference_feeders, sample_network_config, wait_for

from models.cim import read_rdf
from models.cim.difference import DifferenceHeader, Fragment, difference_document, parse_difference
from models.cim.rdf import CimGraph
from models.config import StationConfig, load_station_config
from models.points import DoubleState
from models.updates import Cause, UpdateBatch, new_update_rows
from scada.api.client import ClientError, ScadaClient
from scada.client_cli import main as cli_main
from scada.server import ControlCenter

DIFF_DIR = Path(__file__).resolve().parents[1] / "data" / "cim" / "diff"
ENGINEER, OPERATOR, VIEWER = "eng-token", "op-token", "viewer-token"
ON, OFF = float(DoubleState.ON), float(DoubleState.OFF)
HEADER = DifferenceHeader("d1ff0000-0000-4000-8000-0000000000cc", "2026-11-26T12:00:00Z", "test")


def _ieee123_station(tmp_path: Path, cim: Path = IEEE123) -> StationConfig:
    points = "".join(
        f'[[points]]\nname = "{sw}.pos"\nkind = "double"\nrtu = "R"\naddress = {i + 1}\ntype = "M_DP_TB_1"\n'
        f'element = "{sw}"\ncontrol = {{ type = "double", address = {101 + i} }}\n'
        for i, sw in enumerate(("sw1", "sw2", "sw3", "sw4", "sw5", "sw6")))
    points += '[[points]]\nname = "s49a.P"\nkind = "analog"\nrtu = "R"\naddress = 50\ntype = "M_ME_NC_1"\n' \
              'element = "s49a"\n'
    text = (f'[station]\nname = "ieee123"\n[server]\ndata_dir = "{(tmp_path / "data").as_posix()}"\n'
            f'[network]\ncim = "{cim.as_posix()}"\n'
            f'[[operators]]\nname = "eng"\nrole = "engineer"\ntoken = "{ENGINEER}"\n'
            f'[[operators]]\nname = "op"\nrole = "operator"\ntoken = "{OPERATOR}"\n'
            f'[[operators]]\nname = "view"\nrole = "viewer"\ntoken = "{VIEWER}"\n'
            '[[rtus]]\nname = "R"\ncommon_address = 1\naddresses = ["127.0.0.1:1"]\n' + points)
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return load_station_config(path)


def _feed(center: ControlCenter, *values: tuple[str, float]) -> None:
    rows = new_update_rows(len(values))
    for i, (name, value) in enumerate(values):
        rows[i] = (center.config.point(name).id, value, 0, time.time_ns() // 1_000_000, Cause.SPONTANEOUS)
    center.rtdb.ingest(UpdateBatch("test", rows, 0))
    assert center.rtdb.flush(5)


def _removal(graph: CimGraph, name: str, cim_class: str) -> bytes:
    """A difference removing an element with everything that refers to it (terminals, phases, measurements)."""
    gone = {next(o.mrid for o in graph.objects.values() if o.name == name and o.cim_class == cim_class)}
    grown = True
    while grown:
        refs = {o.mrid for o in graph.objects.values() if o.mrid not in gone
                and o.cim_class not in ("ConnectivityNode", "TopologicalNode")
                and any(t in gone for targets in o.refs.values() for t in targets)}
        grown = bool(refs)
        gone |= refs
    frags = [Fragment(m, graph.objects[m].cim_class, dict(graph.objects[m].values), dict(graph.objects[m].refs))
             for m in sorted(gone)]
    return difference_document(HEADER, [], frags)


def _rename(graph: CimGraph, name: str, new_name: str) -> bytes:
    mrid = next(o.mrid for o in graph.objects.values() if o.name == name and o.cim_class.endswith("Switch"))
    return difference_document(HEADER, [Fragment(mrid, None, {"IdentifiedObject.name": new_name})],
                               [Fragment(mrid, None, {"IdentifiedObject.name": name})])


@pytest.fixture
def ieee123(tmp_path: Path) -> Iterator[ControlCenter]:
    c = ControlCenter(_ieee123_station(tmp_path), grpc_address="127.0.0.1:0", start_adapters=False)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@requires_reference_feeders()
@pytest.mark.timeout(60)
def test_differences_apply_live_or_are_refused_whole(ieee123: ControlCenter, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    center = ieee123
    assert center.model is not None and center.topology is not None
    address = f"127.0.0.1:{center.grpc_port}"
    change = (DIFF_DIR / "ieee123_change.xml").read_bytes()
    base_graph = center.model.graph
    with ScadaClient(address, ENGINEER) as eng, ScadaClient(address, OPERATOR) as op, \
            ScadaClient(address, VIEWER) as viewer:
        eng.wait_ready(10)
        _feed(center, *((f"sw{i}.pos", ON) for i in range(1, 7)))
        info = viewer.model_info()
        assert (info.version, info.buses, info.lines, info.loads) == (1, 130, 118, 91)
        assert info.source == str(IEEE123) and info.persisted_file == ""

        for client in (viewer, op):  # a model change is engineering work
            with pytest.raises(ClientError) as denied:
                client.apply_difference(change)
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED and "engineer or admin" in \
                denied.value.message

        dry = eng.apply_difference(change, dry_run=True, source="ieee123_change.xml")
        assert not dry.applied and dry.model_version == 1
        assert {(o.cim_class, o.name) for o in dry.added} >= {("ACLineSegment", "l_new"), ("ConnectivityNode", "n_new")}
        assert viewer.model_info().version == 1 and len(viewer.colouring().buses) == 130

        for name, expected in (("ieee123_stale.xml", "reverse value of Switch.open is 'true' but the base model "
                                                     "has 'False'"),
                               ("ieee123_dangling.xml", "dangling reference")):
            with pytest.raises(ClientError) as refused:
                eng.apply_difference((DIFF_DIR / name).read_bytes(), source=name)
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT and expected in refused.value.message
            assert name in refused.value.message
        for doc, expected in ((_removal(base_graph, "s49a", "EnergyConsumer"),
                               "point 's49a.P' is bound to EnergyConsumer"),
                              (_rename(base_graph, "sw1", "sw1-renamed"), "renames it to 'sw1-renamed'")):
            assert parse_difference(doc).reverse  # a well-formed difference the CIM checks alone would accept
            with pytest.raises(ClientError) as bound:
                eng.apply_difference(doc, source="bound.xml")
            assert bound.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in bound.value.message and "cannot change without a restart" in bound.value.message
        assert viewer.model_info().version == 1 and center.model.graph is base_graph

        diff_file = tmp_path / "ieee123_change.xml"
        diff_file.write_bytes(change)
        assert cli_main(["--address", address, "--token", ENGINEER, "model-diff", str(diff_file), "--dry-run"]) == 0
        shown = capsys.readouterr().out
        assert "valid (dry run, not applied)" in shown and "added ACLineSegment l_new" in shown
        assert "changed EnergyConsumer s1a: EnergyConsumer.p 40000.0 -> 50000.0" in shown
        version_before = center.topology.version
        applied = eng.apply_difference(change, source="ieee123_change.xml")
        assert applied.applied and applied.model_version == 2
        assert applied.description.startswith("GIS work order 4711")
        s1a = next(o for o in applied.changed if o.name == "s1a")
        assert [(c.prop, c.old, c.new) for c in s1a.changes] == [("EnergyConsumer.p", "40000.0", "50000.0"),
                                                                 ("EnergyConsumer.q", "20000.0", "25000.0")]
        assert {c.cim_class: (c.added, c.removed, c.changed) for c in applied.by_class}["Terminal"] == (2, 0, 0)
        colouring = wait_for(lambda: (c := viewer.colouring()).version > version_before and len(c.buses) == 131
                             and c, 5, "the colouring of the new model")
        n_new = next(b for b in colouring.buses if b.name == "n_new")
        assert n_new.energized
        assert next(s for s in colouring.switches if s.name == "sw3").closed  # live telemetry wins over the model
        info = viewer.model_info()
        assert (info.version, info.buses, info.lines, info.updated_by) == (2, 131, 119, "eng")
        assert next(ld for ld in center.model.model.loads if ld.name == "s1a").p_w == 50000.0
        assert info.persisted_file == str(tmp_path / "data" / "network_current.xml")
        kept = read_rdf(info.persisted_file)
        assert any(o.name == "l_new" for o in kept.objects.values())
        audit = [e for e in eng.audit() if e.action == "model_difference"]
        assert [e.outcome for e in audit].count("refused") == 4 and audit[0].outcome in ("answered", "refused")
        assert any(e.outcome == "answered" and "model version 2" in e.field_detail for e in audit)

        with pytest.raises(ClientError) as again:  # the same difference is stale against its own result
            eng.apply_difference(change, source="ieee123_change.xml")
        assert again.value.code == grpc.StatusCode.INVALID_ARGUMENT and "l_new" in again.value.message

    assert cli_main(["--address", address, "--token", ENGINEER, "model-diff", str(diff_file), "--dry-run"]) == 2
    assert "invalid argument" in capsys.readouterr().err
    assert cli_main(["--address", address, "--token", VIEWER, "model-info"]) == 0
    assert "version 2, 131 buses" in capsys.readouterr().out


@requires_reference_feeders()
@pytest.mark.timeout(60)
def test_a_restart_keeps_the_applied_model_until_the_station_file_changes(tmp_path: Path) -> None:
    cim = tmp_path / "feeder.xml"
    cim.write_bytes(IEEE123.read_bytes())
    config = _ieee123_station(tmp_path, cim)
    with ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False) as center, \
            ScadaClient(f"127.0.0.1:{center.grpc_port}", ENGINEER) as eng:
        assert eng.apply_difference((DIFF_DIR / "ieee123_change.xml").read_bytes()).model_version == 2
    with ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False) as center, \
            ScadaClient(f"127.0.0.1:{center.grpc_port}", VIEWER) as viewer:
        info = viewer.model_info()
        assert (info.version, info.buses, info.name) == (2, 131, config.network.name if config.network else "")
        assert len(viewer.colouring().buses) == 131
    # a new full model from GIS in place of the station file wins over the older incremental update
    cim.write_bytes(IEEE123.read_bytes() + b"\n<!-- GIS full export -->\n")
    with ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False) as center, \
            ScadaClient(f"127.0.0.1:{center.grpc_port}", VIEWER) as viewer:
        info = viewer.model_info()
        assert (info.version, info.buses, info.persisted_file) == (1, 130, "")


@pytest.fixture
def sample(tmp_path: Path) -> Iterator[ControlCenter]:
    c = ControlCenter(sample_network_config(tmp_path), grpc_address="127.0.0.1:0", start_adapters=False)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(60)
def test_reconfiguration_export_lists_the_dts_that_changed_feeder(sample: ControlCenter, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{sample.grpc_port}"
    with ScadaClient(address, "viewer-demo-token") as viewer:
        viewer.wait_ready(10)
        nothing = viewer.export_reconfiguration()
        assert (list(nothing.switches), list(nothing.transformers)) == ([], [])
        # F2's tail (RMU06..08) goes over to F1: tie F1-RMU08-LBS2 closed, F2-RMU06-LBS1 opened
        _feed(sample, ("F1-RMU08-LBS2.Pos", ON), ("F2-RMU06-LBS1.Pos", OFF))
        fed = {"F1-RMU08-LBS2", "F2-RMU06-LBS1"}
        wait_for(lambda: all(s.source == "telemetry" and not s.state_uncertain
                             for s in viewer.colouring().switches if s.name in fed), 5, "the two positions")
        r = viewer.export_reconfiguration(reason="F2 cable fault")
        assert sorted((s.name, s.closed_before, s.closed_after) for s in r.switches) == [
            ("F1-RMU08-LBS2", False, True), ("F2-RMU06-LBS1", True, False)]
        moved = {(m.name, m.old_feeder, m.new_feeder) for m in r.transformers}
        assert moved == {(f"F2-RMU0{k}-DT", "F2", "F1") for k in (6, 7, 8)}
        assert all(m.customers > 0 and m.usage_points for m in r.transformers)
        assert "F2-RMU07-DT" in r.table and "reason: F2 cable fault" in r.description
        assert b"Switch.open" in r.document and b"Equipment.EquipmentContainer" in r.document
        diff = parse_difference(r.document)
        assert len(diff.forward) == len(diff.reverse) > len(r.transformers)
        assert r.uncertain_switches and not fed & set(r.uncertain_switches)  # the others: no telemetry yet

        permanent = viewer.export_reconfiguration(permanent=True)
        assert {(s.name, s.normal_open_after) for s in permanent.switches} == {("F1-RMU08-LBS2", False),
                                                                               ("F2-RMU06-LBS1", True)}
        assert b"Switch.normalOpen" in permanent.document

    out = tmp_path / "reconfiguration.xml"
    assert cli_main(["--address", address, "--token", "viewer-demo-token", "export-changes", "--since-normal",
                     "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "F2-RMU08-DT" in printed and "3 DT(s) changed feeder" in printed
    assert parse_difference(out.read_bytes()).forward
    assert cli_main(["--address", address, "--token", "viewer-demo-token", "export-changes"]) == 0
    streams = capsys.readouterr()
    assert parse_difference(streams.out.encode()).forward and "F2-RMU06-DT" in streams.err
