"""``dscada oms replay EVENTS.csv --model FILE [--window-s S] [--json]``: replay AMI, call and SCADA events against a
network model and print the predicted outages, single lights out and their timelines.

Events (format in ``oms.events``) are fed to the predictor in windows of ``--window-s`` seconds of event time, and
predictions are updated after each window, as the OMS does with a live feed. Exit status: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from models.errors import ModelError
from oms.connectivity import build_connectivity
from oms.errors import OmsError
from oms.events import OmsEvent, format_time_ms, read_events_csv
from oms.prediction import IngestReport, OutagePredictor, Outcome, Prediction, PredictionRules, SingleLightOut

__all__ = ["main", "replay"]


def replay(predictor: OutagePredictor, events: list[OmsEvent], window_s: float) -> list[IngestReport]:
    """Feed ``events`` (any order) in windows of event time; analyse after each. Returns the per-window reports."""
    if window_s <= 0:
        raise OmsError(f"window must be > 0 s (got {window_s})")
    ordered = sorted(events, key=lambda e: e.time_ms)
    reports = []
    width = int(window_s * 1000)
    i = 0
    while i < len(ordered):
        end = ordered[i].time_ms + width
        j = i
        while j < len(ordered) and ordered[j].time_ms < end:
            j += 1
        reports.append(predictor.ingest(ordered[i:j]))
        predictor.analyse(end)
        i = j
    return reports


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dscada oms", description="outage management tools")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="replay AMI/call/SCADA events and print predicted outages and SLOs")
    r.add_argument("events", help="CSV with columns time,kind,id,text[,received] (kind: pon|prn|call|scada_open|"
                                  "scada_close)")
    r.add_argument("--model", required=True, help="CIM network model (RDF/XML, .gz accepted)")
    r.add_argument("--window-s", type=float, default=60.0, help="analyse after each window of event time (60)")
    r.add_argument("--min-meters", type=int, default=PredictionRules().min_meters)
    r.add_argument("--min-share", type=float, default=PredictionRules().min_share,
                   help="share of a device's customers that must report (0.3)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from models.cim import load_cim

        started = time.perf_counter()
        try:
            model = load_cim(args.model)
        except OSError as exc:
            raise OmsError(f"{args.model}: cannot read the model: {exc.strerror or exc}") from exc
        events = read_events_csv(args.events)
        rules = PredictionRules(min_meters=args.min_meters, min_share=args.min_share)
        predictor = OutagePredictor(build_connectivity(model), rules)
        t0 = time.perf_counter()
        replay(predictor, events, args.window_s)
        predictions, slos = predictor.predictions(), predictor.slos()
        replay_s = time.perf_counter() - t0
    except OmsError as exc:
        print(f"dscada oms: {exc}", file=sys.stderr)
        return 2
    except ModelError as exc:
        print(f"dscada oms: {args.model}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc = {
            "model": model.name, "events": len(events),
            "outcomes": {k.value: v for k, v in predictor.counts.items()},
            "clock_corrected": predictor.clock_corrected, "presumed_restored": predictor.presumed_restored,
            "not_applied": [{"time_ms": e.time_ms, "kind": e.kind.value, "id": e.ref, "outcome": o.value}
                            for e, o in predictor.not_applied],
            "predictions": [asdict(p) for p in predictions], "slos": [asdict(s) for s in slos],
            "replay_s": round(replay_s, 4), "total_s": round(time.perf_counter() - started, 4),
        }
        print(json.dumps(doc, indent=1, default=str))
        return 0
    _print_text(Path(args.events).name, model.name, len(events), predictor, predictions, slos, replay_s)
    return 0


def _print_text(source: str, model: str, n_events: int, predictor: OutagePredictor, predictions: list[Prediction],
                slos: list[SingleLightOut], replay_s: float) -> None:
    outcomes = ", ".join(f"{k.value} {v}" for k, v in predictor.counts.items() if v)
    print(f"{source}: {n_events} events against {model} in {replay_s * 1000:.0f} ms ({outcomes})")
    if predictor.clock_corrected:
        print(f"  {predictor.clock_corrected} event(s) re-stamped with the head-end receipt time (clock skew)")
    unknown = sorted({e.ref for e, o in predictor.not_applied if o is Outcome.UNKNOWN})
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        print(f"  unknown ids ({len(unknown)}): {shown}")
    print(f"\nPredicted outages ({len(predictions)}):")
    print(f"  {'id':<5} {'device':<16} {'kind':<13} {'feeder':<7} {'state':<10} {'affected':>8} {'off':>6} "
          f"{'PONs':>6} {'calls':>5} {'PRNs':>5}  first event")
    for p in predictions:
        print(f"  {p.id:<5} {p.device:<16} {p.device_kind:<13} {p.feeder or '-':<7} {p.state.value:<10} "
              f"{p.customers_affected:>8} {p.customers_off:>6} {p.pons:>6} {p.calls:>5} {p.prns:>5}  "
              f"{format_time_ms(p.first_event_ms)}")
    print(f"\nSingle lights out ({len(slos)}):")
    for s in slos:
        print(f"  {s.id:<5} meter {s.meter:<14} {s.dt:<16} {s.state.value:<9} PONs {s.pons} calls {s.calls}  "
              f"{format_time_ms(s.first_event_ms)}")
    print("\nTimelines:")
    for rec in [*predictions, *slos]:
        label = rec.device if isinstance(rec, Prediction) else f"meter {rec.meter}"
        print(f"  {rec.id} {label}")
        for entry in rec.timeline:
            print(f"    {format_time_ms(entry.time_ms)}  {entry.state:<10} off {entry.customers_off:>5}  {entry.note}")


if __name__ == "__main__":
    sys.exit(main())
