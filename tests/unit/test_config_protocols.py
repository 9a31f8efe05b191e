"""Station configuration for DNP3, Modbus TCP and IEC 61850 RTUs: protocol tables, addresses and their clashes,
and the addresses the CIM-derived points get on each protocol."""

from __future__ import annotations

import pytest

from models.config import Protocol, load_station_config, parse_station_config
from models.errors import ConfigError
from models.points import ControlMode, ControlType, PointKind, TimeSource
from models.protocols import describe_address, time_source
from models.protocols.modbus import WordOrder
from models.samples import sample_network_station_path

BASE = """
[station]
name = "protocols"

[[rtus]]
name = "FRTU1"
protocol = "dnp3"
common_address = 10
addresses = ["127.0.0.1:20001"]
frtu = true
dnp3 = { master_address = 2, event_poll_period_s = 3 }

[[rtus]]
name = "MFM1"
protocol = "modbus"
common_address = 5
addresses = ["127.0.0.1:20002"]
modbus = { word_order = "little", connections = 2 }

[[rtus]]
name = "IED-1"
protocol = "iec61850"
addresses = ["127.0.0.1:20003"]

[[points]]
name = "LBS1"
kind = "double"
rtu = "FRTU1"
address = 0
type = "double_bit_binary_input"
control = { type = "double", address = 0 }

[[points]]
name = "P"
kind = "analog"
rtu = "MFM1"
address = 100
type = "input_float32"
units = "kW"

[[points]]
name = "CB"
kind = "double"
rtu = "IED-1"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = { type = "double", reference = "LD0/XCBR1.Pos", mode = "sbo_enhanced" }
"""


def test_protocol_tables_and_addresses_load() -> None:
    cfg = parse_station_config(BASE, "station.toml")
    frtu, mfm, ied = cfg.rtus
    assert frtu.protocol is Protocol.DNP3 and frtu.dnp3.master_address == 2 and frtu.dnp3.event_poll_period_s == 3
    assert mfm.modbus.word_order is WordOrder.LITTLE and mfm.modbus.connections == 2
    assert ied.common_address == 0 and ied.ied_name == "IED1"
    cb = cfg.point("CB")
    assert cb.source.reference == "LD0/XCBR1.Pos" and cb.control is not None
    assert cb.control.mode is ControlMode.SBO_ENHANCED and cb.control.reference == "LD0/XCBR1.Pos"
    assert time_source(cfg.point("P")) is TimeSource.POLL and time_source(cb) is TimeSource.FIELD
    assert describe_address(cfg.point("P")) == "unit 5 input_float32 @100"
    assert describe_address(cfg.point("LBS1")) == "outstation 10 double_bit_binary_input #0; control 0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # a float32 at 101 overlaps the one at 100..101
        ('\n[[points]]\nname = "Q"\nkind = "analog"\nrtu = "MFM1"\naddress = 101\ntype = "input_float32"\n',
         r"points\[3\] \(Q\)\.address: input 101 on RTU 'MFM1' is already used by points\[1\] \(P\)"),
        # the same index in another DNP3 object type is fine, the same CROB is not
        ('\n[[points]]\nname = "LBS2"\nkind = "double"\nrtu = "FRTU1"\naddress = 1\ntype = "double_bit_binary_input"\n'
         'control = { type = "double", address = 0 }\n',
         r"crob 0 on RTU 'FRTU1' is already used by points\[0\] \(LBS1\)"),
        ('\n[[points]]\nname = "X"\nkind = "analog"\nrtu = "FRTU1"\naddress = 0\ntype = "M_ME_TF_1"\n',
         r"'M_ME_TF_1' does not fit a analog point on dnp3 \(expected analog_input\)"),
        ('\n[[points]]\nname = "X"\nkind = "single"\nrtu = "IED-1"\ntype = "SPS"\n',
         r"points\[3\] \(X\)\.reference: is required"),
        ('\n[[points]]\nname = "X"\nkind = "single"\nrtu = "IED-1"\ntype = "SPS"\nreference = "XCBR1.Pos"\n',
         r"'XCBR1.Pos' is not an IEC 61850 reference"),
        ('\n[[points]]\nname = "X"\nkind = "single"\nrtu = "IED-1"\ntype = "SPS"\nreference = "LD0/XCBR1.Pos"\n',
         r"reference 'LD0/XCBR1.Pos' on RTU 'IED-1' is already used by points\[2\] \(CB\)"),
        ('\n[[points]]\nname = "X"\nkind = "single"\nrtu = "MFM1"\naddress = 1\ntype = "coil"\n'
         'control = { type = "single", address = 1, mode = "sbo_enhanced" }\n',
         r"control\.mode: sbo_enhanced is an IEC 61850 control model"),
        ('\n[[points]]\nname = "X"\nkind = "single"\nrtu = "MFM1"\naddress = 70000\ntype = "coil"\n',
         r"address 70000 out of range 0\.\.65535 on modbus"),
        ('\n[[rtus]]\nname = "M2"\nprotocol = "modbus"\ncommon_address = 300\naddresses = ["127.0.0.1:20009"]\n',
         r"rtus\[3\]\.common_address: must be 1\.\.247 on modbus, got 300"),
        ('\n[[rtus]]\nname = "M2"\nprotocol = "modbus"\ncommon_address = 3\naddresses = ["127.0.0.1:20009"]\n'
         'dnp3 = { master_address = 1 }\n', r"rtus\[3\]\.dnp3: is a dnp3 table but the RTU speaks modbus"),
        ('\n[[rtus]]\nname = "M2"\nprotocol = "modbus"\ncommon_address = 3\naddresses = ["127.0.0.1:20009"]\n'
         'modbus = { word_order = "middle" }\n', r"rtus\[3\]\.modbus\.word_order: unknown value 'middle'"),
        ('\n[[rtus]]\nname = "D2"\nprotocol = "dnp3"\ncommon_address = 3\naddresses = ["127.0.0.1:20009"]\n'
         'dnp3 = { master_adress = 1 }\n', r"rtus\[3\]\.dnp3: unknown field\(s\): master_adress"),
    ],
)
def test_bad_protocol_config_names_the_field(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_station_config(BASE + extra, "station.toml")


def test_derived_points_get_addresses_of_their_protocol() -> None:
    cfg = load_station_config(sample_network_station_path())  # the sample station assigns protocols by role
    first = {}
    for r in cfg.rtus:
        first.setdefault(r.protocol, r)
    dnp3, modbus, ied = first[Protocol.DNP3], first[Protocol.MODBUS], first[Protocol.IEC61850]
    by_kind = {(p.source.rtu, p.kind, p.source.type_id) for p in cfg.points}
    assert (dnp3.name, PointKind.DOUBLE, "double_bit_binary_input") in by_kind
    assert (dnp3.name, PointKind.ANALOG, "analog_input") in by_kind
    assert (modbus.name, PointKind.ANALOG, "input_float32") in by_kind
    assert (ied.name, PointKind.ANALOG, "CMV") in by_kind
    for rtu in (dnp3, modbus, ied):
        pts = cfg.points_of_rtu(rtu.name)
        assert pts and all(p.source.frontend == rtu.protocol.value for p in pts)
    # DNP3 indexes count from 0 per object type; controls are CROBs from 0
    dnp3_doubles = [p for p in cfg.points_of_rtu(dnp3.name) if p.kind is PointKind.DOUBLE]
    assert [p.source.address for p in dnp3_doubles] == list(range(len(dnp3_doubles)))
    crobs = [p.control.address for p in dnp3_doubles if p.control]
    assert crobs == list(range(len(crobs)))
    # Modbus analogs are float32 two registers apart
    analogs = [p.source.address for p in cfg.points_of_rtu(modbus.name) if p.kind is PointKind.ANALOG]
    assert all(b - a == 2 for a, b in zip(analogs, analogs[1:], strict=False))
    # IEC 61850: a controllable switch is a DPC controlled through its own reference
    dpc = [p for p in cfg.points_of_rtu(ied.name) if p.source.type_id == "DPC"]
    assert dpc and all(p.control is not None and p.control.reference == p.source.reference
                       and p.control.type is ControlType.DOUBLE for p in dpc)
    assert len({p.source.reference for p in cfg.points_of_rtu(ied.name)}) == len(cfg.points_of_rtu(ied.name))
