"""The ``[iccp]`` table of the station TOML: identity, peers' bilateral tables, remote centres as RTUs whose points
carry TASE.2 names; every error names file, line and field."""

from pathlib import Path

import pytest
from iccp_stations import field_station

from iccp.tase2.bilateral import AccessDenied, check_device, check_read, check_write
from models.config import Protocol, load_station_config, parse_station_config
from models.errors import ConfigError
from models.iccp_config import ApTitle, IccpConfig, Operation, PeerIdentity, tase2_name_of
from models.protocols import iccp as iccp_proto
from models.protocols.iccp import ControlKind, FlagsLayout, PointType, Scope, StateEncoding
from models.samples import sample_network_station_path

BASE = field_station("t") + """
[[points]]
name = "TAP-SP"
kind = "setpoint"
rtu = "R1"
address = 102
type = "M_ME_NB_1"
control = { type = "setpoint_scaled", address = 202, mode = "direct" }
"""

ICCP = """
[iccp]
ap_title = "1.3.9999.10"
ae_qualifier = 10
listen = "127.0.0.1:0"

[[iccp.peers]]
name = "TSO"
ap_title = "1.3.9999.20"
ae_qualifier = 20
bilateral_table_id = "BLT_1"
domain = "DSO1"
operator = "iccp-tso"
read = ["F1-P", { point = "CB1", name = "CB1_STATE", type = "Data_StateQ", scope = "icc" }]
write = [{ point = "TAP-SP", name = "TAP_SP", type = "Data_DiscreteQ" }]
devices = [{ point = "CB1", name = "CB1_CTL", tag = false }, { point = "TAP-SP", name = "TAP" }]
limits = { max_transfer_sets = 4, min_interval_s = 2 }
flags_layout = "lsb_first"

[[iccp.remotes]]
name = "TSO-ICCP"
addresses = ["127.0.0.1:10202", "127.0.0.1:10203"]
ap_title = "1.3.9999.20"
ae_qualifier = 20
domain = "DSO1"
bilateral_table_id = "BLT_1"
interval_s = 5
state_encoding = "separate_value"

[[points]]
name = "TSO.FREQ"
kind = "analog"
rtu = "TSO-ICCP"
reference = "FREQ_SYS"
units = "Hz"

[[points]]
name = "TSO.CB_T1"
kind = "double"
rtu = "TSO-ICCP"
reference = "CB_T1_STATE"
type = "Data_StateQTimeTagExtended"
"""


def _load(text: str):
    return parse_station_config(text, "station.toml")


def test_iccp_section_loads() -> None:
    cfg = _load(BASE + ICCP)
    ic = cfg.iccp
    assert isinstance(ic, IccpConfig)
    assert ic.identity == PeerIdentity(ApTitle((1, 3, 9999, 10)), 10) and ic.listen == "127.0.0.1:0"
    (t,) = ic.peers
    assert ic.peer(PeerIdentity(ApTitle.parse("1.3.9999.20"), 20)) is t
    assert ic.peer(PeerIdentity(ApTitle.parse("1.3.9999.20"), 21)) is None
    assert t.table_id == "BLT_1" and t.domain == "DSO1" and t.operator == "iccp-tso"
    assert t.flags_layout is FlagsLayout.LSB_FIRST and t.limits.max_transfer_sets == 4 and t.limits.min_interval_s == 2
    assert check_read(t, "F1_P").type is PointType.DATA_REAL_Q_TIMETAG  # default name and type
    assert check_read(t, "CB1_STATE").point == "CB1"
    assert check_write(t, "TAP_SP").type is PointType.DATA_DISCRETE_Q
    with pytest.raises(AccessDenied):
        check_write(t, "F1_P")
    cb = check_device(t, "CB1_CTL_SBO", Operation.SELECT)  # the point's control is SBO
    assert cb.device.kind is ControlKind.COMMAND and not cb.device.tag
    tap = check_device(t, "TAP", Operation.OPERATE)
    assert tap.device.kind is ControlKind.SETPOINT_DISCRETE and not tap.device.sbo  # direct control
    assert t.device_object("TAP_SBO") is None
    (remote,) = ic.remotes
    assert remote.addresses == ("127.0.0.1:10202", "127.0.0.1:10203") and remote.interval_s == 5
    assert remote.state_encoding is StateEncoding.SEPARATE_VALUE and remote.integrity_s == 300
    rtu = cfg.rtu("TSO-ICCP")
    assert rtu.protocol is Protocol.ICCP and rtu.addresses == remote.addresses
    imported = cfg.points_of_rtu("TSO-ICCP")
    assert [(p.name, p.source.reference, iccp_proto.point_type_name(p)) for p in imported] == [
        ("TSO.FREQ", "FREQ_SYS", "Data_RealQTimeTag"), ("TSO.CB_T1", "CB_T1_STATE", "Data_StateQTimeTagExtended")]
    assert all(p.source.frontend == "iccp" for p in imported)
    assert [p.id for p in cfg.points] == list(range(len(cfg.points)))


def test_station_without_iccp_has_none() -> None:
    assert _load(BASE).iccp is None


def test_default_tase2_names() -> None:
    assert tase2_name_of("SS-TR1.P.ph_A") == "SS_TR1_P_ph_A"
    assert tase2_name_of("1-X") == "_1_X"


def _replace(old: str, new: str) -> str:
    text = BASE + ICCP
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("text", "message"), [
    (_replace('ap_title = "1.3.9999.10"', 'ap_title = "x"'),
     r"station.toml:38: iccp.ap_title: AP title 'x' is not an object identifier"),
    (_replace('listen = "127.0.0.1:0"', 'listen = "nowhere"'), r"station.toml:38: iccp.listen: 'nowhere' is not"),
    (_replace('read = ["F1-P"', 'read = ["F9-P"'),
     r"station.toml:43: iccp.peers\[0\] \(TSO\).read\[0\]: unknown point 'F9-P'"),
    (_replace('type = "Data_StateQ", scope', 'type = "Data_RealQ", scope'),
     r"iccp.peers\[0\] \(TSO\).read\[1\]: a double point cannot be exchanged as Data_RealQ"),
    (_replace('type = "Data_StateQ", scope', 'type = "Data_Bogus", scope'),
     r"read\[1\]: unknown TASE.2 type 'Data_Bogus'"),
    (_replace('scope = "icc"', 'scope = "aa"'), r"iccp.peers\[0\] \(TSO\).read\[1\].scope: must be \"icc\" or \"vcc\""),
    (_replace('write = [{ point = "TAP-SP"', 'write = [{ point = "F1-P"'),
     r"write\[0\]: point 'F1-P' is fed by iec104 RTU 'R1': a peer may write only set-points and points of a remote"),
    (_replace('devices = [{ point = "CB1"', 'devices = [{ point = "F1-P"'),
     r"devices\[0\]: point 'F1-P' has no control table"),
    (_replace('name = "CB1_CTL"', 'name = "F1_P"'), r"iccp.peers\[0\] \(TSO\): .*'F1_P' clashes"),
    (_replace('operator = "iccp-tso"\n', ''), r"iccp.peers\[0\] \(TSO\).operator: a peer with devices needs"),
    (_replace('name = "CB1_STATE"', 'name = "CB1 STATE"'), r"read\[1\].name: 'CB1 STATE' is not an MMS identifier"),
    (_replace('flags_layout = "lsb_first"', 'flags_layout = "middle"'),
     r"iccp.peers\[0\] \(TSO\).flags_layout: unknown value 'middle'"),
    (_replace('limits = { max_transfer_sets = 4', 'limits = { max_transfer_sets = 0'),
     r"iccp.peers\[0\] \(TSO\).limits: transfer-set limits: max_transfer_sets must be >= 1"),
    (_replace('bilateral_table_id = "BLT_1"', 'bilateral_table_id = "' + "B" * 33 + '"'),
     r"iccp.peers\[0\] \(TSO\).bilateral_table_id: .* must be 1..32 ASCII characters"),
    (_replace('ap_title = "1.3.9999.20"\nae_qualifier = 20\nbil', 'ap_title = "1.3.9999.10"\nae_qualifier = 10\nbil'),
     r"iccp.peers\[0\] \(TSO\).ap_title: 1.3.9999.10/10 is our own"),
    (_replace('name = "TSO-ICCP"', 'name = "R1"'),
     r"station.toml:56: iccp.remotes\[0\] \(R1\).name: 'R1' is already the name of an RTU"),
    (_replace('addresses = ["127.0.0.1:10202", "127.0.0.1:10203"]', 'addresses = []'),
     r"iccp.remotes\[0\] \(TSO-ICCP\).addresses: must list one or two"),
    (_replace('interval_s = 5', 'interval_s = 0'), r"iccp.remotes\[0\] \(TSO-ICCP\).interval_s: must be a whole"),
    (_replace('interval_s = 5', 'interval_s = 5\nbogus = 1'),
     r"iccp.remotes\[0\] \(TSO-ICCP\): unknown field\(s\): bogus"),
    (_replace('reference = "FREQ_SYS"', 'reference = "FREQ SYS"'),
     r"points\[3\] \(TSO.FREQ\).reference: 'FREQ SYS' is not a TASE.2 name"),
    (_replace('reference = "FREQ_SYS"', 'reference = "CB_T1_STATE"'),
     r"points\[4\] \(TSO.CB_T1\).address: reference 'CB_T1_STATE' on RTU 'TSO-ICCP' is already used"),
    (_replace('units = "Hz"', 'units = "Hz"\ntype = "Data_StateQ"'),
     r"points\[3\] \(TSO.FREQ\).type: 'Data_StateQ' does not fit a analog point on iccp"),
    (_replace('units = "Hz"', 'units = "Hz"\ncontrol = { type = "single", address = 1 }'),
     r"points\[3\] \(TSO.FREQ\).control: points imported over ICCP cannot be commanded"),
    (_replace('listen = "127.0.0.1:0"\n', ''), r"iccp.listen: is required when peers may connect"),
    (BASE + '\n[[rtus]]\nname = "X"\nprotocol = "iccp"\naddresses = ["127.0.0.1:1"]\n',
     r"rtus\[1\].protocol: ICCP remote control centres are declared in \[\[iccp.remotes\]\]"),
    (BASE + '\n[iccp]\nap_title = "1.3.9999.10"\n', r"iccp: lists neither peers"),
])
def test_iccp_errors_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(text)


def test_remote_without_points_is_refused() -> None:
    text = (BASE + ICCP).split("\n[[points]]\nname = \"TSO.FREQ\"")[0]
    with pytest.raises(ConfigError, match=r"iccp.remotes\[0\] \(TSO-ICCP\): remote centre 'TSO-ICCP' has no points"):
        _load(text)


def test_sample_network_station_iccp_block() -> None:
    """The shipped sample network station's ``[iccp]`` block: peer TSO reads substation points under their default
    TASE.2 names; the remote centre's points carry the simulator's names (``iccp.sim.transmission``)."""
    cfg = load_station_config(sample_network_station_path())
    assert cfg.iccp is not None and cfg.iccp.listen is not None
    (peer,) = cfg.iccp.peers
    assert check_read(peer, "SS_INC1_Pos").scope is Scope.ICC and check_read(peer, "SS_INC1_Pos").point == "SS-INC1.Pos"
    remote = cfg.iccp.remote("TSO-ICCP")
    assert remote.dr_directory is not None and Path(remote.dr_directory).is_absolute()
    assert {"FREQ_SYS", "TIE1_MW", "TIE2_MW", "CB_T1_STATE", "CB_T2_STATE", "MWH_SENT_T1", "MWH_RECV_T1"} <= {
        p.source.reference for p in cfg.points_of_rtu("TSO-ICCP")}
