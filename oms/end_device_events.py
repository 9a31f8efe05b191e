"""AMI head-end messages into OMS evidence: IEC 61968-9 ``EndDeviceEvents`` (JSON; the format is documented and
defined in ``models.end_device_events``, shared with the head-end simulator ``rtu_sim.ami_headend``) to and from
``oms.events`` PON/PRN events.

Mapping: EndDeviceEventType ``3.26.0.85`` (electric meter / power / - / failed) <-> ``EventKind.PON``;
``3.26.0.216`` (electric meter / power / - / restored) <-> ``EventKind.PRN``. ``createdDateTime`` (the meter clock)
becomes ``OmsEvent.time_ms``, the header ``Timestamp`` (when the head-end sent it) ``received_ms``, ``Assets.mRID`` the
meter number ``ref``, ``reason`` the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from models.end_device_events import (
    EndDeviceEvent,
    EndDeviceEventCode,
    EndDeviceEvents,
    EndDeviceEventsError,
    format_end_device_events,
    parse_end_device_events,
)
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent

__all__ = ["AmiMessageError", "EndDeviceEvent", "EndDeviceEventCode", "EndDeviceEvents", "format_message",
           "from_oms_events", "oms_events_from_message", "parse_message", "to_oms_events"]

_KIND = {EndDeviceEventCode.POWER_OFF: EventKind.PON, EndDeviceEventCode.POWER_ON: EventKind.PRN}
_CODE = {kind: code for code, kind in _KIND.items()}


class AmiMessageError(OmsError):
    """A malformed EndDeviceEvents message or an event the OMS cannot express in it; names index and field."""


def parse_message(data: Mapping[str, Any] | str | bytes) -> EndDeviceEvents:
    """Parse an EndDeviceEvents message (dict or JSON text); AmiMessageError names the event index and field."""
    try:
        return parse_end_device_events(data)
    except EndDeviceEventsError as exc:
        raise AmiMessageError(str(exc)) from None


def format_message(message: EndDeviceEvents) -> dict[str, Any]:
    """The JSON-ready dict of a message."""
    return format_end_device_events(message)


def to_oms_events(message: EndDeviceEvents) -> list[OmsEvent]:
    """PON/PRN evidence of a parsed message, in message order (duplicates are kept: the predictor dedupes)."""
    return [OmsEvent(ev.created_ms, _KIND[ev.code], ev.meter, ev.reason, message.timestamp_ms)
            for ev in message.events]


def oms_events_from_message(data: Mapping[str, Any] | str | bytes) -> list[OmsEvent]:
    """Parse and map in one step (what an OMS ingest endpoint calls)."""
    return to_oms_events(parse_message(data))


def from_oms_events(events: Iterable[OmsEvent], *, source: str, timestamp_ms: int, message_id: str = "",
                    counts: Mapping[str, int] | None = None) -> EndDeviceEvents:
    """A message of PON/PRN events (e.g. to replay a CSV through the AMI path). ``counts`` gives a meter's power
    off/on count (omitted when absent). AmiMessageError names the index of an event of another kind."""
    out = []
    for i, ev in enumerate(events):
        code = _CODE.get(ev.kind)
        if code is None:
            raise AmiMessageError(f"event[{i}] ({ev.ref}): kind {ev.kind.value!r} has no EndDeviceEvent type "
                                  f"(only {EventKind.PON.value} and {EventKind.PRN.value})")
        count = -1 if counts is None else counts.get(ev.ref, -1)
        out.append(EndDeviceEvent(f"{message_id or source}-{i + 1}", ev.time_ms, code, ev.ref, count, ev.text))
    return EndDeviceEvents(timestamp_ms, source, tuple(out), message_id)
