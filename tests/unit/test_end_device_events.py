"""IEC 61968-9 EndDeviceEvents messages: format/parse round trip, errors that name the field, PON/PRN mapping."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from models.end_device_events import COUNT_DETAIL, EndDeviceEventsError, parse_end_device_events
from oms.end_device_events import (
    AmiMessageError,
    EndDeviceEvent,
    EndDeviceEventCode,
    EndDeviceEvents,
    format_message,
    from_oms_events,
    oms_events_from_message,
    parse_message,
    to_oms_events,
)
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent, parse_time_ms

T0 = parse_time_ms("2026-11-27T03:10:00.500Z")

MESSAGE = EndDeviceEvents(T0 + 31_000, "AMI-HE", (
    EndDeviceEvent("AMI-HE-1", T0, EndDeviceEventCode.POWER_OFF, "170011030001", 3, "last gasp"),
    EndDeviceEvent("AMI-HE-2", T0 + 7, EndDeviceEventCode.POWER_ON, "F1-RMU01-LD-2", 4, "power restored"),
    EndDeviceEvent("AMI-HE-3", T0 + 9, EndDeviceEventCode.POWER_OFF, "170011030002"),
), "AMI-HE-M7")


def test_codes_are_the_iec_61968_9_power_off_and_restored_codes() -> None:
    assert EndDeviceEventCode.POWER_OFF == "3.26.0.85"
    assert EndDeviceEventCode.POWER_ON == "3.26.0.216"
    assert COUNT_DETAIL[EndDeviceEventCode.POWER_OFF] == "PowerOffCount"


def test_round_trip_through_json_text() -> None:
    data = format_message(MESSAGE)
    assert data["Header"] == {"Verb": "created", "Noun": "EndDeviceEvents", "Timestamp": "2026-11-27T03:10:31.500Z",
                              "Source": "AMI-HE", "MessageID": "AMI-HE-M7"}
    first = data["Payload"]["EndDeviceEvents"]["EndDeviceEvent"][0]
    assert first == {"mRID": "AMI-HE-1", "createdDateTime": "2026-11-27T03:10:00.500Z", "reason": "last gasp",
                     "EndDeviceEventType": {"ref": "3.26.0.85"}, "Assets": {"mRID": "170011030001"},
                     "EndDeviceEventDetails": [{"name": "PowerOffCount", "value": "3"}]}
    assert "EndDeviceEventDetails" not in data["Payload"]["EndDeviceEvents"]["EndDeviceEvent"][2]
    assert parse_message(json.dumps(data)) == MESSAGE
    assert parse_message(json.dumps(data).encode()) == MESSAGE


def test_type_key_is_accepted_for_the_code() -> None:
    data = format_message(MESSAGE)
    data["Payload"]["EndDeviceEvents"]["EndDeviceEvent"][1]["EndDeviceEventType"] = {"type": "3.26.0.216"}
    assert parse_message(data).events[1].code is EndDeviceEventCode.POWER_ON


def test_maps_to_pon_and_prn_with_meter_clock_and_receipt_time() -> None:
    events = to_oms_events(MESSAGE)
    assert events == [OmsEvent(T0, EventKind.PON, "170011030001", "last gasp", T0 + 31_000),
                      OmsEvent(T0 + 7, EventKind.PRN, "F1-RMU01-LD-2", "power restored", T0 + 31_000),
                      OmsEvent(T0 + 9, EventKind.PON, "170011030002", "", T0 + 31_000)]
    assert oms_events_from_message(format_message(MESSAGE)) == events


def test_from_oms_events_round_trips_and_refuses_other_kinds() -> None:
    evidence = to_oms_events(MESSAGE)
    message = from_oms_events(evidence, source="REPLAY", timestamp_ms=T0 + 60_000, message_id="R1",
                              counts={"170011030001": 3})
    assert [e.count for e in message.events] == [3, -1, -1]
    assert [(e.time_ms, e.kind, e.ref, e.text) for e in to_oms_events(parse_message(format_message(message)))] == [
        (e.time_ms, e.kind, e.ref, e.text) for e in evidence]
    call = OmsEvent(T0, EventKind.CALL, "170011030009", "no power")
    with pytest.raises(AmiMessageError, match=r"event\[1\] \(170011030009\): kind 'call'"):
        from_oms_events([evidence[0], call], source="REPLAY", timestamp_ms=T0)


def _event_field(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(format_message(MESSAGE))
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


EVENTS = ("Payload", "EndDeviceEvents", "EndDeviceEvent")


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("Header", "Verb"), "changed", r"Header\.Verb: expected 'created'"),
    (("Header", "Noun"), "MeterReadings", r"Header\.Noun"),
    (("Header", "Timestamp"), "yesterday", r"Header\.Timestamp: 'yesterday' is not an ISO 8601 time"),
    (("Header", "Source"), KeyError, r"Header\.Source: expected a non-empty string"),
    (EVENTS, {}, r"Payload\.EndDeviceEvents\.EndDeviceEvent: expected a list"),
    ((*EVENTS, 1), "x", r"EndDeviceEvent\[1\]: expected an object"),
    ((*EVENTS, 2, "Assets", "mRID"), "", r"EndDeviceEvent\[2\]\.Assets\.mRID: expected a non-empty string"),
    ((*EVENTS, 1, "Assets"), KeyError, r"EndDeviceEvent\[1\]\.Assets: expected an object"),
    ((*EVENTS, 0, "mRID"), 5, r"EndDeviceEvent\[0\]\.mRID"),
    ((*EVENTS, 1, "createdDateTime"), "27/11/2026", r"EndDeviceEvent\[1\]\.createdDateTime"),
    ((*EVENTS, 0, "EndDeviceEventType", "ref"), "3.26.0.999",
     r"EndDeviceEvent\[0\]\.EndDeviceEventType\.ref: unknown code '3\.26\.0\.999'"),
    ((*EVENTS, 0, "EndDeviceEventDetails", 0, "value"), "-1",
     r"EndDeviceEvent\[0\]\.EndDeviceEventDetails\[0\]\.value: PowerOffCount must be a non-negative integer"),
    ((*EVENTS, 0, "EndDeviceEventDetails"), "3", r"EndDeviceEvent\[0\]\.EndDeviceEventDetails: expected a list"),
    ((*EVENTS, 1, "reason"), 7, r"EndDeviceEvent\[1\]\.reason"),
])
def test_parse_errors_name_the_event_index_and_field(path: tuple[str | int, ...], value: Any, expected: str) -> None:
    with pytest.raises(AmiMessageError, match=expected) as info:
        parse_message(_event_field(path, value))
    assert isinstance(info.value, OmsError)


def test_parse_rejects_non_json_text() -> None:
    with pytest.raises(AmiMessageError, match="message is not JSON"):
        parse_message("{not json")
    with pytest.raises(EndDeviceEventsError, match="message: expected an object"):
        parse_end_device_events("[1, 2]")
