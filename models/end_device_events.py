"""AMI meter events as an IEC 61968-9 style ``EndDeviceEvents`` message in JSON: the wire format between an AMI
head-end (``rtu_sim.ami_headend``) and the OMS (``oms.end_device_events`` maps it to PON/PRN evidence).

Kept in ``models`` (pure data, no I/O) so the simulator and the OMS share one definition without the simulator
importing ``oms``. The message, an IEC 61968-100 style envelope around the 61968-9 ``EndDeviceEvents`` noun::

    {"Header": {"Verb": "created", "Noun": "EndDeviceEvents", "Timestamp": "2026-11-27T03:10:31.250Z",
                "Source": "AMI-HE", "MessageID": "AMI-HE-42"},
     "Payload": {"EndDeviceEvents": {"EndDeviceEvent": [
        {"mRID": "AMI-HE-42-1", "createdDateTime": "2026-11-27T03:10:00.500Z", "reason": "last gasp",
         "EndDeviceEventType": {"ref": "3.26.0.85"},
         "Assets": {"mRID": "170011030001"},
         "EndDeviceEventDetails": [{"name": "PowerOffCount", "value": "3"}]}]}}}

- ``Header.Timestamp``: when the head-end sent the message (its receipt time of the events); ``createdDateTime``:
  when the meter saw the event, by the meter's clock. Times are ISO 8601 UTC with milliseconds (no offset = UTC).
- ``EndDeviceEventType.ref`` is the IEC 61968-9 (Annex E) four-part code EndDeviceType.EndDeviceDomain.
  EndDeviceSubdomain.EndDeviceEventOrAction: 3 = electric meter, 26 = power, 0 = no subdomain, 85 = failed
  (``3.26.0.85``, power off / last gasp) and 216 = restored (``3.26.0.216``, power on). Parsing also accepts the key
  ``type`` for the code.
- ``Assets.mRID`` is the meter number (= the customer's consumer number; ``<load name>-<k>`` for models without
  usage points). ``EndDeviceEventDetails`` (name/value pairs) carry the meter's power-off count (``PowerOffCount``)
  on a power-off event and its power-on count (``PowerOnCount``) on a power-on event; other details are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from models.errors import ModelError

__all__ = ["COUNT_DETAIL", "EndDeviceEvent", "EndDeviceEventCode", "EndDeviceEvents", "EndDeviceEventsError",
           "format_end_device_events", "parse_end_device_events"]

NOUN = "EndDeviceEvents"
VERB = "created"


class EndDeviceEventsError(ModelError):
    """A malformed EndDeviceEvents message; the text names the event index and field."""


class EndDeviceEventCode(StrEnum):
    """IEC 61968-9 EndDeviceEventType codes this project uses (type.domain.subdomain.event)."""

    POWER_OFF = "3.26.0.85"  # electric meter . power . n/a . failed
    POWER_ON = "3.26.0.216"  # electric meter . power . n/a . restored


COUNT_DETAIL = {EndDeviceEventCode.POWER_OFF: "PowerOffCount", EndDeviceEventCode.POWER_ON: "PowerOnCount"}


@dataclass(frozen=True, slots=True)
class EndDeviceEvent:
    """One meter event; ``count`` is the meter's power-off/on count (-1: not given); times are UTC epoch ms."""

    mrid: str
    created_ms: int
    code: EndDeviceEventCode
    meter: str
    count: int = -1
    reason: str = ""


@dataclass(frozen=True, slots=True)
class EndDeviceEvents:
    """One message: a batch of events sent by ``source`` at ``timestamp_ms``."""

    timestamp_ms: int
    source: str
    events: tuple[EndDeviceEvent, ...]
    message_id: str = ""


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(text: object, where: str) -> int:
    if not isinstance(text, str) or not text.strip():
        raise EndDeviceEventsError(f"{where}: expected an ISO 8601 time, got {text!r}")
    try:
        stamp = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise EndDeviceEventsError(f"{where}: {text!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(round(stamp.timestamp() * 1000))


def format_end_device_events(message: EndDeviceEvents) -> dict[str, Any]:
    """The JSON-ready dict of a message (see the module docstring)."""
    events = []
    for ev in message.events:
        item: dict[str, Any] = {"mRID": ev.mrid, "createdDateTime": _iso(ev.created_ms), "reason": ev.reason,
                                "EndDeviceEventType": {"ref": ev.code.value}, "Assets": {"mRID": ev.meter}}
        if ev.count >= 0:
            item["EndDeviceEventDetails"] = [{"name": COUNT_DETAIL[ev.code], "value": str(ev.count)}]
        events.append(item)
    header = {"Verb": VERB, "Noun": NOUN, "Timestamp": _iso(message.timestamp_ms), "Source": message.source}
    if message.message_id:
        header["MessageID"] = message.message_id
    return {"Header": header, "Payload": {NOUN: {"EndDeviceEvent": events}}}


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise EndDeviceEventsError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _text(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value.strip():
        raise EndDeviceEventsError(f"{where}.{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def parse_end_device_events(data: Mapping[str, Any] | str | bytes) -> EndDeviceEvents:
    """Parse a message (dict or JSON text). EndDeviceEventsError names the field (``EndDeviceEvent[3].Assets.mRID``)
    on any malformed part; unknown event type codes are errors too (this OMS acts only on power off/on)."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise EndDeviceEventsError(f"message is not JSON: {exc}") from None
    root = _mapping(data, "message")
    header = _mapping(root.get("Header"), "Header")
    verb, noun = header.get("Verb"), header.get("Noun")
    if verb != VERB:
        raise EndDeviceEventsError(f"Header.Verb: expected {VERB!r}, got {verb!r}")
    if noun != NOUN:
        raise EndDeviceEventsError(f"Header.Noun: expected {NOUN!r}, got {noun!r}")
    stamp = _ms(header.get("Timestamp"), "Header.Timestamp")
    source = _text(header, "Source", "Header")
    message_id = header.get("MessageID", "")
    if not isinstance(message_id, str):
        raise EndDeviceEventsError(f"Header.MessageID: expected a string, got {message_id!r}")
    payload = _mapping(_mapping(root.get("Payload"), "Payload").get(NOUN), f"Payload.{NOUN}")
    items = payload.get("EndDeviceEvent")
    if not isinstance(items, list):
        raise EndDeviceEventsError(f"Payload.{NOUN}.EndDeviceEvent: expected a list, got {type(items).__name__}")
    return EndDeviceEvents(stamp, source, tuple(_event(item, f"EndDeviceEvent[{i}]") for i, item in enumerate(items)),
                           message_id)


def _event(item: object, where: str) -> EndDeviceEvent:
    obj = _mapping(item, where)
    mrid = _text(obj, "mRID", where)
    created = _ms(obj.get("createdDateTime"), f"{where}.createdDateTime")
    type_obj = _mapping(obj.get("EndDeviceEventType"), f"{where}.EndDeviceEventType")
    code_text = type_obj.get("ref", type_obj.get("type"))
    try:
        code = EndDeviceEventCode(code_text)
    except ValueError:
        raise EndDeviceEventsError(f"{where}.EndDeviceEventType.ref: unknown code {code_text!r} (expected one of "
                                   f"{', '.join(EndDeviceEventCode)})") from None
    meter = _text(_mapping(obj.get("Assets"), f"{where}.Assets"), "mRID", f"{where}.Assets")
    reason = obj.get("reason", "")
    if not isinstance(reason, str):
        raise EndDeviceEventsError(f"{where}.reason: expected a string, got {reason!r}")
    count = -1
    details = obj.get("EndDeviceEventDetails", [])
    if not isinstance(details, list):
        raise EndDeviceEventsError(f"{where}.EndDeviceEventDetails: expected a list, got {type(details).__name__}")
    for k, detail in enumerate(details):
        d = _mapping(detail, f"{where}.EndDeviceEventDetails[{k}]")
        if d.get("name") == COUNT_DETAIL[code]:
            value = d.get("value")
            try:
                count = int(str(value))
            except ValueError:
                count = -2
            if count < 0:
                raise EndDeviceEventsError(f"{where}.EndDeviceEventDetails[{k}].value: {COUNT_DETAIL[code]} must be "
                                           f"a non-negative integer, got {value!r}")
    return EndDeviceEvent(mrid, created, code, meter, count, reason.strip())
