"""Live topology service (scada.topology_service): a real RTDB fed with switch positions, IEEE 123 from the station's
``[network] cim``, hand-written points bound to its switches by name."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from support import IEEE123, requires_reference_feeders, wait_for

from models.cim import load_cim
from models.config import OperatorConfig, Role, StationConfig, parse_station_config
from models.network import (
    Bus,
    EnergySource,
    Feeder,
    LineSegment,
    Load,
    ModelDiagnostics,
    NetworkModel,
    Phase,
    ShuntConnection,
    Switch,
    SwitchKind,
)
from models.points import DoubleState, Quality
from models.topology import build_topology_graph
from models.updates import Cause, UpdateBatch, new_update_rows
from scada.audit import AuditLog
from scada.rtdb import Rtdb
from scada.topology_service import (
    ManualStateStore,
    SwitchStateSource,
    TopologyService,
    TopologyServiceError,
    UnknownElementError,
    UpdateCause,
    bind_switch_points,
)

pytestmark = requires_reference_feeders()

OPERATOR = OperatorConfig("alice", Role.OPERATOR, "t")
ON, OFF = float(DoubleState.ON), float(DoubleState.OFF)
ABC = Phase.A | Phase.B | Phase.C
_Z = np.zeros((3, 3))
_Z.flags.writeable = False


def two_source_model() -> NetworkModel:
    """S1 b0 -CB1- b1 -l12- b2 -DS1- b3 -l34- b4 (L1) -TIE(open)- b5 (L2) -l56- b6 -CB2- b7 S2, and RING (open)
    from b1 to b3 around DS1."""
    feeders = ("F1",) * 5 + ("F2",) * 3
    buses = tuple(Bus(i, f"b{i}", f"b{i}", (f"cn{i}",), ABC, 11e3, math.nan, math.nan, feeders[i]) for i in range(8))

    def line(name: str, a: int, b: int) -> LineSegment:
        return LineSegment(name, name, a, b, (Phase.A, Phase.B, Phase.C), 100.0, "z", "z", _Z, _Z, _Z, None,
                           feeders[a])

    def switch(name: str, kind: SwitchKind, a: int, b: int, *, open_: bool = False) -> Switch:
        return Switch(name, name, kind, a, b, ABC, open_, open_, 400.0, math.nan, (), feeders[a])

    def load(name: str, bus: int) -> Load:
        return Load(name, name, bus, ABC, ShuntConnection.Y, 1e5, 1e4, (), (), True, 25, None, feeders[bus])

    return NetworkModel(
        name="two-source", source="test", buses=buses, terminals=(),
        lines=(line("l12", 1, 2), line("l34", 3, 4), line("l56", 5, 6)), transformers=(), tap_changers=(),
        switches=(switch("CB1", SwitchKind.BREAKER, 0, 1), switch("DS1", SwitchKind.DISCONNECTOR, 2, 3),
                  switch("TIE", SwitchKind.LOAD_BREAK_SWITCH, 4, 5, open_=True),
                  switch("CB2", SwitchKind.BREAKER, 7, 6), switch("RING", SwitchKind.LOAD_BREAK_SWITCH, 1, 3,
                                                                  open_=True)),
        loads=(load("L1", 4), load("L2", 5)), capacitors=(), ders=(),
        sources=(EnergySource("S1", "S1", 0, 11e3, 11e3, 0.0, 0.1, 0.1, 0.1, 0.1),
                 EnergySource("S2", "S2", 7, 11e3, 11e3, 0.0, 0.1, 0.1, 0.1, 0.1)),
        feeders=(Feeder("F1", "F1"), Feeder("F2", "F2")), measurements=(), diagnostics=ModelDiagnostics({}, {}),
    )


def _point(name: str, kind: str, address: int, element: str, extra: str = "") -> str:
    type_id = "M_DP_TB_1" if kind == "double" else "M_SP_TB_1"
    return (f'[[points]]\nname = "{name}"\nkind = "{kind}"\nrtu = "R"\naddress = {address}\ntype = "{type_id}"\n'
            f'element = "{element}"\n{extra}\n')


def ieee123_station(extra_points: str = "", switches: tuple[str, ...] = ("sw1", "sw2", "sw3", "sw4", "sw5", "sw6")
                    ) -> StationConfig:
    points = "".join(_point(f"{sw}.pos", "double", i + 1, sw,
                            f'control = {{ type = "double", address = {101 + i} }}') for i, sw in enumerate(switches))
    text = (f'[station]\nname = "t"\n[network]\ncim = "{IEEE123.as_posix()}"\n'
            '[[rtus]]\nname = "R"\ncommon_address = 1\naddresses = ["127.0.0.1:1"]\n' + points + extra_points)
    return parse_station_config(text, "station.toml")


class Live:
    def __init__(self, config: StationConfig, audit: AuditLog | None = None) -> None:
        assert config.network is not None
        self.config = config
        self.rtdb = Rtdb(config)
        self.service = TopologyService(self.rtdb, config.network, audit=audit)

    def feed(self, *values: tuple[str, float, int]) -> None:
        """One RTDB batch of (point, value, quality); returns once the topology has processed it."""
        rows = new_update_rows(len(values))
        for i, (name, value, quality) in enumerate(values):
            rows[i] = (self.config.point(name).id, value, quality, time.time_ns() // 1_000_000, Cause.SPONTANEOUS)
        self.rtdb.ingest(UpdateBatch("test", rows, 0))
        assert self.rtdb.flush(5)
        last = self.rtdb.stats().last_seq  # the last row fed must be a bound switch point
        wait_for(lambda: self.service.applied_seq >= last, 5, "the topology service to process the batch")


@pytest.fixture
def live() -> Iterator[Live]:
    x = Live(ieee123_station())
    x.rtdb.start()
    x.service.start()
    try:
        yield x
    finally:
        x.service.stop()
        x.rtdb.stop()


def _sw1_dead_loads(model) -> set[int]:  # type: ignore[no-untyped-def]
    graph = build_topology_graph(model, {"sw1": False})
    live = nx.node_connected_component(graph, model.sources[0].bus)
    return {i for i, x in enumerate(model.loads) if x.bus not in live}


@pytest.mark.timeout(60)
def test_start_keeps_model_states_marked_uncertain_until_the_field_reports(live: Live) -> None:
    snap = live.service.snapshot()
    (island,) = snap.islands
    assert island.energized and island.buses == 130 and island.loads == 91 and island.uncertain
    states = {s.name: s for s in live.service.switch_states()}
    assert states["sw1"].closed and states["sw1"].uncertain and states["sw1"].source is SwitchStateSource.MODEL
    assert states["sw1"].points == ("sw1.pos",)
    assert not states["sw7"].closed and not states["sw7"].uncertain and states["sw7"].points == ()  # no point
    live.feed(*((f"sw{i}.pos", ON, 0) for i in range(1, 7)))
    snap = live.service.snapshot()
    assert not snap.switch_uncertain.any() and not snap.islands[0].uncertain
    assert all(s.source is SwitchStateSource.TELEMETRY for s in live.service.switch_states()[:6])


@pytest.mark.timeout(60)
def test_switch_change_streams_an_incremental_update(live: Live) -> None:
    model = live.service.model
    live.feed(*((f"sw{i}.pos", ON, 0) for i in range(1, 7)))
    snap0, sub = live.service.subscribe("t")
    try:
        live.feed(("sw1.pos", OFF, 0))
        update = sub.get(timeout_s=5)
        assert update is not None and not update.full and update.cause is UpdateCause.TELEMETRY
        assert update.version == snap0.version + 1
        assert [(s.name, s.closed, s.uncertain) for s in update.switches] == [("sw1", False, False)]
        expected = _sw1_dead_loads(model)
        assert set(update.deenergized_loads) == expected and len(expected) > 50
        assert update.energized_loads == () and update.islands_changed
        assert set(update.changed_loads.tolist()) == expected  # the changed rows are exactly the loads that died
        assert len(update.snapshot.islands) == 2
        assert set(update.snapshot.deenergized_loads().tolist()) == expected
        live.feed(("sw1.pos", ON, 0))
        back = sub.get(timeout_s=5)
        assert back is not None and set(back.energized_loads) == expected and len(back.snapshot.islands) == 1
        live.feed(("sw1.pos", ON, 0))  # no change in the RTDB: nothing published
        assert sub.get(timeout_s=0.2) is None
    finally:
        live.service.unsubscribe(sub)


@pytest.mark.timeout(60)
def test_invalid_lost_or_travelling_positions_keep_the_last_state_marked_uncertain(live: Live) -> None:
    live.feed(("sw1.pos", OFF, 0))
    lost = int(Quality.COMM_LOST)
    live.feed(("sw1.pos", OFF, lost))
    s = live.service.switch_state("sw1")
    assert not s.closed and s.uncertain and s.source is SwitchStateSource.TELEMETRY
    live.feed(("sw1.pos", ON, int(Quality.INVALID)))  # an invalid "closed" says nothing
    assert not live.service.switch_state("sw1").closed
    live.feed(("sw1.pos", float(DoubleState.INTERMEDIATE), 0))
    s = live.service.switch_state("sw1")
    assert not s.closed and s.uncertain
    snap = live.service.snapshot()
    branch = snap.model.switches.index(next(x for x in snap.model.switches if x.name == "sw1"))
    assert snap.switch_uncertain[branch]
    assert any(x.uncertain for x in snap.islands)
    live.feed(("sw1.pos", ON, 0))
    s = live.service.switch_state("sw1")
    assert s.closed and not s.uncertain


@pytest.mark.timeout(60)
def test_binding_rules_per_phase_points_and_protection_flags() -> None:
    extra = (_point("sw2.pos.ph_B", "double", 50, "sw2")  # a second phase of sw2
             + _point("sw1.prot_trip", "single", 51, "sw1")  # names the switch but is no position
             + _point("sw8.closed", "single", 52, "sw8"))  # the only status of sw8: its position
    config = ieee123_station(extra)
    assert config.network is not None
    bound = bind_switch_points(config, config.network)
    names = {config.network.switches[sw].name: [config.points[p].name for p in ids] for sw, ids in bound.items()}
    assert names["sw1"] == ["sw1.pos"] and names["sw2"] == ["sw2.pos", "sw2.pos.ph_B"]
    assert names["sw8"] == ["sw8.closed"] and "sw7" not in names
    x = Live(config)
    x.rtdb.start()
    x.service.start()
    try:
        x.feed(("sw1.prot_trip", 1.0, 0), ("sw2.pos", ON, 0), ("sw2.pos.ph_B", OFF, 0), ("sw8.closed", 1.0, 0))
        s2 = x.service.switch_state("sw2")
        assert s2.closed and s2.uncertain  # phases disagree: closed (it conducts) but uncertain
        assert x.service.switch_state("sw8").closed and x.service.switch_state("sw1").uncertain  # sw1.pos unknown
    finally:
        x.service.stop()
        x.rtdb.stop()


@pytest.mark.timeout(60)
def test_manual_switch_state_is_audited_and_yields_to_valid_telemetry(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.sqlite")
    x = Live(ieee123_station(), audit)
    x.rtdb.start()
    x.service.start()
    try:
        state = x.service.set_manual_switch_state("sw7", True, OPERATOR, "closed on site by crew 4")
        assert state.closed and state.source is SwitchStateSource.MANUAL
        assert len(x.service.snapshot().islands) == 1  # a loop, same source
        x.feed(("sw1.pos", ON, 0))
        with pytest.raises(TopologyServiceError, match="telemetered by sw1.pos"):
            x.service.set_manual_switch_state("sw1", False, OPERATOR)
        with pytest.raises(UnknownElementError, match="no switch 'nope'"):
            x.service.set_manual_switch_state("nope", False, OPERATOR)
        x.feed(("sw1.pos", ON, int(Quality.COMM_LOST)))  # RTU lost: the operator may dress it
        s = x.service.set_manual_switch_state("sw1", False, OPERATOR, "seen open by patrol")
        assert not s.closed and s.source is SwitchStateSource.MANUAL and not s.uncertain
        assert len(x.service.snapshot().islands) == 2
        x.feed(("sw1.pos", ON, 0))  # the field is back: it wins
        s = x.service.switch_state("sw1")
        assert s.closed and s.source is SwitchStateSource.TELEMETRY
        entries = audit.query(limit=10)
        actions = [(e.point_name, e.outcome.value, e.value) for e in entries if e.action == "manual_switch_state"]
        assert ("sw7", "answered", 1.0) in actions and ("sw1", "refused", 0.0) in actions
        assert ("sw1", "answered", 0.0) in actions and ("nope", "refused", 0.0) in actions
    finally:
        x.service.stop()
        x.rtdb.stop()
        audit.close()


@pytest.mark.timeout(60)
def test_trace_gives_source_feeder_and_supplied_customers(live: Live) -> None:
    model = live.service.model
    load = model.loads[-1]
    t = live.service.trace(load.name)
    assert t.energized and t.source is not None and t.source.mrid == model.sources[0].mrid
    assert t.feeder_mrid == model.feeders[0].mrid and t.feeder_name == model.feeders[0].name
    assert t.steps[0].name == load.name and t.steps[-1].mrid == model.sources[0].mrid
    assert [x.name for x in t.downstream_loads] == [load.name] and t.customer_count == load.customer_count
    sw1 = live.service.trace("sw1")
    assert {model.loads.index(next(x for x in model.loads if x.mrid == s.mrid)) for s in sw1.downstream_loads} \
        == _sw1_dead_loads(model)
    with pytest.raises(UnknownElementError):
        live.service.trace("no-such-element")
    live.feed(("sw1.pos", OFF, 0))
    dead = live.service.trace(load.name)
    assert not dead.energized and dead.source is None


@pytest.mark.timeout(60)
def test_replace_model_reapplies_live_states_and_publishes_a_full_colouring(live: Live) -> None:
    live.feed(("sw1.pos", OFF, 0))
    live.service.set_manual_switch_state("sw7", True, OPERATOR)
    _snap, sub = live.service.subscribe("t")
    try:
        fresh = load_cim(IEEE123)  # the GIS re-export: a new model object
        update = live.service.replace_model(fresh)
        assert update.full and update.cause is UpdateCause.MODEL and live.service.model is fresh
        got = sub.get(timeout_s=5)
        assert got is not None and got.full and got.snapshot.model is fresh
        assert not live.service.switch_state("sw1").closed  # from the RTDB
        assert live.service.switch_state("sw7").source is SwitchStateSource.MANUAL  # carried over by mRID
        assert len(got.snapshot.islands) == 2
        live.feed(("sw1.pos", ON, 0))  # the new subscription keeps working
        assert live.service.switch_state("sw1").closed
    finally:
        live.service.unsubscribe(sub)


@pytest.mark.timeout(60)
def test_a_slow_subscriber_gets_one_full_update_instead_of_its_backlog(live: Live) -> None:
    _snap, sub = live.service.subscribe("slow", max_pending=2)
    try:
        for k in range(5):
            live.feed(("sw1.pos", OFF if k % 2 == 0 else ON, 0))
        first = sub.get(timeout_s=1)
        assert first is not None and first.full and sub.resyncs >= 1
        assert first.version == live.service.version or sub.pending > 0
    finally:
        live.service.unsubscribe(sub)


@pytest.mark.timeout(60)
def test_switch_change_is_reprocessed_well_within_budget(live: Live) -> None:
    """Change set in -> processor + colouring + islands + diff + publish, measured on the service (budget 10 ms)."""
    from scada.changes import ChangeSet

    pid = live.config.point("sw3.pos").id
    took = []
    for k in range(40):
        rows = live.rtdb.snapshot([pid])
        rows["value"] = OFF if k % 2 == 0 else ON
        rows["quality"] = 0
        rows["seq"] = 10**15 + k  # newer than anything the RTDB has sent
        t0 = time.perf_counter()
        update = live.service.process(ChangeSet(rows, True, time.monotonic()))
        took.append(time.perf_counter() - t0)
        assert update is not None
    median_ms = float(np.median(took)) * 1e3
    assert median_ms < 10.0, f"median {median_ms:.2f} ms"


def test_a_back_fed_section_shows_the_feeder_feeding_it_now() -> None:
    """Feeding feeder in the colouring, islands and traces: F2's section back-fed from F1 over the tie shows F1."""
    config = parse_station_config('[station]\nname = "t"\n', "station.toml")
    model = two_source_model()
    service = TopologyService(Rtdb(config), model)
    feeders = [f.mrid for f in model.feeders]
    snap = service.snapshot()
    assert [feeders[f] if f >= 0 else None for f in snap.colouring.buses["feeder"]] == \
        ["F1"] * 5 + ["F2"] * 3
    assert sorted(x.feeder_mrid for x in snap.islands) == ["F1", "F2"]
    service.set_manual_switch_state("CB2", False, OPERATOR)
    service.set_manual_switch_state("TIE", True, OPERATOR)
    snap = service.snapshot()
    # b7 stays on S2 behind the open CB2
    assert [feeders[f] if f >= 0 else None for f in snap.colouring.buses["feeder"]] == ["F1"] * 7 + ["F2"]
    (fed,) = [x for x in snap.islands if x.loads]
    assert fed.source_mrids == ("S1",) and fed.feeder_mrid == "F1" and fed.loads == 2 and fed.customers == 50
    trace = service.trace("L2")
    assert trace.feeder_mrid == "F1" and [s.name for s in trace.steps][:3] == ["L2", "TIE", "l34"]
    service.set_manual_switch_state("TIE", False, OPERATOR)
    assert service.snapshot().colouring.buses["feeder"].tolist()[5:] == [-1, -1, 1]


def test_manual_states_survive_a_restart_until_the_field_reports(tmp_path: Path) -> None:
    config = ieee123_station()
    assert config.network is not None
    store = ManualStateStore(tmp_path / "topology.sqlite")
    try:
        first = TopologyService(Rtdb(config), config.network, manual_store=store)
        first.set_manual_switch_state("sw7", True, OPERATOR, "closed by crew")
        first.set_manual_switch_state("sw1", False, OPERATOR, "RTU down, seen open")
        assert store.load() == {first.switch_state("sw7").mrid: True, first.switch_state("sw1").mrid: False}
        x = Live(config)  # a restarted server: new RTDB, new service, same store
        x.service = TopologyService(x.rtdb, config.network, manual_store=store)
        x.rtdb.start()
        x.service.start()
        try:
            assert x.service.switch_state("sw7").source is SwitchStateSource.MANUAL
            s1 = x.service.switch_state("sw1")
            assert not s1.closed and s1.source is SwitchStateSource.MANUAL
            assert len(x.service.snapshot().islands) == 2
            x.feed(("sw1.pos", ON, 0))  # the field reports: the manual state is gone, here and in the store
            assert x.service.switch_state("sw1").source is SwitchStateSource.TELEMETRY
            assert list(store.load().values()) == [True]
        finally:
            x.service.stop()
            x.rtdb.stop()
    finally:
        store.close()


@pytest.mark.timeout(60)
def test_queries_from_other_threads_while_switches_move(live: Live) -> None:
    """Traces, look-aheads and snapshots from reader threads while telemetry moves switches: no error, and every
    snapshot a reader sees is self-consistent (its island summary matches its colouring)."""
    import threading

    errors: list[BaseException] = []
    stop = threading.Event()
    model = live.service.model

    def reader() -> None:
        try:
            while not stop.is_set():
                live.service.trace(model.loads[-1].name)
                live.service.opening_effect("sw3")
                live.service.closing_effect("sw7")
                snap = live.service.snapshot()
                dead = int((~snap.colouring.loads["energized"]).sum())
                assert dead == sum(x.loads for x in snap.islands if not x.energized)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for k in range(36):
            live.feed((f"sw{1 + k % 6}.pos", OFF if (k // 6) % 2 == 0 else ON, 0))
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert not errors, errors[0]
    assert all(s.closed for s in live.service.switch_states()[:6])  # 6 rounds of 6: the last round closed them
