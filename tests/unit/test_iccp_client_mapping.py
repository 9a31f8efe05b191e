"""TASE.2 client, no sockets: imported point map, report decoding (both report shapes), causes, quality and time,
data-set splitting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from open61850.data import FloatData

from iccp.mms.client_codec import InformationReport
from iccp.mms.codec import DataAccessCode, ObjectName, VariableSpec
from iccp.tase2.client import HEADER_NAMES, ImportMap, Tase2Client, Tase2ClientError, _DataSet, data_set_names
from iccp.tase2.model import (
    CurrentSource,
    DataFlags,
    DSConditions,
    FlagsLayout,
    PointType,
    PointValue,
    Scope,
    State,
    TransferReportHeader,
    Validity,
    encode_point,
)
from iccp.tase2.model import (
    ObjectName as Tase2Name,
)
from models.config import StationConfig, parse_station_config
from models.points import Quality
from models.updates import Cause

T_MS = 1_795_000_123_000

STATION = """
[station]
name = "t"

[iccp]
ap_title = "1.3.9999.10"

[[iccp.remotes]]
name = "TSO"
addresses = ["127.0.0.1:10202"]
ap_title = "1.3.9999.20"
domain = "D"
bilateral_table_id = "BLT"
flags_layout = "{layout}"

[[points]]
name = "F"
kind = "analog"
rtu = "TSO"
reference = "FREQ"

[[points]]
name = "CB"
kind = "double"
rtu = "TSO"
reference = "CB"
type = "Data_StateQTimeTag"

[[points]]
name = "ALARM"
kind = "single"
rtu = "TSO"
reference = "ALM"
type = "Data_StateQ"

[[points]]
name = "MWH"
kind = "counter"
rtu = "TSO"
reference = "MWH"
type = "Data_DiscreteQTimeTagExtended"
"""


def _config(layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> StationConfig:
    return parse_station_config(STATION.format(layout=layout.value), "station.toml")


def _map(layout: FlagsLayout = FlagsLayout.MSB_FIRST) -> tuple[ImportMap, dict[str, int]]:
    config = _config(layout)
    assert config.iccp is not None
    points = config.points_of_rtu("TSO")
    return ImportMap(config.iccp.remote("TSO"), points), {p.source.reference: p.id for p in points}


@pytest.mark.parametrize("layout", list(FlagsLayout))
def test_values_quality_and_time_in_either_flags_layout(layout: FlagsLayout) -> None:
    m, ids = _map(layout)
    assert m.names == ("FREQ", "CB", "ALM", "MWH")
    enc = encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(49.9, DataFlags(Validity.HELD), T_MS), layout=layout)
    (row,) = m.rows("FREQ", enc, Cause.SPONTANEOUS)
    assert (row.point, row.value, row.source_time_ms, row.cause) == (ids["FREQ"], pytest.approx(49.9), T_MS,
                                                                     Cause.SPONTANEOUS)
    assert row.quality == int(Quality.NOT_TOPICAL)  # HELD: the source no longer refreshes it
    enc = encode_point(PointType.DATA_STATE_Q_TIMETAG,
                       PointValue(State.OFF, DataFlags(source=CurrentSource.ENTERED, time_invalid=True), T_MS),
                       layout=layout)
    (row,) = m.rows("CB", enc, Cause.INTERROGATED)
    assert (row.value, row.quality) == (State.OFF, int(Quality.SUBSTITUTED | Quality.TIME_INVALID))
    enc = encode_point(PointType.DATA_DISCRETE_Q_TIMETAG_EXT, PointValue(77, DataFlags(), T_MS + 999),
                       layout=layout)
    (row,) = m.rows("MWH", enc, Cause.PERIODIC)
    assert (row.value, row.quality, row.source_time_ms) == (77.0, 0, T_MS + 999)


def test_single_point_state_and_invalid_values_keep_the_last_value() -> None:
    m, ids = _map()
    on = encode_point(PointType.DATA_STATE_Q, PointValue(State.ON, DataFlags()))
    (row,) = m.rows("ALM", on, Cause.SPONTANEOUS)
    assert (row.value, row.quality, row.source_time_ms) == (1.0, 0, -1)
    between = encode_point(PointType.DATA_STATE_Q, PointValue(State.BETWEEN, DataFlags()))
    (row,) = m.rows("ALM", between, Cause.SPONTANEOUS)
    assert row.value == 1.0 and row.quality & Quality.INVALID  # no 0/1 for BETWEEN: last value, INVALID
    (row,) = m.rows("ALM", DataAccessCode.OBJECT_ACCESS_DENIED, Cause.SPONTANEOUS)
    assert row.value == 1.0 and row.quality == int(Quality.INVALID)
    (row,) = m.rows("FREQ", FloatData(1.0), Cause.SPONTANEOUS)  # a bare float where a structure is due
    assert math.isnan(row.value) and row.quality == int(Quality.INVALID)
    assert m.rows("NOT_IMPORTED", FloatData(1.0), Cause.SPONTANEOUS) == []


@pytest.mark.parametrize(("conditions", "cause"), [
    (DSConditions.INTEGRITY | DSConditions.CHANGE, Cause.INTERROGATED),
    (DSConditions.INTERVAL, Cause.PERIODIC),
    (DSConditions.CHANGE, Cause.SPONTANEOUS),
])
def test_report_cause_follows_the_conditions_detected(conditions: DSConditions, cause: Cause) -> None:
    m, ids = _map()
    header = TransferReportHeader(Tase2Name(Scope.ICC, "D", "DSTransferSet03"), T_MS // 1000, conditions).encode()
    members: list[tuple[str, Any]] = list(header.items())
    members.append(("FREQ", encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(50.0, DataFlags(), T_MS))))
    got, rows = m.report_rows(members)
    assert got is not None and got.transfer_set.name == "DSTransferSet03" and got.conditions == conditions
    assert [(r.point, r.cause) for r in rows] == [(ids["FREQ"], cause)]


def test_report_without_header_is_spontaneous() -> None:
    m, _ = _map()
    header, rows = m.report_rows([("FREQ", encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(50.0)))])
    assert header is None and rows[0].cause == Cause.SPONTANEOUS


def test_data_sets_are_split_by_the_configured_size() -> None:
    names = [f"P{i}" for i in range(10)]
    sets = data_set_names(names, 8)  # room for 4 points after the 4 header members
    assert [n for n, _ in sets] == ["DSCADA_DS01", "DSCADA_DS02", "DSCADA_DS03"]
    assert all(members[:4] == HEADER_NAMES and len(members) <= 8 for _, members in sets)
    assert [m for _, members in sets for m in members[4:]] == names
    assert [len(m) for _, m in data_set_names(names, 5, header=False)] == [5, 5]
    with pytest.raises(Tase2ClientError, match="no room"):
        data_set_names(names, 4)


class _Sink:
    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.counters: dict[str, float] = {}
        self.interrogated = 0

    def on_rows(self, remote: str, rows: Sequence[Any]) -> None:
        self.rows.extend(rows)

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        pass

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        self.interrogated += 1

    def count(self, name: str, n: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + n


def test_both_report_shapes_reach_the_sink() -> None:
    config = _config()
    assert config.iccp is not None
    sink = _Sink()
    client = Tase2Client(config.iccp.remote("TSO"), config.iccp.identity, config.points_of_rtu("TSO"), sink)
    ds = ObjectName.in_domain("D", "DSCADA_DS01")
    client.data_sets = [_DataSet(ds, (*HEADER_NAMES, "FREQ", "MWH"))]
    client._ds_by_name = {ds: client.data_sets[0]}
    header = TransferReportHeader(Tase2Name(Scope.ICC, "D", "DSTransferSet01"), T_MS // 1000,
                                  DSConditions.INTERVAL).encode()
    freq = encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(50.1, DataFlags(), T_MS))
    mwh = encode_point(PointType.DATA_DISCRETE_Q_TIMETAG_EXT, PointValue(5, DataFlags(), T_MS))
    # on the data set name: every member in order
    client._on_report(InformationReport(ds, (), (*header.values(), freq, mwh)))
    assert [(r.value, r.cause) for r in sink.rows] == [(pytest.approx(50.1), Cause.PERIODIC), (5.0, Cause.PERIODIC)]
    # a wrong member count cannot be placed: counted, nothing delivered
    client._on_report(InformationReport(ds, (), (freq,)))
    assert sink.counters["reports_unknown"] == 1 and len(sink.rows) == 2
    # a list of variables: the members carried, each named
    variables = tuple(VariableSpec(ObjectName.in_domain("D", n)) for n in ("Transfer_Set_Name", "FREQ"))
    client._on_report(InformationReport(None, variables, (header["Transfer_Set_Name"], freq)))
    assert sink.rows[-1].cause == Cause.SPONTANEOUS and sink.rows[-1].value == pytest.approx(50.1)
    assert sink.counters["reports"] == 2


def test_integrity_reports_of_every_transfer_set_confirm_all_points() -> None:
    config = _config()
    assert config.iccp is not None
    sink = _Sink()
    client = Tase2Client(config.iccp.remote("TSO"), config.iccp.identity, config.points_of_rtu("TSO"), sink)
    sets = [ObjectName.in_domain("D", n) for n in ("DSCADA_DS01", "DSCADA_DS02")]
    client.data_sets = [_DataSet(sets[0], (*HEADER_NAMES, "FREQ"), ObjectName.in_domain("D", "DSTransferSet01")),
                        _DataSet(sets[1], (*HEADER_NAMES, "MWH"), ObjectName.in_domain("D", "DSTransferSet02"))]
    client._ds_by_name = {d.name: d for d in client.data_sets}
    freq = encode_point(PointType.DATA_REAL_Q_TIMETAG, PointValue(50.1, DataFlags(), T_MS))
    mwh = encode_point(PointType.DATA_DISCRETE_Q_TIMETAG_EXT, PointValue(5, DataFlags(), T_MS))

    def report(ts: str, cond: DSConditions, ds: ObjectName, value: Any) -> None:
        header = TransferReportHeader(Tase2Name(Scope.ICC, "D", ts), T_MS // 1000, cond).encode()
        client._on_report(InformationReport(ds, (), (*header.values(), value)))

    report("DSTransferSet01", DSConditions.INTEGRITY, sets[0], freq)
    report("DSTransferSet01", DSConditions.INTEGRITY, sets[0], freq)
    report("DSTransferSet02", DSConditions.INTERVAL, sets[1], mwh)
    assert sink.interrogated == 0  # the second data set was not refreshed by an integrity report yet
    report("DSTransferSet02", DSConditions.INTEGRITY, sets[1], mwh)
    assert sink.interrogated == 1
    assert [r.cause for r in sink.rows] == [Cause.INTERROGATED, Cause.INTERROGATED, Cause.PERIODIC,
                                            Cause.INTERROGATED]
