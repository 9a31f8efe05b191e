"""The simulator's own ICCP configuration is the mirror of the station's ``[[iccp.remotes]]`` entry."""

from __future__ import annotations

import pytest

from iccp.sim.server import SimSettings, SimulatorError, breaker_device_name, sim_iccp_config, sim_point_defs
from iccp.sim.transmission import TransmissionSystem
from iccp.tase2.bilateral import AccessDenied, check_device, check_read, check_write
from models.iccp_config import ApTitle, IccpConfig, Operation, PeerIdentity, RemoteCentre
from models.points import PointKind
from models.protocols.iccp import FlagsLayout, PointType

DSO = PeerIdentity(ApTitle.parse("1.3.9999.10"), 10)
TSO = PeerIdentity(ApTitle.parse("1.3.9999.20"), 20)
TSO2 = PeerIdentity(ApTitle.parse("1.3.9999.30"), 30)


def _remote(name: str = "TSO-ICCP", identity: PeerIdentity = TSO) -> RemoteCentre:
    return RemoteCentre(name, ("127.0.0.1:10202", "127.0.0.1:10203"), identity, "DSO1", "BLT_1",
                        flags_layout=FlagsLayout.LSB_FIRST)


def test_the_simulator_is_the_remote_and_lets_in_only_the_station() -> None:
    system = TransmissionSystem(seed=1)
    cfg = sim_iccp_config(IccpConfig(DSO, None, (), (_remote(),)), system)
    assert cfg.identity == TSO and cfg.listen == "127.0.0.1:10202" and cfg.remotes == ()
    assert cfg.peer(DSO) is not None and cfg.peer(TSO) is None and cfg.peer(TSO2) is None
    table = cfg.peers[0]
    assert (table.table_id, table.domain, table.flags_layout) == ("BLT_1", "DSO1", FlagsLayout.LSB_FIRST)
    assert check_read(table, "FREQ_SYS").type is PointType.DATA_REAL_Q_TIMETAG
    assert check_read(table, "CB_T2_STATE").type is PointType.DATA_STATE_Q_TIMETAG
    assert len(table.points) == len(system.points)
    with pytest.raises(AccessDenied, match="read-only"):
        check_write(table, "TIE1_MW")
    device = check_device(table, "CB_T1", Operation.OPERATE)
    assert device.point == "CB_T1_STATE" and device.device.sbo
    assert check_device(table, "CB_T1_SBO", Operation.SELECT) is device
    assert sim_iccp_config(IccpConfig(DSO, None, (), (_remote(),)), system, listen="127.0.0.1:0").listen == \
        "127.0.0.1:0"


def test_points_take_the_type_the_station_imports_them_as() -> None:
    system = TransmissionSystem(seed=1)
    cfg = sim_iccp_config(IccpConfig(DSO, None, (), (_remote(),)), system, imported_types={
        "TIE1_MW": "Data_RealQTimeTagExtended", "CB_T1_STATE": "Data_RealQ"})
    table = cfg.peers[0]
    assert check_read(table, "TIE1_MW").type is PointType.DATA_REAL_Q_TIMETAG_EXT
    assert check_read(table, "CB_T1_STATE").type is PointType.DATA_STATE_Q_TIMETAG  # a state stays a state
    with pytest.raises(SimulatorError, match="unknown TASE.2 type 'Data_Bogus'"):
        sim_iccp_config(IccpConfig(DSO, None, (), (_remote(),)), system, imported_types={"TIE1_MW": "Data_Bogus"})


def test_several_remotes_need_a_choice() -> None:
    system = TransmissionSystem(seed=1)
    station = IccpConfig(DSO, None, (), (_remote(), _remote("TSO-B", TSO2)))
    with pytest.raises(SimulatorError, match="several ICCP remotes"):
        sim_iccp_config(station, system)
    assert sim_iccp_config(station, system, remote="TSO-B").identity == TSO2
    with pytest.raises(SimulatorError, match="no ICCP remote centre named 'X'"):
        sim_iccp_config(station, system, remote="X")
    with pytest.raises(SimulatorError, match="no \\[\\[iccp.remotes\\]\\]"):
        sim_iccp_config(IccpConfig(DSO, None, (), ()), system)


def test_point_definitions_and_settings() -> None:
    system = TransmissionSystem(seed=1)
    defs = {p.name: p for p in sim_point_defs(system)}
    assert defs["FREQ_SYS"].kind is PointKind.ANALOG and defs["CB_T1_STATE"].kind is PointKind.DOUBLE
    assert defs["MWH_RECV_T2"].kind is PointKind.COUNTER
    assert [p.id for p in defs.values()] == list(range(len(system.points)))
    assert breaker_device_name("CB_T12_STATE") == "CB_T12"
    with pytest.raises(SimulatorError, match="period_s"):
        SimSettings(period_s=0)
    with pytest.raises(SimulatorError, match="snapshot_interval_s"):
        SimSettings(snapshot_interval_s=0.5)
