import pytest

from models.config import parse_station_config
from models.errors import ConfigError
from models.points import ControlMode, PointKind
from models.samples import load_sample_station

BASE = """
[station]
name = "t"

[[rtus]]
name = "R1"
common_address = 1
addresses = ["127.0.0.1:2404"]

[[points]]
name = "CB1"
kind = "double"
rtu = "R1"
address = 100
type = "M_DP_TB_1"
control = { type = "double", address = 200 }
"""


def test_sample_station_loads() -> None:
    cfg = load_sample_station()
    assert len(cfg.points) >= 20
    cb = cfg.point("SHN/F1/CB")
    assert cb.kind is PointKind.DOUBLE and cb.control is not None
    assert cb.control.mode is ControlMode.SELECT_BEFORE_OPERATE
    assert [p.id for p in cfg.points] == list(range(len(cfg.points)))
    assert cfg.rtu("RTU-SHN").addresses[1].endswith("24042")


def test_minimal_config_loads() -> None:
    cfg = parse_station_config(BASE)
    assert cfg.points[0].source.address == 100 and cfg.points[0].control.address == 200


def test_empty_config_fails() -> None:
    with pytest.raises(ConfigError, match="empty"):
        parse_station_config("")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[[points]]\nname = "X"\nkind = "double"\nrtu = "R1"\naddress = 100\ntype = "M_DP_TB_1"\n',
         r"station.toml:18: points\[1\] \(X\)\.address: IOA 100 on RTU 'R1' is already used by points\[0\] \(CB1\)"),
        ('\n[[points]]\nname = "X"\nkind = "bogus"\nrtu = "R1"\naddress = 5\n',
         r"points\[1\] \(X\)\.kind: unknown value 'bogus'"),
        ('\n[[points]]\nname = "CB1"\nkind = "single"\nrtu = "R1"\naddress = 5\ntype = "M_SP_NA_1"\n',
         r"points\[1\] \(CB1\)\.name: duplicate point name"),
        ('\n[[points]]\nname = "X"\nkind = "analog"\nrtu = "R9"\naddress = 5\ntype = "M_ME_NC_1"\n',
         r"points\[1\] \(X\)\.rtu: unknown RTU 'R9'"),
        ('\n[[points]]\nname = "X"\nkind = "analog"\nrtu = "R1"\naddress = 5\ntype = "M_DP_TB_1"\n',
         r"\.type: 'M_DP_TB_1' does not fit a analog point"),
        ('\n[[points]]\nname = "X"\nkind = "analog"\nrtu = "R1"\naddress = 5\ntype = "M_ME_NC_1"\n'
         'limits = { hi = 10, lo = 20 }\n', r"limits must rise strictly"),
        ('\n[[points]]\nname = "X"\nkind = "analog"\nrtu = "R1"\naddress = 5\ntype = "M_ME_NC_1"\ncolour = 1\n',
         r"unknown field\(s\): colour"),
        ('\n[[rtus]]\nname = "R2"\ncommon_address = 2\naddresses = ["127.0.0.1:2404"]\n',
         r"rtus\[1\]\.addresses: 127\.0\.0\.1:2404 is already used by rtus\[0\]"),
    ],
)
def test_bad_config_names_line_and_field(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_station_config(BASE + extra, "station.toml")


def test_setpoint_without_control_rejected() -> None:
    extra = '\n[[points]]\nname = "SP"\nkind = "setpoint"\nrtu = "R1"\naddress = 7\ntype = "M_ME_NC_1"\n'
    with pytest.raises(ConfigError, match=r"points\[1\] \(SP\)\.control: a setpoint point needs a control table"):
        parse_station_config(BASE + extra)


def test_not_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_station_config("[station\nname=", "x.toml")
