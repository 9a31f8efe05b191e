"""CIM measurements -> RTDB points (models.measurement_points through the station TOML)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from support import IEEE123, requires_reference_feeders

from models.config import load_station_config, parse_station_config
from models.errors import ConfigError
from models.measurement_points import (
    ANALOG_IOA_OFFSET,
    COMMAND_IOA_OFFSET,
    SETPOINT_COMMAND_IOA_OFFSET,
    SETPOINT_IOA_OFFSET,
    Quantity,
)
from models.network import Phase
from models.points import ControlMode, ControlType, PointKind
from models.sample_network import SAMPLE_NETWORK_PATH

pytestmark = requires_reference_feeders()

HAND_WRITTEN = """
[[points]]
name = "RTU-A/SPARE"
kind = "single"
rtu = "RTU-A"
address = 5
type = "M_SP_TB_1"
"""


def _station(tmp_path: Path, rtus: str, extra: str = "") -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[station]\nname = "t"\n[network]\ncim = "{IEEE123.as_posix()}"\n{rtus}{extra}', encoding="utf-8")
    return path


def _rtu(name: str, ca: int, port: int, globs: list[str], ioa_base: int | None = None) -> str:
    base = f"ioa_base = {ioa_base}\n" if ioa_base is not None else ""
    return (f'[[rtus]]\nname = "{name}"\ncommon_address = {ca}\naddresses = ["127.0.0.1:{port}"]\n'
            f"equipment = {globs!r}\n{base}").replace("'", '"')


def test_ieee123_one_rtu_covering_everything(tmp_path: Path) -> None:
    cfg = load_station_config(_station(tmp_path, _rtu("RTU-A", 1, 24001, ["*"]), HAND_WRITTEN))
    model = cfg.network
    assert model is not None
    measurements = Counter(m.kind.value for m in model.measurements)
    assert measurements == {"analog": 745, "discrete": 37}
    assert cfg.points[0].name == "RTU-A/SPARE" and cfg.binding(cfg.points[0]) is None  # hand-written come first
    derived = cfg.points[1:]
    assert len({b.measurement_mrid for b in cfg.bindings if b}) == 745 + 37  # every measurement is bound
    by_type = Counter(m.measurement_type for m in model.measurements)
    # PNV and A one point per phase measurement, VA two (P and Q), Pos one each; a set-point per measured tap changer.
    assert Counter(p.kind for p in derived) == {PointKind.ANALOG: by_type["PNV"] + by_type["A"] + 2 * by_type["VA"] + 9,
                                                PointKind.DOUBLE: 28, PointKind.SETPOINT: 7}
    assert len(derived) == 1143
    assert [p.id for p in cfg.points] == list(range(len(cfg.points)))
    sw1 = cfg.point("sw1.Pos.ph_A")
    assert sw1.control is not None and cfg.point("sw1.Pos.ph_B").control is None  # one command per gang switch
    sw1_switch = next(s for s in model.switches if s.name == "sw1")
    assert sw1.element == sw1_switch.mrid and sw1.terminal == 1 and sw1.source.type_id == "M_DP_TB_1"
    b = cfg.binding(cfg.point("creg1a.Pos.ph_B"))
    assert b is not None and b.quantity is Quantity.TAP_POSITION and b.phase is Phase.B
    assert cfg.point("creg1a.Pos.ph_B").source.type_id == "M_ME_TE_1"
    p = cfg.point("sw1.P.ph_A") if any(x.name == "sw1.P.ph_A" for x in cfg.points) else None
    assert p is None  # IEEE 123 measures sw1's current, not its power
    current = cfg.point("sw1.A.ph_A")
    assert current.units == "A" and current.limits is not None and current.limits.hi == pytest.approx(0.9 * 400)
    volts = next(x for x in derived if x.units == "kV")
    assert volts.limits is not None and volts.limits.lo < volts.limits.hi
    # IOAs: status from base + 1, commands from base + 10001, analogs from base + 20001, in name order.
    status = sorted((x for x in derived if x.kind.is_status), key=lambda x: x.name)
    assert [x.source.address for x in status] == [100_001 + i for i in range(len(status))]
    assert sw1.control.address == sw1.source.address - 1 + COMMAND_IOA_OFFSET
    analogs = sorted((x for x in derived if x.kind is PointKind.ANALOG), key=lambda x: x.name)
    assert [x.source.address for x in analogs] == [100_000 + ANALOG_IOA_OFFSET + j for j in range(len(analogs))]
    # Tap set-points: one per tap changer (creg1a has three per-phase positions), direct C_SE_NB_1, from base + 30001.
    setpoints = sorted((x for x in derived if x.kind is PointKind.SETPOINT), key=lambda x: x.name)
    assert [x.name for x in setpoints] == [f"{t.name}.Step.Set" for t in sorted(model.tap_changers,
                                                                                key=lambda t: t.name)]
    assert [x.source.address for x in setpoints] == [100_000 + SETPOINT_IOA_OFFSET + k for k in range(7)]
    creg1a = cfg.point("creg1a.Step.Set")
    assert creg1a.control is not None and creg1a.control.type is ControlType.SETPOINT_SCALED
    assert creg1a.control.mode is ControlMode.DIRECT and creg1a.source.type_id == "M_ME_TE_1"
    assert creg1a.control.address == 100_000 + SETPOINT_COMMAND_IOA_OFFSET
    b = cfg.binding(creg1a)
    tap = next(t for t in model.tap_changers if t.name == "creg1a")
    assert b is not None and b.quantity is Quantity.TAP_SETPOINT and b.tap_changer_mrid == tap.mrid
    assert cfg.sim[creg1a.id].nominal == tap.step


def test_two_rtus_split_by_globs_and_ioa_base(tmp_path: Path) -> None:
    rtus = _rtu("RTU-A", 1, 24001, ["sw*"], ioa_base=0) + _rtu("RTU-B", 2, 24002, ["reg*", "xfm1"], ioa_base=5000)
    cfg = load_station_config(_station(tmp_path, rtus))
    a = cfg.points_of_rtu("RTU-A")
    b = cfg.points_of_rtu("RTU-B")
    assert {p.name.split(".")[0] for p in a} == {f"sw{i}" for i in range(1, 9)}
    assert {p.name.split(".")[0] for p in b} >= {"creg1a", "reg1a", "xfm1"}
    assert min(p.source.address for p in a) == 1
    assert min(p.source.address for p in b) == 5000 + ANALOG_IOA_OFFSET  # taps are analogs


def test_measurement_claimed_by_two_rtus_is_an_error(tmp_path: Path) -> None:
    rtus = _rtu("RTU-A", 1, 24001, ["sw1", "sw2"]) + _rtu("RTU-B", 2, 24002, ["sw2*"])
    with pytest.raises(ConfigError, match=r"'RTU-A' and 'RTU-B'") as err:
        load_station_config(_station(tmp_path, rtus))
    assert "sw2" in str(err.value)


def test_equipment_without_network_is_an_error() -> None:
    text = '[station]\nname = "t"\n' + _rtu("RTU-A", 1, 24001, ["*"])
    with pytest.raises(ConfigError, match=r"rtus\[0\] \(RTU-A\)\.equipment: needs a network model"):
        parse_station_config(text, "x.toml")


def test_hand_written_ioa_clash_names_both(tmp_path: Path) -> None:
    extra = HAND_WRITTEN.replace("address = 5", "address = 100001")
    with pytest.raises(ConfigError, match=r"IOA 100001 on RTU 'RTU-A' is already used by 'RTU-A/SPARE'"):
        load_station_config(_station(tmp_path, _rtu("RTU-A", 1, 24001, ["*"]), extra))


def test_globs_matching_nothing_are_an_error(tmp_path: Path) -> None:
    rtus = _rtu("RTU-A", 1, 24001, ["sw*"]) + _rtu("RTU-B", 2, 24002, ["F9-RMU*"])
    with pytest.raises(ConfigError, match=r"RTU 'RTU-B': equipment \['F9-RMU\*'\] matches no measured equipment"):
        load_station_config(_station(tmp_path, rtus))


SAMPLE_STATION = Path(__file__).resolve().parents[2] / "models" / "data" / "sample_network_station.toml"
SAMPLE_NETWORK = SAMPLE_NETWORK_PATH


@pytest.mark.skipif(not SAMPLE_NETWORK.is_file(), reason="the embedded sample network is missing")
def test_sample_network_station() -> None:
    cfg = load_station_config(SAMPLE_STATION)
    model = cfg.network
    # the station opts in to the state-estimation points (models.calculated_points): source DMS-SE, after the field
    # and imports 13 points of the transmission centre over ICCP (hand-written, first), not bound to the model
    iccp = [p for p in cfg.points if p.source.rtu == "TSO-ICCP"]
    assert [p.id for p in iccp] == list(range(13)) and all(cfg.binding(p) is None for p in iccp)
    field = [p for p in cfg.points if p.source.rtu not in ("DMS-SE", "TSO-ICCP")]
    field_rtus = [r for r in cfg.rtus if r.name not in ("DMS-SE", "TSO-ICCP")]
    assert model is not None and not [p for p in field if cfg.binding(p) is None]  # nothing else hand-written
    assert len({b.measurement_mrid for b in cfg.bindings if b}) == len(model.measurements)

    def elements(rtu: str, kind: PointKind) -> set[str]:
        names = {p.name for p in cfg.points_of_rtu(rtu) if p.kind is kind}
        return {n.split(".")[0] for n in names}

    ss = cfg.points_of_rtu("RTU-SS")
    assert elements("RTU-SS", PointKind.DOUBLE) == {"SS-INC1", "SS-INC2", "SS-BC"}
    assert all(p.control is not None for p in ss if p.kind is PointKind.DOUBLE and p.name.endswith(".Pos"))
    assert Counter(p.name.split(".")[1] for p in ss if p.kind is PointKind.ANALOG) == {"PNV": 6}  # two bus sections
    # The feeder protection IEDs: the breaker with its currents and VA (P and Q) per phase.
    for n in range(1, 7):
        ied = cfg.points_of_rtu(f"IED-F{n}")
        assert elements(f"IED-F{n}", PointKind.DOUBLE) == {f"F{n}-CB"} and cfg.point(f"F{n}-CB.Pos").control
        assert Counter(p.name.split(".")[1] for p in ied if p.kind is PointKind.ANALOG) == {"A": 3, "P": 3, "Q": 3}
    # The transformer meters: VA per phase and the tap position (its tap changer goes by the transformer's name).
    for n in (1, 2):
        tap = f"SS-TR{n}-OLTC"
        assert {p.name for p in cfg.points_of_rtu(f"MFM-TR{n}")} == {f"{tap}.Pos", f"{tap}.Step.Set"} | {
            f"SS-TR{n}.{q}.ph_{ph}" for q in "PQ" for ph in "ABC"}
        setpoint = cfg.point(f"SS-TR{n}-OLTC.Step.Set")  # Modbus: a holding int16 written by the master, read back
        assert setpoint.control is not None and setpoint.source.type_id == "holding_int16"
        assert setpoint.control.address == setpoint.source.address
    assert cfg.point("F1-CB.Pos").state_alarms and not cfg.point("SS-BC.Pos").state_alarms  # BC is normally open
    assert {r.protocol.value for r in cfg.rtus} == {"iec104", "dnp3", "modbus", "iec61850", "calculated", "iccp"}
    frtus = [r.name for r in cfg.rtus if r.frtu]
    assert frtus and all(r.equipment for r in field_rtus)
    for rtu in frtus:
        rmu = rtu.removeprefix("FRTU-")
        assert elements(rtu, PointKind.SINGLE) == {f"{rmu}-LBS1", f"{rmu}-LBS2"}  # FPIs on the ring switches
        assert {f"{rmu}-LBS1", f"{rmu}-LBS2"} <= elements(rtu, PointKind.DOUBLE)
        assert cfg.point(f"{rmu}-LBS1.Pos").control is not None
    assert "F1-RMU03-LBS1.FPI" in {p.name for p in cfg.points}
    # Counts: RTU-SS 3 switches + 6 PNV, 6 IEDs of 10, 2 meters of 8 (with the tap set-point); each FRTU 2 FPIs,
    # 3 switch positions, 3 PNV, 6 ring currents.
    assert len(frtus) == 18 and len(ss) == 9
    assert all(len(cfg.points_of_rtu(r)) == 14 for r in frtus) and len(field) == 9 + 60 + 16 + 18 * 14
    kinds = {s.mrid: s.kind.value for s in model.switches}
    tees = [p for p in cfg.points if p.name.endswith("-TEE.Pos")]
    assert tees and all((p.control is None) == (kinds[p.element] == "Fuse") for p in tees)  # fuses: status only
