"""IEC 104 <-> models mapping: quality bits, causes, time tags, scaling, type identifiers."""

from __future__ import annotations

import datetime as dt

import c104
import pytest

from frontend_protocols.iec104.mapping import (
    COMMAND_TYPE,
    PointMap,
    cause_from_cot,
    cp56_invalid,
    has_time_tag,
    is_counter_type,
    kind_of_type,
    quality_from_iec,
    raw_setpoint,
    time_tag_ms,
)
from models.config import MONITOR_TYPES, Protocol
from models.points import ControlDef, ControlType, PointDef, PointKind, PointSource, Quality
from models.updates import Cause


def point(kind: PointKind, type_id: str, scale: float = 1.0, offset: float = 0.0) -> PointDef:
    return PointDef(id=5, name="P", kind=kind, source=PointSource("iec104", "R", 1, 100, type_id), scale=scale,
                    offset=offset, control=ControlDef(ControlType.SETPOINT_FLOAT, 200))


@pytest.mark.parametrize(
    ("iec", "expected"),
    [
        (c104.Quality.Invalid, Quality.INVALID),
        (c104.Quality.NonTopical, Quality.NOT_TOPICAL),
        (c104.Quality.Substituted, Quality.SUBSTITUTED),
        (c104.Quality.Blocked, Quality.BLOCKED),
        (c104.Quality.Overflow, Quality.OVERFLOW),
        (c104.Quality.ElapsedTimeInvalid, Quality.TIME_INVALID),
        (c104.Quality.Invalid | c104.Quality.Blocked | c104.Quality.NonTopical,
         Quality.INVALID | Quality.BLOCKED | Quality.NOT_TOPICAL),
    ],
)
def test_quality_bits_follow_c104(iec: c104.Quality, expected: Quality) -> None:
    assert quality_from_iec(int(iec)) == expected


def test_quality_good_counter_and_time_invalid() -> None:
    assert quality_from_iec(0) == Quality.GOOD
    assert quality_from_iec(int(c104.Quality.Invalid), time_invalid=True) == Quality.INVALID | Quality.TIME_INVALID
    assert quality_from_iec(int(c104.BinaryCounterQuality.Invalid), counter=True) == Quality.INVALID
    assert quality_from_iec(int(c104.BinaryCounterQuality.Carry), counter=True) == Quality.OVERFLOW
    assert quality_from_iec(int(c104.BinaryCounterQuality.Adjusted), counter=True) == Quality.QUESTIONABLE


@pytest.mark.parametrize(
    ("cot", "cause"),
    [
        (c104.Cot.SPONTANEOUS, Cause.SPONTANEOUS),
        (c104.Cot.PERIODIC, Cause.PERIODIC),
        (c104.Cot.BACKGROUND_SCAN, Cause.BACKGROUND),
        (c104.Cot.INTERROGATED_BY_STATION, Cause.INTERROGATED),
        (c104.Cot.INTERROGATED_BY_GROUP_16, Cause.INTERROGATED),
        (c104.Cot.REQUESTED_BY_GENERAL_COUNTER, Cause.INTERROGATED),
        (c104.Cot.REQUEST, Cause.INTERROGATED),
        (c104.Cot.RETURN_INFO_REMOTE, Cause.RETURN_REMOTE),
        (c104.Cot.RETURN_INFO_LOCAL, Cause.RETURN_LOCAL),
    ],
)
def test_cause_from_cot(cot: c104.Cot, cause: Cause) -> None:
    assert cause_from_cot(cot.value) is cause


def test_time_tag_is_utc_epoch_ms() -> None:
    assert time_tag_ms(None) == -1
    naive_utc = dt.datetime(2024, 3, 1, 12, 0, 0, 250000)  # c104 hands out naive UTC
    assert time_tag_ms(naive_utc) == 1709294400250
    aware = dt.datetime(2024, 3, 1, 13, 0, 0, 250000, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert time_tag_ms(aware) == 1709294400250


def test_scaling_applies_to_measurements_not_states() -> None:
    pm = PointMap.of(point(PointKind.ANALOG, "M_ME_NB_1", scale=0.1, offset=-5.0))
    assert pm.engineering(1234) == pytest.approx(118.4)
    assert pm.point == 5 and not pm.counter
    dp = PointMap.of(point(PointKind.DOUBLE, "M_DP_TB_1", scale=10.0, offset=1.0))
    assert dp.engineering(2) == 2.0  # a DPI is a state code
    assert PointMap.of(point(PointKind.COUNTER, "M_IT_NA_1", scale=0.5)).counter


def test_setpoint_raw_is_inverse_of_scaling() -> None:
    p = point(PointKind.SETPOINT, "M_ME_NB_1", scale=0.1, offset=-5.0)
    assert PointMap.of(p).engineering(raw_setpoint(p, 118.4)) == pytest.approx(118.4)


def test_type_to_kind_and_time_tag_for_every_configurable_type() -> None:
    for kind, types in MONITOR_TYPES[Protocol.IEC104].items():
        for t in types:
            if not t:
                continue
            assert hasattr(c104.Type, t), t
            if kind is not PointKind.SETPOINT:
                assert kind_of_type(t) is kind, t
            assert has_time_tag(t) == ("_T" in t), t
    assert is_counter_type("M_IT_TB_1") and not is_counter_type("M_ME_NC_1")
    with pytest.raises(ValueError, match="C_SC_NA_1"):
        kind_of_type("C_SC_NA_1")


def test_command_types_exist_in_c104() -> None:
    assert set(COMMAND_TYPE) == set(ControlType)
    for name in COMMAND_TYPE.values():
        assert hasattr(c104.Type, name)


# An APDU c104 2.2.1 delivered for a GI of three M_ME_TF_1 objects at IOA 2001..2003 (SQ=1), as IncomingMessage.raw.
_GI_SQ = bytes.fromhex(
    "683100000000248314000100d1070000003041002c5a23111a0b1a00004041002c5a23111a0b1a00005041002c5a23111a0b1a"
)


def _set_iv(apdu: bytes, cp56_offset: int) -> bytes:
    b = bytearray(apdu)
    b[cp56_offset + 2] |= 0x80
    return bytes(b)


def test_cp56_invalid_in_sequence_asdu() -> None:
    assert c104.explain_bytes_dict(apdu=_GI_SQ)["firstInformationObjectAddress"] == 2001  # the frame is what we think
    assert not any(cp56_invalid(_GI_SQ, ioa) for ioa in (2001, 2002, 2003))
    # elements start after APCI(6) + header(6) + IOA(3); each is float(4) + QDS(1) + CP56(7)
    second_tag = 6 + 6 + 3 + 12 + 5
    marked = _set_iv(_GI_SQ, second_tag)
    assert [cp56_invalid(marked, ioa) for ioa in (2001, 2002, 2003)] == [False, True, False]
    assert not cp56_invalid(marked, 2004)  # not in the message


def test_cp56_invalid_in_object_list_asdu() -> None:
    # two M_DP_TB_1 objects with their own IOAs (SQ=0): IOA(3) + DIQ(1) + CP56(7) each
    tag = bytes.fromhex("2c5a23111a0b1a")
    objs = (1001).to_bytes(3, "little") + b"\x02" + tag + (1002).to_bytes(3, "little") + b"\x01" + tag
    asdu = bytes([31, 0x02, 3, 0]) + (7).to_bytes(2, "little") + objs
    apdu = bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu
    assert c104.explain_bytes_dict(apdu=apdu)["numberOfObjects"] == 2
    marked = _set_iv(apdu, 6 + 6 + 11 + 3 + 1)
    assert not cp56_invalid(marked, 1001) and cp56_invalid(marked, 1002)
    assert cp56_invalid(marked[6:], 1002)  # a bare ASDU works too
    assert not cp56_invalid(b"", 1) and not cp56_invalid(apdu[:9], 1001)
