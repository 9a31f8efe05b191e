"""CSV files of the reliability tools; every error names the file and the line.

Interruption records (``OUTAGES.csv``), one interruption per line, header required:

=================== ========= ===========================================================================
column              required  meaning
=================== ========= ===========================================================================
start               yes       ISO 8601 time supply was lost (``2025-03-01T14:05:00``)
end                 yes       ISO 8601 time supply came back; not before ``start``
customers           yes*      customers interrupted (integer ≥ 0); *may be left out when customer_ids is given
feeder              no        feeder name (grouping, worst-feeder chart)
substation          no        substation name (grouping)
division            no        division / district name (grouping)
planned             no        ``true``/``false`` (also yes/no, 1/0, empty = false); planned ones are reported apart
cause               no        free text
event_id            no        reclosing sequence: its momentary interruptions are one MAIFIe event
customer_ids        no        ids of the customers interrupted, separated by ``;`` (exact CAIFI/CTAIDI)
distinct_customers  no        customers of this record not interrupted earlier in the period (for CAIFI)
id, notes           no        kept for the reader, ignored
=================== ========= ===========================================================================

Times without a UTC offset are the utility's clock (days cut at its midnight); times with an offset are converted
to UTC. One file must not mix both.

Daily SAIDI history (``--history``): columns ``date,saidi_min``, one line per day (days without interruptions as 0
or left out: both are dropped by the 2.5β method). Customers served per group (``--served``): columns
``name,customers_served``.
"""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

from oms.errors import OmsError
from oms.med import MedThreshold, med_threshold
from oms.reliability import Interruption, ReliabilityError

__all__ = ["INTERRUPTION_COLUMNS", "InputFileError", "read_customers_served", "read_daily_saidi", "read_history",
           "read_interruptions"]

INTERRUPTION_COLUMNS = ("start", "end", "customers", "feeder", "substation", "division", "planned", "cause",
                        "event_id", "customer_ids", "distinct_customers", "id", "notes")
_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f", ""}


class InputFileError(ReliabilityError):
    """A reliability input file is unreadable or malformed; the message is ``FILE:LINE: problem``."""


def _rows(path: Path, required: tuple[str, ...], allowed: tuple[str, ...]):
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if not header:
            raise InputFileError(f"{path}:1: empty file (expected a header with {', '.join(required)})")
        unknown = [h for h in header if h not in allowed]
        if unknown:
            raise InputFileError(f"{path}:1: unknown column {', '.join(repr(u) for u in unknown)} "
                                 f"(known: {', '.join(allowed)})")
        missing = [c for c in required if c not in header]
        if missing:
            raise InputFileError(f"{path}:1: missing column {', '.join(repr(m) for m in missing)}")
        reader.fieldnames = header
        for row in reader:
            if None in row:
                raise InputFileError(f"{path}:{reader.line_num}: more fields than columns in the header")
            values = {k: (v or "").strip() for k, v in row.items()}
            if not any(values.values()):
                continue
            yield reader.line_num, values


def _time(text: str, column: str, where: str) -> datetime:
    if not text:
        raise InputFileError(f"{where}: {column} is empty (an interruption still going on cannot be counted yet)")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InputFileError(f"{where}: {column} {text!r} is not an ISO 8601 time") from None
    return t


def _int(text: str, column: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputFileError(f"{where}: {column} {text!r} is not an integer") from None
    if value < 0:
        raise InputFileError(f"{where}: {column} must not be negative (got {value})")
    return value


def read_interruptions(path: str | Path) -> list[Interruption]:
    """The records of an OUTAGES.csv (see the module documentation for the columns)."""
    path = Path(path)
    out: list[Interruption] = []
    aware: bool | None = None
    for line, row in _rows(path, ("start", "end"), INTERRUPTION_COLUMNS):
        where = f"{path}:{line}"
        start, end = _time(row["start"], "start", where), _time(row["end"], "end", where)
        for t in (start, end):
            if aware is None:
                aware = t.tzinfo is not None
            elif aware != (t.tzinfo is not None):
                raise InputFileError(f"{where}: times with and without a UTC offset are mixed in one file")
        if aware:
            start = start.astimezone(UTC).replace(tzinfo=None)
            end = end.astimezone(UTC).replace(tzinfo=None)
        ids = tuple(i.strip() for i in row.get("customer_ids", "").split(";") if i.strip())
        if row.get("customers"):
            customers = _int(row["customers"], "customers", where)
        elif ids:
            customers = len(ids)
        else:
            raise InputFileError(f"{where}: customers is empty (give the count or customer_ids)")
        planned_text = row.get("planned", "").lower()
        if planned_text not in _TRUE | _FALSE:
            raise InputFileError(f"{where}: planned {row['planned']!r} is not true/false")
        distinct = row.get("distinct_customers", "")
        try:
            out.append(Interruption(
                start=start, end=end, customers=customers, feeder=row.get("feeder", ""),
                substation=row.get("substation", ""), division=row.get("division", ""),
                planned=planned_text in _TRUE, cause=row.get("cause", ""), event_id=row.get("event_id", ""),
                customer_ids=ids,
                distinct_customers=_int(distinct, "distinct_customers", where) if distinct else -1))
        except ReliabilityError as exc:
            raise InputFileError(f"{where}: {exc}") from None
    return out


def read_history(path: str | Path) -> MedThreshold:
    """T_MED from a ``date,saidi_min`` file of daily SAIDI."""
    seen = read_daily_saidi(path)
    days = sorted(seen)
    try:
        return med_threshold([seen[d] for d in days], days)
    except OmsError as exc:  # too few non-zero days
        raise InputFileError(f"{path}: {exc}") from None


def read_daily_saidi(path: str | Path) -> dict[date, float]:
    """The days and SAIDI values (minutes) of a ``date,saidi_min`` file of daily SAIDI, validated."""
    path = Path(path)
    seen: dict[date, float] = {}
    for line, row in _rows(path, ("date", "saidi_min"), ("date", "saidi_min")):
        where = f"{path}:{line}"
        try:
            day = date.fromisoformat(row["date"])
        except ValueError:
            raise InputFileError(f"{where}: date {row['date']!r} is not an ISO date (YYYY-MM-DD)") from None
        try:
            value = float(row["saidi_min"])
        except ValueError:
            raise InputFileError(f"{where}: saidi_min {row['saidi_min']!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise InputFileError(f"{where}: saidi_min must be a finite number ≥ 0 (got {row['saidi_min']})")
        if day in seen:
            raise InputFileError(f"{where}: date {day} appears twice")
        seen[day] = value
    return seen


def read_customers_served(path: str | Path) -> dict[str, int]:
    """Customers served per group from a ``name,customers_served`` file."""
    path = Path(path)
    out: dict[str, int] = {}
    for line, row in _rows(path, ("name", "customers_served"), ("name", "customers_served")):
        where = f"{path}:{line}"
        value = _int(row["customers_served"], "customers_served", where)
        if value == 0:
            raise InputFileError(f"{where}: customers_served of {row['name']!r} must be positive")
        if row["name"] in out:
            raise InputFileError(f"{where}: {row['name']!r} appears twice")
        out[row["name"]] = value
    return out
