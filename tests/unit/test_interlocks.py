"""Topology interlocks (scada.interlocks) on a real RTDB, tag store and topology service: a hand-built two-source
network for parallels, markings and disconnectors, IEEE 123 for loops and faulted sections, and the command service
refusing with the interlock's reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import requires_reference_feeders, wait_for
from test_topology_service import ieee123_station, two_source_model

from models.commands import ControlAction
from models.config import OperatorConfig, Role, StationConfig, parse_station_config
from models.network import NetworkModel
from models.points import DoubleState, Quality
from models.updates import Cause, UpdateBatch, new_update_rows
from scada.audit import AuditLog
from scada.commands import CommandService, RefusalReason
from scada.errors import CommandRefused
from scada.interlocks import TopologyInterlocks
from scada.rtdb import Rtdb
from scada.tags import TagKind, TagStore
from scada.topology_service import TopologyService

OPERATOR = OperatorConfig("alice", Role.OPERATOR, "t")
ON, OFF = float(DoubleState.ON), float(DoubleState.OFF)


STATION = """
[station]
name = "two-source"
[[rtus]]
name = "R"
common_address = 1
addresses = ["127.0.0.1:1"]

[[points]]
name = "DS1.pos"
kind = "double"
rtu = "R"
address = 1
type = "M_DP_TB_1"
element = "DS1"
control = { type = "double", address = 101 }

[[points]]
name = "TIE.pos"
kind = "double"
rtu = "R"
address = 2
type = "M_DP_TB_1"
element = "TIE"
control = { type = "double", address = 102 }

[[points]]
name = "DS1.I"
kind = "analog"
rtu = "R"
address = 3
type = "M_ME_TF_1"
units = "A"
element = "DS1"
"""


@dataclass
class Rig:
    config: StationConfig
    rtdb: Rtdb
    tags: TagStore
    topology: TopologyService
    interlocks: TopologyInterlocks

    def feed(self, *values: tuple[str, float, int]) -> None:
        rows = new_update_rows(len(values))
        for i, (name, value, quality) in enumerate(values):
            rows[i] = (self.config.point(name).id, value, quality, time.time_ns() // 1_000_000, Cause.SPONTANEOUS)
        self.rtdb.ingest(UpdateBatch("test", rows, 0))
        assert self.rtdb.flush(5)
        last = self.rtdb.stats().last_seq
        wait_for(lambda: self.topology.applied_seq >= last or not self.rtdb.is_status[rows["point"][-1]], 5,
                 "topology")

    def manual(self, switch: str, closed: bool) -> None:
        self.topology.set_manual_switch_state(switch, closed, OPERATOR, "test")


def _rig(tmp_path: Path, config: StationConfig, model: NetworkModel, **kw: object) -> Iterator[Rig]:
    rtdb = Rtdb(config)
    tags = TagStore(tmp_path / "tags.sqlite")
    topology = TopologyService(rtdb, model)
    rig = Rig(config, rtdb, tags, topology, TopologyInterlocks(topology, rtdb, tags, **kw))  # type: ignore[arg-type]
    rtdb.start()
    topology.start()
    try:
        yield rig
    finally:
        topology.stop()
        rtdb.stop()
        tags.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from _rig(tmp_path, parse_station_config(STATION, "station.toml"), two_source_model())


@pytest.mark.timeout(60)
def test_closing_a_tie_between_two_sources_is_refused_unless_allowed(rig: Rig) -> None:
    why = rig.interlocks.check("TIE", close=True)
    assert why is not None and "would parallel source S1 with source S2" in why and "TIE" in why
    tie = rig.config.point("TIE.pos")
    assert rig.interlocks(tie, ControlAction.SELECT, ON) == why  # the command value reads as a close
    assert rig.interlocks(tie, ControlAction.SELECT, OFF) is None  # opening an open tie: nothing to check
    tag = rig.tags.place("TIE", TagKind.PARALLEL_ALLOWED, "bob", "planned transfer F2 -> F1, programme 7")
    assert rig.interlocks.check("TIE", close=True) is None
    rig.tags.remove(tag.id, "bob", "transfer done")
    assert rig.interlocks.check("TIE", close=True) is not None
    rig.manual("CB2", False)  # F2 dead: closing the tie back-feeds it from S1, no parallel
    assert rig.interlocks.check("TIE", close=True) is None


@pytest.mark.timeout(60)
def test_configured_parallel_switches_may_close(tmp_path: Path) -> None:
    for r in _rig(tmp_path, parse_station_config(STATION, "station.toml"), two_source_model(),
                  parallel_allowed=("TIE",)):
        assert r.interlocks.check("TIE", close=True) is None


@pytest.mark.timeout(60)
def test_closing_onto_a_faulted_or_earthed_section_is_refused(rig: Rig) -> None:
    rig.manual("CB2", False)  # b5..b6 dead
    faulted = rig.tags.place("l56", TagKind.FAULTED, "bob", "cable fault located by FPI")
    why = rig.interlocks.check("TIE", close=True)
    assert why is not None and "would energize line l56, marked faulted by bob" in why and f"tag {faulted.id}" in why
    assert "would energize line l56" in (rig.interlocks.check("CB2", close=True) or "")  # from the other side too
    rig.tags.remove(faulted.id, "bob", "repaired")
    earthed = rig.tags.place("b6", TagKind.CLEARANCE, "carol", "PTW 112: earthed at RMU")
    why = rig.interlocks.check("TIE", close=True)
    assert why is not None and "bus b6, marked earthed (clearance) by carol" in why
    rig.tags.remove(earthed.id, "carol", "PTW 112 cancelled")
    assert rig.interlocks.check("TIE", close=True) is None
    rig.tags.place("l12", TagKind.FAULTED, "bob", "already live: closing the tie does not energize it")
    assert rig.interlocks.check("TIE", close=True) is None


@pytest.mark.timeout(60)
def test_opening_a_disconnector_under_load_is_refused(rig: Rig) -> None:
    rig.feed(("DS1.pos", ON, 0))
    why = rig.interlocks.check("DS1", close=False)  # no valid current: topology says L1 would lose supply
    assert why is not None and "disconnector DS1 would break load current" in why and "L1" in why
    rig.feed(("DS1.I", 0.4, 0))
    assert rig.interlocks.check("DS1", close=False) is None  # measured unloaded
    rig.feed(("DS1.I", 37.5, 0))
    why = rig.interlocks.check("DS1", close=False)
    assert why is not None and "37.5 A measured by DS1.I" in why
    rig.feed(("DS1.I", 37.5, int(Quality.COMM_LOST)))  # measurement lost: back to the topology's view
    assert "de-energizes 1 load(s)" in (rig.interlocks.check("DS1", close=False) or "")
    rig.manual("RING", True)  # a ring around DS1: opening it breaks the loop current
    assert "would break a loop current" in (rig.interlocks.check("DS1", close=False) or "")
    rig.manual("RING", False)
    rig.manual("CB1", False)  # dead: it may be opened
    assert rig.interlocks.check("DS1", close=False) is None
    assert rig.interlocks.check("CB2", close=False) is None  # breakers open under load


@pytest.mark.timeout(60)
def test_command_service_refuses_with_the_interlock_reason(rig: Rig, tmp_path: Path) -> None:
    class NoField:
        def send_control(self, request: object) -> bool:
            return False

    audit = AuditLog(tmp_path / "audit.sqlite")
    try:
        commands = CommandService(rig.rtdb, NoField(), tags=rig.tags, audit=audit, interlocks=[rig.interlocks])
        with pytest.raises(CommandRefused) as info:
            commands.select(rig.config.point("TIE.pos").id, ON, OPERATOR)
        assert info.value.reason == RefusalReason.INTERLOCKED
        assert "point 'TIE.pos': closing switch TIE would parallel source S1 with source S2" in str(info.value)
        (entry,) = [e for e in audit.query(limit=5) if e.outcome.value == "refused"]
        assert entry.reason == "interlocked" and "parallel" in entry.field_detail
        with pytest.raises(CommandRefused) as info:  # an allowed operation passes the interlock: the link is down
            commands.select(rig.config.point("TIE.pos").id, OFF, OPERATOR)
        assert info.value.reason == RefusalReason.LINK_DOWN
    finally:
        audit.close()


@requires_reference_feeders()
@pytest.mark.timeout(60)
def test_ieee123_ties_close_loops_and_a_faulted_section_behind_sw1_blocks_reclosing(tmp_path: Path) -> None:
    config = ieee123_station()
    assert config.network is not None
    for r in _rig(tmp_path, config, config.network):
        assert r.interlocks.check("sw7", close=True) is None  # a loop on the one source, not a parallel
        assert r.interlocks.check("sw8", close=True) is None
        r.feed(("sw1.pos", OFF, 0))
        dead_bus = next(b for b in range(len(config.network.buses)) if not r.topology.snapshot().colouring.buses[
            "energized"][b])
        line = next(x for x in config.network.lines if dead_bus in (x.from_bus, x.to_bus))
        r.tags.place(line.name, TagKind.FAULTED, "bob", "earth fault")
        why = r.interlocks.check("sw1", close=True)
        assert why is not None and f"would energize line {line.name}, marked faulted" in why
        why = r.interlocks(config.point("sw1.pos"), ControlAction.EXECUTE, ON)
        assert why is not None and "closing switch sw1" in why


SAMPLE_STATION = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_network_station.toml"


@pytest.mark.skipif(not SAMPLE_STATION.is_file(), reason="the embedded sample network station is not present")
@pytest.mark.timeout(60)
def test_sample_network_ties_between_bus_sections_are_parallels(tmp_path: Path) -> None:
    """The embedded 33/11 kV sample: derived Pos points bind by mRID; the F3-F4 tie and the bus coupler would
    parallel SS-GRID1 and SS-GRID2, the F1-F2 tie closes a loop on one source."""
    from models.config import load_station_config

    config = load_station_config(SAMPLE_STATION)
    assert config.network is not None
    for r in _rig(tmp_path, config, config.network):
        assert r.topology.switch_of_point(config.point("F3-RMU08-LBS2.Pos").id) is not None
        for switch in ("F3-RMU08-LBS2", "SS-BC"):
            why = r.interlocks.check(switch, close=True)
            assert why is not None and "would parallel source SS-GRID1 with source SS-GRID2" in why
        assert r.interlocks.check("F1-RMU08-LBS2", close=True) is None
        trace = r.topology.trace("F4-RMU02-LOAD")
        assert trace.source is not None and trace.source.name == "SS-GRID2" and trace.feeder_name == "F4"
        assert trace.distribution_transformer is not None and trace.distribution_transformer.name == "F4-RMU02-DT"
        assert trace.customer_count == len(trace.customers) > 0
