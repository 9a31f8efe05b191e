"""TASE.2 object model: MMS type descriptions, value codecs (golden BER bytes, round trips, both readings where
implementations disagree), RTDB <-> TASE.2 mapping and bilateral-table access checks."""

import datetime as dt
import itertools
import math
import random

import pytest
from open61850.ber import decode_tlv
from open61850.data import (
    BitStringData,
    BoolData,
    FloatData,
    IntData,
    StructureData,
    TimestampData,
    UIntData,
    VisibleStringData,
    decode_data,
    encode_data,
)
from open61850.mms.types import PrimitiveType, StructureType, decode_type_description, encode_type_description

from iccp.tase2.bilateral import (
    AccessDenied,
    ApTitle,
    BilateralDevice,
    BilateralPoint,
    BilateralTable,
    BilateralTableError,
    Operation,
    PeerIdentity,
    check_device,
    check_read,
    check_write,
)
from iccp.tase2.mapping import flags_from_quality, from_tase2, quality_from_flags, to_tase2
from iccp.tase2.model import (
    FEATURES_MMS_TYPE,
    ICC_OBJECTS,
    OUR_FEATURES,
    OUR_VERSION,
    VCC_OBJECTS,
    Block,
    ControlKind,
    CurrentSource,
    DataFlags,
    DeviceDef,
    DSConditions,
    DSTransferSet,
    FlagsLayout,
    ObjectName,
    PointType,
    PointValue,
    Scope,
    State,
    StateEncoding,
    TagClass,
    TagValue,
    Tase2DecodeError,
    Tase2Error,
    Tase2Version,
    TransferReportHeader,
    Validity,
    control_mms_type,
    decode_command,
    decode_features,
    decode_flags,
    decode_point,
    encode_command,
    encode_features,
    encode_flags,
    encode_point,
    point_mms_type,
    transfer_set_name,
)
from models.calculated_points import SE_SOURCE
from models.points import (
    AnalogLimits,
    PointDef,
    PointKind,
    PointSource,
    Priority,
    Quality,
    StateAlarm,
)
from models.protocols.iccp import TASE2_POINT_TYPES
from models.updates import new_update_rows


def wire(d) -> bytes:
    return encode_data(d)


def unwire(raw: bytes):
    tlv = decode_tlv(raw)
    assert tlv.end == len(raw)
    return decode_data(tlv.tag, tlv.value)


T0_MS = 1_700_000_000_000  # 0x6553F100 s


# --------------------------------------------------------------------------------------------------- golden bytes
def test_golden_real_q_timetag() -> None:
    pv = PointValue(50.0, DataFlags(), T0_MS)
    raw = wire(encode_point(PointType.DATA_REAL_Q_TIMETAG, pv))
    # structure { float 08 42480000, integer 6553F100 (GMTBasedS), bit-string unused 0, 00 }
    assert raw.hex() == "a211" "87050842480000" "85046553f100" "84020000"
    assert decode_point(PointType.DATA_REAL_Q_TIMETAG, unwire(raw)) == pv


def test_golden_state_q_timetag_in_flags_both_layouts() -> None:
    pv = PointValue(State.ON, DataFlags(Validity.SUSPECT, CurrentSource.ENTERED), 0)
    msb = wire(encode_point(PointType.DATA_STATE_Q_TIMETAG, pv))
    # state ON = 10 in bits 0-1 (0x80), SUSPECT = 10 in bits 2-3 (0x20), ENTERED = 10 in bits 4-5 (0x08)
    assert msb.hex() == "a207" "850100" "840200a8"
    lsb = wire(encode_point(PointType.DATA_STATE_Q_TIMETAG, pv, layout=FlagsLayout.LSB_FIRST))
    # the bit-reversed octet: libiec61850's tase2 module reads SUSPECT as 4, ENTERED as 16
    assert lsb.hex() == "a207" "850100" "84020015"
    assert decode_point(PointType.DATA_STATE_Q_TIMETAG, unwire(lsb), layout=FlagsLayout.LSB_FIRST) == pv


def test_not_valid_matches_libiec61850_integer_reading() -> None:
    flags = encode_flags(DataFlags(Validity.NOT_VALID), layout=FlagsLayout.LSB_FIRST)
    assert flags.value == bytes([12])  # QUALITY_VALIDITY_NOT_VALID in pyiec61850.tase2.constants
    assert encode_flags(DataFlags(Validity.NOT_VALID)).value == bytes([0x30])
    assert encode_flags(DataFlags(time_invalid=True, abnormal=True)).value == bytes([0x03])


def test_golden_vcc_objects() -> None:
    assert wire(OUR_VERSION.encode()).hex() == "a207" "850207d0" "850108"
    assert wire(encode_features()).hex() == "840304c800"  # 12 bits, 4 unused; Blocks 1, 2, 5 = bits 0, 1, 4
    assert decode_features(encode_features()) == OUR_FEATURES == {Block.BASIC, Block.RBE, Block.DEVICE_CONTROL}
    assert Tase2Version.decode(unwire(bytes.fromhex("a207850207d0850108"))) == Tase2Version(2000, 8)


def test_golden_object_name_and_conditions() -> None:
    name = ObjectName(Scope.ICC, "DSO1", "DS1")
    assert wire(name.encode()).hex() == "a20e" "860101" "8a0444534f31" "8a03445331"
    assert ObjectName.decode(unwire(wire(name.encode()))) == name
    cond = TransferReportHeader(name, 5, DSConditions.INTERVAL | DSConditions.CHANGE).encode()
    assert wire(cond["DSConditions_Detected"]).hex() == "840203a0"  # 5 bits, bits 0 and 2


def test_golden_type_description() -> None:
    t = point_mms_type(PointType.DATA_REAL_Q)
    raw = encode_type_description(t)
    # structure { Value: float(32, 8), Flags: bit-string(8) }
    assert raw.hex() == ("a223" "a121"
                         "3011" "800556616c7565" "a108" "a70602012002" "0108"
                         "300c" "8005466c616773" "a103" "840108")
    assert decode_type_description(decode_tlv(raw)) == t


# --------------------------------------------------------------------------------------------------- round trips
_KIND_OF = {IntData: "integer", UIntData: "unsigned", FloatData: "float", BitStringData: "bit-string",
            BoolData: "boolean", VisibleStringData: "visible-string"}


def conforms(d, t) -> bool:
    """Whether an MMS value has the shape of an MMS type description (what a peer's type-checking client checks)."""
    if isinstance(t, StructureType):
        return isinstance(d, StructureData) and len(d.members) == len(t.components) and all(
            conforms(m, ct) for m, (_, ct) in zip(d.members, t.components, strict=True))
    return isinstance(t, PrimitiveType) and _KIND_OF.get(type(d)) == t.kind


@pytest.mark.parametrize(("value", "mms_type"), [
    (OUR_VERSION.encode(), Tase2Version.MMS_TYPE),
    (encode_features(), FEATURES_MMS_TYPE),
    (ObjectName(Scope.VCC, "", "DS1").encode(), ObjectName.MMS_TYPE),
    (DSTransferSet(ObjectName(Scope.ICC, "D", "DS")).encode(), DSTransferSet.MMS_TYPE),
    (TagValue(TagClass.OPEN_AND_CLOSE_INHIBIT, reason="x").encode(), TagValue.MMS_TYPE),
    (encode_command(ControlKind.SETPOINT_REAL, 1.0), control_mms_type(ControlKind.SETPOINT_REAL)),
    (encode_command(ControlKind.SETPOINT_DISCRETE, -3), control_mms_type(ControlKind.SETPOINT_DISCRETE)),
    *((v, TransferReportHeader.MMS_TYPES[k]) for k, v in TransferReportHeader(
        ObjectName(Scope.ICC, "D", "TS"), 1, DSConditions.CHANGE).encode().items()),
])
def test_values_conform_to_their_type_descriptions(value, mms_type) -> None:
    assert conforms(value, mms_type)
    assert decode_type_description(decode_tlv(encode_type_description(mms_type))) == mms_type
@pytest.mark.parametrize(("ptype", "layout", "state"), list(itertools.product(
    PointType, FlagsLayout, StateEncoding)))
def test_point_round_trip_every_type(ptype: PointType, layout: FlagsLayout, state: StateEncoding) -> None:
    value = {"Real": -12.5, "State": State.OFF, "Discrete": 123456}[ptype.base]
    flags = DataFlags(Validity.HELD, CurrentSource.CALCULATED, True, False) if ptype.has_flags else DataFlags()
    time_ms = (T0_MS + (789 if ptype.extended else 0)) if ptype.has_time else None
    pv = PointValue(value, flags, time_ms)
    d = encode_point(ptype, pv, layout=layout, state=state)
    assert decode_point(ptype, unwire(wire(d)), layout=layout) == pv
    # the value is shaped as its MMS type description says
    t = point_mms_type(ptype, state)
    assert decode_type_description(decode_tlv(encode_type_description(t))) == t
    assert conforms(d, t)


def test_point_type_names_and_properties() -> None:
    """The twelve indication point types by their wire names (the station TOML's ``type``), and what each carries."""
    assert set(TASE2_POINT_TYPES) == {f"Data_{base}{q}" for base in ("Real", "State", "Discrete")
                                      for q in ("", "Q", "QTimeTag", "QTimeTagExtended")}
    assert [(t.base, t.has_flags, t.has_time, t.extended, t.is_state) for t in (
        PointType.DATA_STATE, PointType.DATA_DISCRETE_Q, PointType.DATA_REAL_Q_TIMETAG_EXT)] == [
        ("State", False, False, False, True), ("Discrete", True, False, False, False),
        ("Real", True, True, True, False)]


def test_extended_time_keeps_milliseconds_plain_truncates() -> None:
    pv = PointValue(1.0, DataFlags(), T0_MS + 999)
    ext = decode_point(PointType.DATA_REAL_Q_TIMETAG_EXT, unwire(wire(encode_point(
        PointType.DATA_REAL_Q_TIMETAG_EXT, pv))))
    plain = decode_point(PointType.DATA_REAL_Q_TIMETAG, unwire(wire(encode_point(PointType.DATA_REAL_Q_TIMETAG, pv))))
    assert ext.time_ms == T0_MS + 999 and plain.time_ms == T0_MS


def test_state_decodes_both_readings() -> None:
    flags = encode_flags(DataFlags(Validity.SUSPECT))
    # separate value: {Value, TimeStamp, Flags} with no state bits
    sep = StructureData([IntData(2), IntData(1_700_000_000), flags])
    assert decode_point(PointType.DATA_STATE_Q_TIMETAG, sep) == PointValue(2, DataFlags(Validity.SUSPECT), T0_MS)
    # in flags: {TimeStamp, Flags}
    inf = StructureData([IntData(1_700_000_000), encode_flags(DataFlags(Validity.SUSPECT), state=1)])
    assert decode_point(PointType.DATA_STATE_Q_TIMETAG, inf) == PointValue(1, DataFlags(Validity.SUSPECT), T0_MS)
    # a separate Value wins over state bits
    both = StructureData([IntData(2), IntData(0), encode_flags(DataFlags(), state=1)])
    assert decode_point(PointType.DATA_STATE_Q_TIMETAG, both).value == 2
    # Data_StateQ: one bit string, or {Value, Flags}
    assert decode_point(PointType.DATA_STATE_Q, encode_flags(DataFlags(), state=3)).value == State.INVALID
    assert decode_point(PointType.DATA_STATE_Q, StructureData([IntData(1), flags])).value == State.OFF
    # Data_State: bit string or integer or boolean
    assert decode_point(PointType.DATA_STATE, encode_flags(DataFlags(), state=2)).value == 2
    assert decode_point(PointType.DATA_STATE, IntData(1)).value == 1
    assert decode_point(PointType.DATA_STATE, BoolData(True)).value == State.ON


def test_utc_time_accepted_as_timestamp() -> None:
    ts = TimestampData(dt.datetime.fromtimestamp(1_700_000_000.25, dt.UTC))
    d = StructureData([IntData(7), ts, encode_flags(DataFlags())])
    assert decode_point(PointType.DATA_DISCRETE_Q_TIMETAG, d).time_ms == T0_MS + 250


@pytest.mark.parametrize(("ptype", "data", "match"), [
    (PointType.DATA_REAL_Q_TIMETAG, StructureData([IntData(1), encode_flags(DataFlags())]), "structure of 3"),
    (PointType.DATA_REAL_Q, StructureData([BitStringData(b"\0"), encode_flags(DataFlags())]), "floating-point"),
    (PointType.DATA_DISCRETE_Q, StructureData([IntData(1), IntData(0)]), "Flags must be a bit-string"),
    (PointType.DATA_STATE_Q_TIMETAG, encode_flags(DataFlags()), "needs a time stamp"),
    (PointType.DATA_STATE, IntData(7), "out of range"),
    (PointType.DATA_REAL_Q_TIMETAG_EXT, StructureData([IntData(1), StructureData([IntData(1), IntData(1000)]),
                                                       encode_flags(DataFlags())]), "Milliseconds 1000"),
])
def test_decode_errors_name_the_object(ptype: PointType, data, match: str) -> None:
    with pytest.raises(Tase2DecodeError, match=rf"^ICC1/P7: .*{match}"):
        decode_point(ptype, data, name="ICC1/P7")


def test_encode_refuses_out_of_range() -> None:
    with pytest.raises(Tase2Error, match="P1: a Data_State is 0..3"):
        encode_point(PointType.DATA_STATE_Q, PointValue(4), name="P1")
    with pytest.raises(Tase2Error, match="Data_Discrete needs an integer"):
        encode_point(PointType.DATA_DISCRETE, PointValue(1.5))
    with pytest.raises(Tase2Error, match="not an MMS identifier"):
        ObjectName(Scope.ICC, "DSO 1", "X")
    with pytest.raises(Tase2Error, match="VCC-scope name has no domain"):
        ObjectName(Scope.VCC, "DSO1", "X")


def test_transfer_set_round_trip_and_shape() -> None:
    ts = DSTransferSet(ObjectName(Scope.ICC, "DSO1", "DS_TIE"), start_time_s=1_700_000_000, interval_s=10,
                       tle_s=60, buffer_time_s=1, integrity_check_s=300,
                       conditions=DSConditions.INTERVAL | DSConditions.INTEGRITY | DSConditions.CHANGE,
                       rbe=True, all_changes_reported=True, status=True, event_code_requested=3)
    for layout in FlagsLayout:
        assert DSTransferSet.decode(unwire(wire(ts.encode(layout))), layout) == ts
    assert DSTransferSet.COMPONENTS == ("DataSetName", "StartTime", "Interval", "TLE", "BufferTime", "IntegrityCheck",
                                        "DSConditionsRequested", "BlockData", "Critical", "RBE",
                                        "AllChangesReported", "Status", "EventCodeRequested")
    t = DSTransferSet.MMS_TYPE
    assert decode_type_description(decode_tlv(encode_type_description(t))) == t
    bad = ts.encode()
    bad.members[7] = IntData(1)
    with pytest.raises(Tase2DecodeError, match="DSTransferSet01: BlockData must be a boolean"):
        DSTransferSet.decode(bad, name="DSTransferSet01")
    with pytest.raises(Tase2Error, match="Interval -1 out of range"):
        DSTransferSet(ts.data_set, interval_s=-1)


def test_report_header_round_trip() -> None:
    h = TransferReportHeader(ObjectName(Scope.ICC, "DSO1", "DSTransferSet01"), 1_700_000_000,
                             DSConditions.CHANGE, 0)
    members = {k: unwire(wire(v)) for k, v in h.encode().items()}
    assert TransferReportHeader.decode(members) == h
    assert set(members) == set(TransferReportHeader.NAMES) == set(TransferReportHeader.MMS_TYPES)
    with pytest.raises(Tase2DecodeError, match="no Transfer_Set_Name"):
        TransferReportHeader.decode({})


def test_device_objects() -> None:
    d = DeviceDef("CB_F1")
    assert d.names == ("CB_F1", "CB_F1_SBO", "CB_F1_TAG")
    assert wire(encode_command(ControlKind.COMMAND, 1)).hex() == "850101"
    assert decode_command(ControlKind.SETPOINT_REAL, unwire(wire(encode_command(ControlKind.SETPOINT_REAL, 2.5)))) \
        == 2.5
    with pytest.raises(Tase2Error, match="CB_F1: a command is 0"):
        encode_command(ControlKind.COMMAND, 2, "CB_F1")
    with pytest.raises(Tase2DecodeError, match="neither 0"):
        decode_command(ControlKind.COMMAND, IntData(5))
    tag = TagValue(TagClass.CLOSE_ONLY_INHIBIT, armed=True, reason="crew on line")
    # TagFlags: class CLOSE_ONLY_INHIBIT = 10 in bits 0-1 (0x80), armed bit 2 (0x20); Reason visible-string(12)
    assert wire(tag.encode()).hex() == "a212" "840200a0" "8a0c" + b"crew on line".hex()
    for layout in FlagsLayout:
        assert TagValue.decode(unwire(wire(tag.encode(layout))), layout) == tag
    with pytest.raises(BilateralTableError, match="no room for _SBO"):
        DeviceDef("X" * 29)


def _random_data(rng: random.Random, depth: int = 0):
    pick = rng.randrange(9 if depth < 3 else 7)
    if pick == 0:
        return IntData(rng.choice([0, 1, 2, 3, 4, -1, 999, 2**31, -(2**40), 1_700_000_000]))
    if pick == 1:
        return FloatData(rng.choice([0.0, -1.5, math.nan, math.inf, 1e30]))
    if pick == 2:
        return BitStringData(rng.randbytes(rng.randrange(0, 3)), rng.randrange(8))
    if pick == 3:
        return BoolData(rng.random() < 0.5)
    if pick == 4:
        return VisibleStringData(rng.choice(["", "DSO1", "bad name", "X" * 40, "DS$1"]))
    if pick == 5:
        return UIntData(rng.choice([0, 1, 2, 255, 70000]))
    if pick == 6:
        return TimestampData(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 0)
    return StructureData([_random_data(rng, depth + 1) for _ in range(rng.randrange(0, 14))])


def test_decoders_raise_only_their_error_on_random_values() -> None:
    rng = random.Random(7)
    decoders = [lambda d, t=t, lay=lay: decode_point(t, d, layout=lay) for t in PointType for lay in FlagsLayout]
    decoders += [ObjectName.decode, DSTransferSet.decode, TagValue.decode, Tase2Version.decode, decode_features,
                 lambda d: TransferReportHeader.decode({"Transfer_Set_Name": d, "Event_Code_Detected": d}),
                 *(lambda d, k=k: decode_command(k, d) for k in ControlKind)]
    decoded = 0
    for _ in range(400):
        d = _random_data(rng)
        for decode in decoders:
            try:
                decode(d)
                decoded += 1
            except Tase2DecodeError:
                pass
    assert decoded > 1000  # the random values do hit the valid shapes too


def test_flags_decode_ignores_extra_octets() -> None:
    flags, state = decode_flags(BitStringData(bytes([0x30, 0xFF]), 0))
    assert flags.validity is Validity.NOT_VALID and state == 0


# --------------------------------------------------------------------------------------------------- RTDB mapping
def _point(kind: PointKind, rtu: str = "R1", frontend: str = "iec104", **kw) -> PointDef:
    return PointDef(id=0, name="P", kind=kind, source=PointSource(frontend, rtu, 1, 1, ""), **kw)


@pytest.mark.parametrize(("quality", "validity"), [
    (Quality.GOOD, Validity.VALID),
    (Quality.INVALID, Validity.NOT_VALID),
    (Quality.COMM_LOST | Quality.NOT_TOPICAL, Validity.NOT_VALID),
    (Quality.OPERATOR_BLOCKED | Quality.QUESTIONABLE, Validity.HELD),
    (Quality.BLOCKED, Validity.HELD),
    (Quality.QUESTIONABLE, Validity.SUSPECT),
    (Quality.NOT_TOPICAL, Validity.SUSPECT),
    (Quality.OVERFLOW, Validity.SUSPECT),
])
def test_quality_to_validity(quality: Quality, validity: Validity) -> None:
    assert flags_from_quality(_point(PointKind.ANALOG), quality, 1.0).validity is validity


def test_current_source_normal_value_and_time_quality() -> None:
    a = _point(PointKind.ANALOG, limits=AnalogLimits(lo=10.0, hi=20.0))
    assert flags_from_quality(a, Quality.SUBSTITUTED, 15.0).source is CurrentSource.ENTERED
    assert flags_from_quality(a, Quality.GOOD, 25.0).abnormal
    assert not flags_from_quality(a, Quality.GOOD, 15.0).abnormal
    assert flags_from_quality(a, Quality.TIME_INVALID, 15.0).time_invalid
    se = _point(PointKind.ANALOG, rtu=SE_SOURCE, frontend="calculated")
    assert flags_from_quality(se, Quality.GOOD, 1.0).source is CurrentSource.ESTIMATED
    calc = _point(PointKind.ANALOG, rtu="CALC", frontend="calculated")
    assert flags_from_quality(calc, Quality.GOOD, 1.0).source is CurrentSource.CALCULATED
    cb = _point(PointKind.DOUBLE, state_alarms=(StateAlarm(1, Priority.HIGH, "tripped"),))
    assert flags_from_quality(cb, Quality.GOOD, 1).abnormal and not flags_from_quality(cb, Quality.GOOD, 2).abnormal


def test_to_tase2_values_and_times() -> None:
    cb = _point(PointKind.DOUBLE)
    pv = to_tase2(cb, PointType.DATA_STATE_Q_TIMETAG, 2, Quality.GOOD, T0_MS + 5, now_ms=0)
    assert pv == PointValue(State.ON, DataFlags(), T0_MS + 5)
    sp = _point(PointKind.SINGLE)
    assert to_tase2(sp, PointType.DATA_STATE_Q, 0, Quality.GOOD, -1, now_ms=9).value == State.OFF
    no_time = to_tase2(_point(PointKind.ANALOG), PointType.DATA_REAL_Q_TIMETAG, 1.5, Quality.GOOD, -1, now_ms=T0_MS)
    assert no_time.time_ms == T0_MS and no_time.flags.time_invalid
    nan = to_tase2(_point(PointKind.COUNTER), PointType.DATA_DISCRETE_Q, math.nan, Quality.GOOD, -1, now_ms=0)
    assert nan.flags.validity is Validity.NOT_VALID
    assert to_tase2(_point(PointKind.COUNTER), PointType.DATA_DISCRETE, 41.6, Quality.INVALID, -1, 0) == \
        PointValue(42, DataFlags(), None)  # no flags in the type: nothing to carry
    with pytest.raises(Tase2Error, match="point 'P': a analog point cannot be sent as Data_StateQ"):
        to_tase2(_point(PointKind.ANALOG), PointType.DATA_STATE_Q, 1, Quality.GOOD, -1, 0)


def test_to_tase2_takes_rtdb_rows() -> None:
    rows = new_update_rows(1)
    rows[0] = (0, 2.0, int(Quality.QUESTIONABLE), T0_MS, 3)
    r = rows[0]
    pv = to_tase2(_point(PointKind.DOUBLE), PointType.DATA_STATE_Q_TIMETAG, r["value"], r["quality"],
                  r["source_time_ms"], 0)
    assert pv == PointValue(State.ON, DataFlags(Validity.SUSPECT), T0_MS)
    assert type(pv.time_ms) is int


def test_from_tase2_quality_and_single_points() -> None:
    assert quality_from_flags(DataFlags(Validity.HELD)) == Quality.NOT_TOPICAL
    assert quality_from_flags(DataFlags(Validity.SUSPECT, CurrentSource.ENTERED, time_invalid=True)) == \
        Quality.QUESTIONABLE | Quality.SUBSTITUTED | Quality.TIME_INVALID
    assert quality_from_flags(DataFlags(Validity.NOT_VALID, CurrentSource.ESTIMATED, abnormal=True)) == Quality.INVALID
    sp = _point(PointKind.SINGLE)
    row = from_tase2(sp, PointType.DATA_STATE_Q_TIMETAG, PointValue(State.ON, DataFlags(), T0_MS))
    assert (row.value, row.quality, row.source_time_ms) == (1.0, Quality.GOOD, T0_MS)
    between = from_tase2(sp, PointType.DATA_STATE_Q_TIMETAG, PointValue(State.BETWEEN, DataFlags(), T0_MS), 0.0)
    assert between.value == 0.0 and between.quality & Quality.INVALID
    dp = from_tase2(_point(PointKind.DOUBLE), PointType.DATA_STATE, PointValue(State.BETWEEN))
    assert (dp.value, dp.quality, dp.source_time_ms) == (0.0, Quality.GOOD, -1)


@pytest.mark.parametrize(("quality", "received"), [
    (Quality.GOOD, Quality.GOOD),
    (Quality.INVALID, Quality.INVALID),
    (Quality.COMM_LOST, Quality.INVALID),
    (Quality.QUESTIONABLE | Quality.SUBSTITUTED, Quality.QUESTIONABLE | Quality.SUBSTITUTED),
    (Quality.NOT_TOPICAL, Quality.QUESTIONABLE),  # stale is sent as SUSPECT: the peer cannot tell the cause
    (Quality.OPERATOR_BLOCKED, Quality.NOT_TOPICAL),  # HELD
    (Quality.TIME_INVALID | Quality.SUBSTITUTED, Quality.TIME_INVALID | Quality.SUBSTITUTED),
])
def test_rtdb_round_trip_through_the_wire(quality: Quality, received: Quality) -> None:
    p = _point(PointKind.ANALOG)
    pv = to_tase2(p, PointType.DATA_REAL_Q_TIMETAG_EXT, 12.25, quality, T0_MS + 17, 0)
    back = from_tase2(p, PointType.DATA_REAL_Q_TIMETAG_EXT, decode_point(
        PointType.DATA_REAL_Q_TIMETAG_EXT, unwire(wire(encode_point(PointType.DATA_REAL_Q_TIMETAG_EXT, pv)))))
    assert (back.value, back.quality, back.source_time_ms) == (12.25, received, T0_MS + 17)


# --------------------------------------------------------------------------------------------------- bilateral
def _table(**kw) -> BilateralTable:
    args = dict(
        peer="TSO", table_id="BLT_1", identity=PeerIdentity(ApTitle.parse("1.3.9999.20"), 20), domain="DSO1",
        points=(BilateralPoint("F1_P", "F1-P", PointType.DATA_REAL_Q_TIMETAG),
                BilateralPoint("T1_SP", "T1-SP", PointType.DATA_REAL_Q, writable=True)),
        devices=(BilateralDevice(DeviceDef("F1_CB", ControlKind.COMMAND, sbo=True, tag=False), "F1-CB"),))
    args.update(kw)
    return BilateralTable(**args)


def test_bilateral_access() -> None:
    t = _table()
    assert check_read(t, "F1_P").point == "F1-P"
    assert check_write(t, "T1_SP").writable
    with pytest.raises(AccessDenied, match=r"peer 'TSO': read of 'SS_P' denied: not in its bilateral table"):
        check_read(t, "SS_P")
    with pytest.raises(AccessDenied, match="write of 'F1_P' denied: the point is read-only for this peer"):
        check_write(t, "F1_P")
    with pytest.raises(AccessDenied):
        check_read(t, "F1_P", Scope.VCC)
    assert check_device(t, "F1_CB_SBO", Operation.SELECT).point == "F1-CB"
    with pytest.raises(AccessDenied, match="is for select, not operate"):
        check_device(t, "F1_CB_SBO", Operation.OPERATE)
    with pytest.raises(AccessDenied, match="F1_CB_TAG"):
        check_device(t, "F1_CB_TAG", Operation.TAG)  # tag=False: no tag object
    assert t.names() == ["F1_CB", "F1_CB_SBO", "F1_P", "T1_SP"]
    assert t.names(Scope.VCC) == []


@pytest.mark.parametrize(("kw", "match"), [
    ({"table_id": ""}, "Bilateral_Table_ID"),
    ({"domain": "DSO 1"}, "domain 'DSO 1'"),
    ({"points": (BilateralPoint("A", "x", PointType.DATA_REAL),) * 2}, "'A' listed twice"),
    ({"points": (BilateralPoint("F1_CB_SBO", "x", PointType.DATA_REAL),)}, "F1_CB_SBO' clashes"),
])
def test_bilateral_table_errors(kw: dict, match: str) -> None:
    with pytest.raises(BilateralTableError, match=match):
        _table(**kw)


def test_ap_title_parse() -> None:
    assert str(ApTitle.parse("1.3.9999.20")) == "1.3.9999.20"
    for bad in ("1", "3.1", "1.40.1", "a.b", "1..2"):
        with pytest.raises(BilateralTableError, match="AP title"):
            ApTitle.parse(bad)



def test_standard_object_registry() -> None:
    assert set(VCC_OBJECTS) == {"TASE2_Version", "Supported_Features"}
    assert set(ICC_OBJECTS) == {"Bilateral_Table_ID", "Next_DSTransfer_Set"}
    assert transfer_set_name(1) == "DSTransferSet01" and transfer_set_name(123) == "DSTransferSet123"
    with pytest.raises(Tase2Error, match="must be >= 1"):
        transfer_set_name(0)
