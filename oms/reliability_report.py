"""Daily reliability report: CSV tables and PNG charts (matplotlib's Agg canvas, no display, no global pyplot state).

Files written to the report folder:

- ``daily_indices.csv``: date, saifi, saidi_min, maifie, customer_interruptions, customer_minutes, major_event_day,
  t_med_min (empty without a history);
- ``feeders.csv``: feeder, customer_minutes, saidi_contribution_min (the feeder's share of the system SAIDI);
- ``daily_saidi.png``: daily SAIDI against T_MED, Major Event Days in red;
- ``worst_feeders.png``: the feeders with the largest SAIDI contribution.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from oms.reliability import DailyIndices, ReliabilityAssessment

__all__ = ["ReportFiles", "WORST_FEEDERS", "write_report"]

WORST_FEEDERS = 10


@dataclass(frozen=True, slots=True)
class ReportFiles:
    daily_csv: Path
    feeders_csv: Path
    daily_png: Path
    feeders_png: Path

    def all(self) -> tuple[Path, ...]:
        return (self.daily_csv, self.feeders_csv, self.daily_png, self.feeders_png)


def write_report(assessment: ReliabilityAssessment, out_dir: str | Path, *,
                 trend: Sequence[DailyIndices] | None = None) -> ReportFiles:
    """``trend``: the daily rows of the CSV and chart when they are not the assessment's own days (the server's
    daily report shows the last weeks of its daily history around a one-day assessment)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(out / "daily_indices.csv", out / "feeders.csv", out / "daily_saidi.png",
                        out / "worst_feeders.png")
    t_med = assessment.med.t_med_min if assessment.med is not None else None
    daily = assessment.daily if trend is None else tuple(trend)
    with files.daily_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["date", "saifi", "saidi_min", "maifie", "customer_interruptions", "customer_minutes",
                    "major_event_day", "t_med_min"])
        for d in daily:
            w.writerow([d.day.isoformat(), f"{d.saifi:.6f}", f"{d.saidi_min:.4f}", f"{d.maifie:.6f}",
                        d.customer_interruptions, f"{d.customer_minutes:.1f}", "true" if d.major_event_day else "false",
                        "" if t_med is None else f"{t_med:.4f}"])
    nt = assessment.indices.customers_served
    feeders = list(assessment.feeder_customer_minutes.items())
    with files.feeders_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["feeder", "customer_minutes", "saidi_contribution_min"])
        for name, cmi in feeders:
            w.writerow([name or "(blank)", f"{cmi:.1f}", f"{cmi / nt:.4f}"])
    _daily_chart(assessment, daily, files.daily_png)
    _feeder_chart(feeders[:WORST_FEEDERS], nt, files.feeders_png)
    return files


def _daily_chart(assessment: ReliabilityAssessment, daily: Sequence[DailyIndices], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    days = [d.day for d in daily]
    colours = ["tab:red" if d.major_event_day else "tab:blue" for d in daily]
    ax.bar(days, [d.saidi_min for d in daily], color=colours, width=0.8)
    if assessment.med is not None:
        ax.axhline(assessment.med.t_med_min, color="tab:red", linestyle="--",
                   label=f"T_MED = {assessment.med.t_med_min:.2f} min")
        ax.legend(loc="upper right")
    if days:  # whole days on the axis (the automatic locator picks hours for a short period)
        from matplotlib.dates import AutoDateLocator, DateFormatter, DayLocator

        span = (days[-1] - days[0]).days + 1
        ax.xaxis.set_major_locator(DayLocator(interval=max(1, span // 12)) if span <= 62
                                   else AutoDateLocator(minticks=4, maxticks=12))
        ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))
        ax.set_xlim(days[0] - timedelta(days=1), days[-1] + timedelta(days=1))
    ax.set_ylabel("daily SAIDI (min)")
    first = daily[0].day if daily else assessment.period_start.date()
    last = daily[-1].day if daily else assessment.period_start.date()
    ax.set_title(f"Daily SAIDI {first} – {last} (Major Event Days: {sum(d.major_event_day for d in daily)})")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)


def _feeder_chart(feeders: list[tuple[str, float]], customers_served: int, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = [n or "(blank)" for n, _ in feeders][::-1]
    ax.barh(names, [c / customers_served for _, c in feeders][::-1], color="tab:orange")
    ax.set_xlabel("contribution to system SAIDI (min)")
    ax.set_title(f"Worst {len(feeders)} feeders (unplanned sustained interruptions)" if feeders
                 else "No sustained interruptions")
    fig.tight_layout()
    fig.savefig(path)
