"""Outage evidence as the OMS receives it: AMI last-gasp (PON) and restoration (PRN) notifications, customer trouble
calls and SCADA switch changes, plus the replay CSV format of ``dscada oms replay``.

Replay CSV (UTF-8, header row, one event per row)::

    time,kind,id,text[,received]
    2026-11-27T03:10:00.500Z,pon,170011030001,
    2026-11-27T03:10:02Z,call,170011030007,no power since 3:10
    2026-11-27T03:10:00Z,scada_open,F1-CB,
    2026-11-27T03:55:00Z,prn,170011030001,

``time`` is when the event happened, stamped by its source (meter, call centre, RTU): ISO 8601 (no offset = UTC) or
an integer of epoch milliseconds. ``kind`` is one of ``pon``, ``prn``, ``call``, ``scada_open``, ``scada_close``,
``ping_off``, ``ping_on`` (the OMS's own meter reads).
``id`` is the meter number (= the customer's consumer number, the CIM UsagePoint name; for models without usage
points ``<load name>-<k>``, k = 1..customer_count) for pon/prn/call/ping, and the switch name or mRID for scada events.
``text`` is free (the caller's description); ``received`` (optional) is when the head-end got the event: when it
differs from ``time`` by more than the predictor's clock-skew limit, the meter clock is taken as wrong.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from oms.errors import OmsError

__all__ = ["EventKind", "OmsEvent", "format_time_ms", "parse_time_ms", "read_events_csv", "write_events_csv"]

CSV_COLUMNS = ("time", "kind", "id", "text", "received")


class EventKind(StrEnum):
    PON = "pon"  # power outage notification (meter last gasp)
    PRN = "prn"  # power restoration notification
    CALL = "call"  # customer trouble call (no supply)
    SCADA_OPEN = "scada_open"  # telemetered switch opened (trip or operation)
    SCADA_CLOSE = "scada_close"
    PING_OFF = "ping_off"  # instantaneous meter read by the OMS: meter dead (oms.meter_ping)
    PING_ON = "ping_on"  # instantaneous meter read by the OMS: meter energised


@dataclass(frozen=True, slots=True)
class OmsEvent:
    """One piece of evidence. ``ref`` is a meter/customer number or a switch name/mRID; times are UTC epoch ms;
    ``received_ms`` is -1 when the source gave no receipt time."""

    time_ms: int
    kind: EventKind
    ref: str
    text: str = ""
    received_ms: int = -1


def parse_time_ms(text: str) -> int:
    """Epoch ms from ISO 8601 (naive = UTC) or an integer of epoch ms; ValueError naming the text otherwise."""
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"time {text!r} is neither ISO 8601 nor epoch milliseconds") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(round(stamp.timestamp() * 1000))


def format_time_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds, the form the CLI prints."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_events_csv(path: str | Path) -> list[OmsEvent]:
    """Read a replay CSV (see the module docstring). Raises OmsError naming the file, line and field."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("time", "kind", "id") if c not in (reader.fieldnames or ())]
            if missing:
                raise OmsError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(CSV_COLUMNS)})")
            events = []
            for line, row in enumerate(reader, start=2):
                events.append(_row_event(path, line, row))
    except OSError as exc:
        raise OmsError(f"{path}: cannot read events: {exc.strerror or exc}") from exc
    return events


def _row_event(path: Path, line: int, row: dict[str, str | None]) -> OmsEvent:
    kind_text = (row.get("kind") or "").strip().lower()
    try:
        kind = EventKind(kind_text)
    except ValueError:
        raise OmsError(f"{path}:{line}: unknown kind {kind_text!r} (expected one of {', '.join(EventKind)})") from None
    ref = (row.get("id") or "").strip()
    if not ref:
        raise OmsError(f"{path}:{line}: empty id")
    try:
        time_ms = parse_time_ms(row.get("time") or "")
        received = (row.get("received") or "").strip()
        received_ms = parse_time_ms(received) if received else -1
    except ValueError as exc:
        raise OmsError(f"{path}:{line}: {exc}") from None
    return OmsEvent(time_ms, kind, ref, (row.get("text") or "").strip(), received_ms)


def write_events_csv(path: str | Path, events: Iterable[OmsEvent]) -> Path:
    """Write events in the replay format (ISO times); returns the path."""
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for ev in events:
            writer.writerow((format_time_ms(ev.time_ms), ev.kind.value, ev.ref, ev.text,
                             format_time_ms(ev.received_ms) if ev.received_ms >= 0 else ""))
    return path
