"""The topology service over real gRPC on 127.0.0.1 through ControlCenter (no adapters): IEEE 123 from the station's
``[network] cim``, switch positions fed as RTDB batches, the colouring stream reacting, a close refused by the
faulted-section interlock with its reason, traces, markings, manual states and the CLI."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import IEEE123, requires_reference_feeders, sample_config_on_free_ports, wait_for

from models.config import StationConfig, load_station_config
from models.points import DoubleState
from models.updates import Cause, UpdateBatch, new_update_rows
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.client_cli import main as cli_main
from scada.server import ControlCenter

pytestmark = requires_reference_feeders()

OPERATOR, VIEWER = "op-token", "viewer-token"
ON, OFF = float(DoubleState.ON), float(DoubleState.OFF)


def _station(tmp_path: Path) -> StationConfig:
    points = "".join(
        f'[[points]]\nname = "{sw}.pos"\nkind = "double"\nrtu = "R"\naddress = {i + 1}\ntype = "M_DP_TB_1"\n'
        f'element = "{sw}"\ncontrol = {{ type = "double", address = {101 + i} }}\n'
        for i, sw in enumerate(("sw1", "sw2", "sw3", "sw4", "sw5", "sw6")))
    text = (f'[station]\nname = "ieee123"\n[server]\ndata_dir = "{(tmp_path / "data").as_posix()}"\n'
            f'[network]\ncim = "{IEEE123.as_posix()}"\n'
            f'[[operators]]\nname = "op"\nrole = "operator"\ntoken = "{OPERATOR}"\n'
            f'[[operators]]\nname = "view"\nrole = "viewer"\ntoken = "{VIEWER}"\n'
            '[[rtus]]\nname = "R"\ncommon_address = 1\naddresses = ["127.0.0.1:1"]\n' + points)
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    return load_station_config(path)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[ControlCenter]:
    c = ControlCenter(_station(tmp_path), grpc_address="127.0.0.1:0", start_adapters=False)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _feed(center: ControlCenter, *values: tuple[str, float]) -> None:
    rows = new_update_rows(len(values))
    for i, (name, value) in enumerate(values):
        rows[i] = (center.config.point(name).id, value, 0, time.time_ns() // 1_000_000, Cause.SPONTANEOUS)
    center.rtdb.ingest(UpdateBatch("test", rows, 0))
    assert center.rtdb.flush(5)


@pytest.mark.timeout(60)
def test_colouring_stream_reacts_to_a_switch_and_a_faulted_section_refuses_the_close(
        center: ControlCenter, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{center.grpc_port}"
    with ScadaClient(address, OPERATOR) as op, ScadaClient(address, VIEWER) as viewer:
        op.wait_ready(10)
        _feed(center, *((f"sw{i}.pos", ON) for i in range(1, 7)))
        wait_for(lambda: not any(s.state_uncertain for s in viewer.colouring().switches[:6]), 5, "good positions")
        messages: list[pb.TopologyUpdate] = []
        stream = viewer.watch_colouring()
        reader = threading.Thread(target=lambda: messages.extend(stream), daemon=True)
        reader.start()
        try:
            wait_for(lambda: messages, 5, "the first (full) message")
            first = messages[0]
            assert first.full and len(first.colouring.buses) == 130 and len(first.colouring.loads) == 91
            assert [x.energized for x in first.colouring.islands] == [True]
            assert first.colouring.islands[0].source_names == ["source"]

            _feed(center, ("sw1.pos", OFF))
            update = wait_for(lambda: next((m for m in messages[1:] if m.switches), None), 5, "the sw1 update")
            assert not update.full and update.cause == "telemetry" and update.version > first.version
            assert [(s.name, s.closed, s.source) for s in update.switches] == [("sw1", False, "telemetry")]
            assert update.islands_changed and sorted(x.energized for x in update.islands) == [False, True]
            assert len(update.deenergized_loads) == len(update.loads) > 50
            assert all(not x.energized and x.source == "" for x in update.loads)
            sw1_row = next(b for b in update.branches if b.name == "sw1")
            assert sw1_row.kind == "switch" and not sw1_row.closed

            colouring = viewer.colouring()
            assert colouring.deenergized_loads == len(update.deenergized_loads)
            islands = viewer.islands()
            assert islands.version >= update.version and len(islands.islands) == 2

            dead_line = next(b for b in colouring.branches if b.kind == "line" and not b.energized)
            with pytest.raises(ClientError) as denied:
                viewer.mark(dead_line.name, "faulted", "viewers may not mark")
            assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
            marking = op.mark(dead_line.name, "faulted", "cable fault, FPI chain")
            assert marking.kind == "faulted" and marking.element_mrid == dead_line.mrid
            redraw = wait_for(lambda: next((m for m in messages if m.cause == "marking"), None), 5, "marking update")
            assert redraw.full and [m.element_name for m in redraw.colouring.markings] == [dead_line.name]
            with pytest.raises(ClientError) as refused:
                op.select("sw1.pos", ON)
            assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION and refused.value.refusal == "interlocked"
            assert f"closing switch sw1 would energize line {dead_line.name}, marked faulted" in refused.value.message
            entry = next(e for e in op.audit(point="sw1.pos") if e.outcome == "refused")
            assert entry.reason == "interlocked" and "marked faulted" in entry.field_detail
            op.unmark(marking.tag_id, "repaired")
            earthed = op.place_tag(dead_line.name, "clearance", "PTW 7")  # the generic tag path marks too
            assert "would energize line" in (_refusal(op, "sw1.pos", ON) or "")
            op.remove_tag(earthed.id, "PTW 7 cancelled")
            with pytest.raises(ClientError) as link:
                op.select("sw1.pos", ON)  # the interlock passes now; no adapter behind this server
            assert link.value.refusal == "link_down"

            load = viewer.trace(colouring.loads[0].name)
            assert load.energized == colouring.loads[0].energized
            assert load.steps[0].name == colouring.loads[0].name

            with pytest.raises(ClientError) as telemetered:
                op.set_manual_switch_state("sw1", True)
            assert telemetered.value.code == grpc.StatusCode.FAILED_PRECONDITION
            state = op.set_manual_switch_state("sw7", True, "closed on site")
            assert state.closed and state.source == "manual"
            wait_for(lambda: any(m.cause == "manual" for m in messages), 5, "the manual update")
            with pytest.raises(ClientError) as unknown:
                viewer.trace("no-such-element")
            assert unknown.value.code == grpc.StatusCode.NOT_FOUND
        finally:
            stream.cancel()
            reader.join(5)
    assert cli_main(["--address", address, "--token", VIEWER, "colouring"]) == 0
    out = capsys.readouterr().out
    assert "2 island(s)" in out and "DE-ENERGIZED" in out and "de-energized load(s)" in out
    assert cli_main(["--address", address, "--token", VIEWER, "trace", "sw2"]) == 0
    assert "switch sw2" in capsys.readouterr().out
    assert cli_main(["--address", address, "--token", OPERATOR, "mark", "sw3", "--kind", "faulted",
                     "--reason", "r"]) == 0
    assert "marking" in capsys.readouterr().out


@pytest.mark.timeout(60)
def test_a_station_without_a_network_model_says_so(tmp_path: Path) -> None:
    config, _ = sample_config_on_free_ports(tmp_path)
    assert config.network is None
    with ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False) as center, \
            ScadaClient(f"127.0.0.1:{center.grpc_port}", "viewer-demo-token") as viewer:
        assert center.topology is None
        with pytest.raises(ClientError) as info:
            viewer.colouring()
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "no network model" in info.value.message


def _refusal(client: ScadaClient, point: str, value: float) -> str | None:
    try:
        client.select(point, value)
    except ClientError as exc:
        return exc.message if exc.refusal == "interlocked" else None
    return None
