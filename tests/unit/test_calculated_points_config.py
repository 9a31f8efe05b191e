"""Calculated points in the station configuration: ``[calculated] state_estimate = true`` derives the DMS-SE source
and its points (names, count, units, elements, validation), and neither the front-end supervisor nor the simulator
treats DMS-SE as a field device; a failed estimate marks every calculated point INVALID."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dms.se.realtime import RealtimeEstimator
from frontend_protocols.supervisor import adapter_specs
from models.calculated_points import SE_SOURCE, CalculatedQuantity
from models.config import Protocol, StationConfig, load_station_config
from models.errors import ConfigError
from models.points import PointKind, Quality
from models.protocols import describe_address
from models.samples import relocate_station_text, sample_network_station_path
from models.timebase import now_ms
from models.updates import Cause, UpdateBatch, new_update_rows
from rtu_sim.errors import SimulatorError
from rtu_sim.simulator import RtuSimulator
from scada.alarms import AlarmManager
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService

FIELD_POINTS = 337 + 13  # the sample station's CIM-derived field points and the 13 it imports over ICCP
BUSES_MV, MEASURED_ELEMENTS = 212, 44  # 11 and 33 kV buses (all three-phase); feeder breakers, ring switches, TRs


def _station(tmp_path: Path, *, edit: tuple[str, str] | None = None, extra: str = "") -> StationConfig:
    source = sample_network_station_path()
    text = relocate_station_text(source.read_text(encoding="utf-8"), tmp_path / "data", source.parent)
    if edit is not None:
        assert edit[0] in text, edit[0]
        text = text.replace(*edit)
    path = tmp_path / "station.toml"
    path.write_text(text + extra, encoding="utf-8")
    return load_station_config(path)


@pytest.fixture(scope="module")
def sample() -> StationConfig:
    return load_station_config(sample_network_station_path())


def test_the_sample_station_derives_the_state_estimation_points(sample: StationConfig) -> None:
    model = sample.network
    assert model is not None
    rtu = sample.rtu(SE_SOURCE)
    assert rtu.protocol is Protocol.CALCULATED and rtu.addresses == () and sample.rtus[-1] is rtu
    points = sample.points_of_rtu(SE_SOURCE)
    counts = Counter(c.quantity for c in sample.calculated)
    assert counts == {CalculatedQuantity.V_KV: 3 * BUSES_MV, CalculatedQuantity.V_SD_KV: 3 * BUSES_MV,
                      CalculatedQuantity.P_KW: 3 * MEASURED_ELEMENTS, CalculatedQuantity.Q_KVAR: 3 * MEASURED_ELEMENTS,
                      CalculatedQuantity.I_A: 3 * MEASURED_ELEMENTS, CalculatedQuantity.LOSSES_KW: 1}
    assert len(points) == len(sample.calculated) == 1669 and len(sample.points) == FIELD_POINTS + 1669
    # after every field point, ids contiguous, parallel to config.calculated
    assert [p.id for p in points] == list(range(FIELD_POINTS, len(sample.points)))
    assert [c.point for c in sample.calculated] == [p.id for p in points]
    assert all(p.source.rtu != SE_SOURCE for p in sample.points[:FIELD_POINTS])
    assert all(sample.binding(p) is None for p in points)
    assert len({p.name for p in sample.points}) == len(sample.points)
    by_name = {p.name: p for p in points}
    bus = next(b for b in model.buses if b.name == "SS-BUS1")
    v = by_name["SS-BUS1.SE.V.ph_A"]
    assert (v.kind, v.units, v.element, v.stale_after_s) == (PointKind.ANALOG, "kV", bus.mrid, 30.0)
    assert by_name["SS-BUS1.SE.V_sd.ph_C"].units == "kV"
    cb = next(s for s in model.switches if s.name == "F1-CB")
    assert by_name["F1-CB.SE.P.ph_A"].element == cb.mrid and by_name["F1-CB.SE.P.ph_A"].units == "kW"
    assert by_name["F1-CB.SE.Q.ph_B"].units == "kvar" and by_name["F1-CB.SE.A.ph_C"].units == "A"
    assert {"SS-TR1.SE.P.ph_A", "F3-RMU06-LBS2.SE.A.ph_B", "F6-RMU08-LBS2.SE.Q.ph_C"} <= set(by_name)
    assert by_name[f"{model.name}.SE.Losses"].units == "kW"
    # the LV (433 V) buses get none
    lv = [b.name for b in model.buses if b.nominal_v < 1000]
    assert lv and not any(f"{b}.SE.V.ph_A" in by_name for b in lv)
    assert describe_address(v) == f"calculated state_estimate #{v.source.address}"


def test_min_bus_kv_and_opting_out(tmp_path: Path) -> None:
    hv = _station(tmp_path, edit=("state_estimate = true", "state_estimate = true\nmin_bus_kv = 20\n"
                                                           "stale_after_s = 90"))
    volts = [c for c in hv.calculated if c.quantity is CalculatedQuantity.V_KV]
    assert len(volts) == 4 * 3  # the four 33 kV buses
    assert all(hv.points[c.point].stale_after_s == 90.0 for c in hv.calculated)
    off = _station(tmp_path, edit=("state_estimate = true", "state_estimate = false"))
    assert not off.calculated and all(r.name != SE_SOURCE for r in off.rtus) and len(off.points) == FIELD_POINTS


def test_a_calculated_name_clashing_with_a_field_point_is_refused(tmp_path: Path) -> None:
    extra = """
[[points]]
name = "SS-BUS1.SE.V.ph_A"
kind = "analog"
rtu = "RTU-SS"
address = 5
type = "M_ME_NC_1"
"""
    with pytest.raises(ConfigError, match=r"calculated\.state_estimate: calculated point 'SS-BUS1\.SE\.V\.ph_A' "
                                          r"clashes with the field point"):
        _station(tmp_path, extra=extra)


@pytest.mark.parametrize(("edit", "message"), [
    (('protocol = "iec104"', 'protocol = "calculated"'), r"rtus\[0\]\.protocol: calculated sources are made by the "
                                                          r"control centre: use the \[calculated\] table"),
    (('name = "RTU-SS"', 'name = "DMS-SE"'), r"calculated\.state_estimate: the RTU name 'DMS-SE' is reserved"),
    (('state_estimate = true', 'state_estimate = true\nperiod = 3'), r"calculated: unknown field\(s\): period"),
    (('state_estimate = true', 'state_estimate = "yes"'), r"calculated\.state_estimate: expected bool"),
    (('state_estimate = true', 'state_estimate = true\nstale_after_s = 0'), r"calculated\.stale_after_s: must be > 0"),
])
def test_invalid_calculated_configuration_is_refused(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _station(tmp_path, edit=edit)


def test_state_estimation_points_need_a_network_model(tmp_path: Path) -> None:
    text = """
[station]
name = "no network"

[calculated]
state_estimate = true

[[rtus]]
name = "RTU1"
common_address = 1
addresses = ["127.0.0.1:20001"]

[[points]]
name = "V1"
kind = "analog"
rtu = "RTU1"
address = 1
type = "M_ME_NC_1"
"""
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"station\.toml:\d+: calculated\.state_estimate: needs a network model"):
        load_station_config(path)


def test_the_supervisor_and_the_simulator_skip_the_calculated_source(sample: StationConfig) -> None:
    specs = adapter_specs(sample)
    assert {s.name for s in specs} == {"iec104", "modbus", "iec61850", "dnp3", "iccp"}
    served = [rtu for s in specs for rtu in s.rtus]
    assert SE_SOURCE not in served and len(served) == len(sample.rtus) - 1
    with pytest.raises(SimulatorError, match=r"'DMS-SE' is calculated in the control centre"):
        RtuSimulator(sample, [SE_SOURCE])


def test_a_failed_estimate_marks_every_point_invalid_and_keeps_the_last_value(sample: StationConfig,
                                                                             tmp_path: Path) -> None:
    assert sample.network is not None
    rtdb = Rtdb(sample)
    rtdb.start()
    topology = TopologyService(rtdb, sample.network)
    topology.start()
    alarms = AlarmManager(sample, tmp_path / "alarms.sqlite")
    try:
        point = rtdb.point_id("SS-BUS1.SE.V.ph_A")
        rows = new_update_rows(1)
        rows[0] = (point, 6.3, Quality.GOOD, now_ms(), Cause.PERIODIC)
        rtdb.ingest(UpdateBatch("dms:se", rows, now_ms()))
        result = RealtimeEstimator(sample, rtdb, topology, alarms).run_now()  # no telemetry at all: nothing to see
        assert not result.converged and "no observable node" in result.error
        assert rtdb.flush(5)
        snap = rtdb.snapshot([c.point for c in sample.calculated])
        assert (snap["quality"] & Quality.INVALID).all() and (snap["source_time_ms"] == result.time_ms).all()
        assert snap["value"][[c.point for c in sample.calculated].index(point)] == 6.3
    finally:
        topology.stop()
        rtdb.stop()
        alarms.store.close()
