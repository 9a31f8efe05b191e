"""``dscada reliability OUTAGES.csv --customers N [--history DAILY_SAIDI.csv] [--by feeder] [--served CSV]
[--from DATE] [--to DATE] [--momentary-threshold-s S] [--json] [--report-dir DIR]``: IEEE 1366 indices of a file of
interruption records, with T_MED and Major Event Days when a daily-SAIDI history is given.

The columns of the files are documented in :mod:`oms.reliability_io`; the rules of the indices in
:mod:`oms.reliability`. The period runs from ``--from`` (default: the day of the first record) to ``--to``
inclusive (default: the day of the last record). ``--by`` groups by feeder, substation or division; with ``--served``
(``name,customers_served``) each group uses its own customers served, without it each group's figures are its
contribution to the system indices. ``--report-dir`` writes the daily CSV and PNG charts. Exit 0 with indices, 2 when
a file cannot be read or is malformed (one line on stderr naming the file and line) or the arguments are wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timedelta
from typing import Any

from oms.errors import OmsError
from oms.reliability import (
    DEFAULT_MOMENTARY_THRESHOLD_S,
    GroupBy,
    Indices,
    ReliabilityAssessment,
    ReliabilityOptions,
    assess,
)
from oms.reliability_io import read_customers_served, read_history, read_interruptions

__all__ = ["assessment_data", "main"]

EXIT_OK = 0
EXIT_INVALID = 2


def assessment_data(a: ReliabilityAssessment) -> dict[str, Any]:
    """The assessment as plain JSON-able data (NaN as null)."""
    med = None
    if a.med is not None:
        med = {"alpha": a.med.alpha, "beta": a.med.beta, "t_med_min": a.med.t_med_min,
               "history_days": a.med.history_days, "zero_days_dropped": a.med.zero_days_dropped,
               "history_first_day": a.med.first_day.isoformat() if a.med.first_day else None,
               "history_last_day": a.med.last_day.isoformat() if a.med.last_day else None,
               "major_event_days": [d.isoformat() for d in a.major_event_days]}
    groups = None
    if a.group_by is not None:
        groups = {"by": a.group_by.value, "basis": a.group_basis,
                  "indices": {k: v.to_dict() for k, v in a.groups.items()},
                  "indices_excluding_med": ({k: v.to_dict() for k, v in a.groups_excluding_med.items()}
                                            if a.med is not None else None)}
    return {
        "period": {"start": a.period_start.isoformat(), "end": a.period_end.isoformat(),
                   "hours": a.indices.period_hours},
        "customers_served": a.indices.customers_served,
        "momentary_threshold_s": a.momentary_threshold_s,
        "records": {"total": a.records_total, "planned": a.records_planned},
        "indices": a.indices.to_dict(),
        "indices_excluding_med": a.indices_excluding_med.to_dict() if a.indices_excluding_med else None,
        "planned": a.planned.to_dict(),
        "med": med,
        "groups": groups,
        "feeder_customer_minutes": dict(a.feeder_customer_minutes),
        "daily": [{"date": d.day.isoformat(), "saifi": d.saifi, "saidi_min": d.saidi_min, "maifie": d.maifie,
                   "customer_interruptions": d.customer_interruptions, "customer_minutes": d.customer_minutes,
                   "major_event_day": d.major_event_day} for d in a.daily],
    }


def _fmt(v: float, attr: str) -> str:
    return "-" if v != v else (f"{v:.6f}" if attr == "asai" else f"{v:.4f}")  # v != v: NaN


_COLUMNS = (("SAIFI", "saifi"), ("SAIDI min", "saidi_min"), ("CAIDI min", "caidi_min"), ("CAIFI", "caifi"),
            ("CTAIDI min", "ctaidi_min"), ("ASAI", "asai"), ("MAIFI", "maifi"), ("MAIFIe", "maifie"))


def _print(a: ReliabilityAssessment, report_files: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]IEEE 1366 indices[/bold] {a.period_start:%Y-%m-%d %H:%M} – {a.period_end:%Y-%m-%d %H:%M} "
                  f"({a.indices.period_hours:.0f} h), {a.indices.customers_served} customers served, "
                  f"{a.records_total} records ({a.records_planned} planned, reported apart), momentary ≤ "
                  f"{a.momentary_threshold_s:.0f} s")
    table = Table(title="System")
    table.add_column("set")
    for title, _ in _COLUMNS:
        table.add_column(title, justify="right")
    rows: list[tuple[str, Indices]] = [("unplanned", a.indices)]
    if a.indices_excluding_med is not None:
        rows.append(("unplanned excl. MEDs", a.indices_excluding_med))
    rows.append(("planned", a.planned))
    for label, ix in rows:
        table.add_row(label, *(_fmt(getattr(ix, attr), attr) for _, attr in _COLUMNS))
    console.print(table)
    if a.med is not None:
        days = ", ".join(d.isoformat() for d in a.major_event_days) or "none"
        console.print(f"T_MED = {a.med.t_med_min:.3f} min (α = {a.med.alpha:.4f}, β = {a.med.beta:.4f}, "
                      f"{a.med.history_days} history days, {a.med.zero_days_dropped} zero days dropped); "
                      f"Major Event Days: {days}")
    if a.group_by is not None:
        basis = "own customers served" if a.group_basis == "group" else "contribution to the system indices"
        groups = Table(title=f"By {a.group_by.value} (unplanned, all days; {basis})")
        groups.add_column(a.group_by.value)
        for title, _ in _COLUMNS:
            groups.add_column(title, justify="right")
        for name, ix in a.groups.items():
            groups.add_row(name or "(blank)", *(_fmt(getattr(ix, attr), attr) for _, attr in _COLUMNS))
        console.print(groups)
    for path in report_files:
        console.print(f"report: {path}")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive (got {value})")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada reliability",
                                     description="IEEE 1366 reliability indices from a file of interruption records")
    parser.add_argument("outages", metavar="OUTAGES.csv", help="interruption records (start,end,customers,feeder,...)")
    parser.add_argument("--customers", type=_positive_int, required=True, help="customers served by the system")
    parser.add_argument("--history", metavar="DAILY_SAIDI.csv", help="date,saidi_min of previous years: T_MED and MEDs")
    parser.add_argument("--by", choices=[g.value for g in GroupBy], help="also report per feeder/substation/division")
    parser.add_argument("--served", metavar="CSV", help="name,customers_served of each group (with --by)")
    parser.add_argument("--from", dest="first_day", type=_day, help="first day of the period (YYYY-MM-DD)")
    parser.add_argument("--to", dest="last_day", type=_day, help="last day of the period, inclusive (YYYY-MM-DD)")
    parser.add_argument("--momentary-threshold-s", type=float, default=DEFAULT_MOMENTARY_THRESHOLD_S,
                        help="interruptions up to this long are momentary (default 300 s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--report-dir", metavar="DIR", help="write daily CSV and PNG charts here")
    args = parser.parse_args(argv)
    if args.served and not args.by:
        parser.error("--served needs --by")
    try:
        records = read_interruptions(args.outages)
        history = read_history(args.history) if args.history else None
        served = read_customers_served(args.served) if args.served else None
        start = datetime.combine(args.first_day, time()) if args.first_day else None
        end = datetime.combine(args.last_day + timedelta(days=1), time()) if args.last_day else None
        result = assess(records, args.customers, period_start=start, period_end=end, history=history,
                        group_by=GroupBy(args.by) if args.by else None, group_customers=served,
                        options=ReliabilityOptions(momentary_threshold_s=args.momentary_threshold_s))
        report_files: tuple[str, ...] = ()
        if args.report_dir:
            from oms.reliability_report import write_report

            report_files = tuple(str(p) for p in write_report(result, args.report_dir).all())
    except OmsError as exc:
        print(f"dscada reliability: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada reliability: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        data = assessment_data(result)
        data["report_files"] = list(report_files)
        print(json.dumps(data, indent=2))
    else:
        _print(result, report_files)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
