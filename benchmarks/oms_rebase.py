"""OMS connectivity rebuild after a reconfiguration: how long the check, the rebuild and the predictor rebase take.

    python benchmarks/oms_rebase.py --json benchmarks/results/oms_rebase.json

Per network (sample network, the sample network with 9 meters per customer, IEEE 123): ``plan_rebuild`` on the live
switch array with nothing changed (the check every topology update pays), with a normally-open point closed, and
with a protective device open as well (the plan then traces energisation to tell a trip from a new open point),
``build_connectivity`` with the new positions, and ``OutagePredictor.rebase`` of a predictor holding state (a third of
the meters off, predictions active). Median and worst of ``--repeat`` runs, in ms. Writes JSON with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.oms_storm import scaled_model  # noqa: E402
from models.cim import load_cim  # noqa: E402
from models.network import NetworkModel  # noqa: E402
from models.sample_network import build_sample_network  # noqa: E402
from oms.connectivity import build_connectivity, plan_rebuild  # noqa: E402
from oms.events import EventKind, OmsEvent  # noqa: E402
from oms.prediction import OutagePredictor  # noqa: E402

T0 = 1_790_000_000_000
SEED = 20261127
IEEE123 = REPO.parent / "shared" / "data" / "cim" / "IEEE123.xml"


def timed(fn: Callable[[], Any], repeat: int) -> tuple[dict[str, float], Any]:
    runs, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        runs.append((time.perf_counter() - t) * 1000.0)
    return {"median_ms": round(statistics.median(runs), 3), "max_ms": round(max(runs), 3)}, out


def case(model: NetworkModel, tie: str, repeat: int, rng: np.random.Generator) -> dict[str, Any]:
    conn = build_connectivity(model)
    live = np.array([sw.open for sw in model.switches])
    check, plan = timed(lambda: plan_rebuild(conn, model, live), repeat * 20)
    assert not plan.needed
    live[[i for i, sw in enumerate(model.switches) if sw.name == tie]] = False
    changed, plan = timed(lambda: plan_rebuild(conn, model, live), repeat * 20)
    assert plan.needed
    build, new = timed(lambda: build_connectivity(model, plan.switch_open), repeat)
    # a protective device open too while the tie closes: the plan then traces energisation to classify it
    protective = [i for i, sw in enumerate(model.switches) if conn.switch_protective[i] and not sw.open]
    with_trip = None
    if protective:
        tripped = live.copy()
        tripped[protective[-1]] = True
        with_trip, _plan = timed(lambda: plan_rebuild(conn, model, tripped), repeat * 4)

    def rebase() -> Any:
        pred = OutagePredictor(conn)
        off = rng.choice(len(conn.meter_ids), size=len(conn.meter_ids) // 3, replace=False)
        pred.ingest([OmsEvent(T0 + i, EventKind.PON, conn.meter_ids[int(m)]) for i, m in enumerate(off)])
        pred.analyse(T0 + 300_000)
        t = time.perf_counter()
        report = pred.rebase(new, reason="benchmark", time_ms=T0 + 400_000)
        return (time.perf_counter() - t) * 1000.0, report

    runs = [rebase() for _ in range(repeat)]
    return {
        "model": model.name, "meters": len(conn.meter_ids), "devices": conn.n_devices,
        "switches": len(model.switches), "tie_closed": tie,
        "plan_rebuild_unchanged": check, "plan_rebuild_tie_closed": changed,
        "plan_rebuild_tie_closed_and_a_trip": with_trip, "build_connectivity": build,
        "rebase": {"median_ms": round(statistics.median(r[0] for r in runs), 3),
                   "max_ms": round(max(r[0] for r in runs), 3),
                   "predictions_kept": len(runs[-1][1].predictions_kept)},
        "rebuild_total_median_ms": round(changed["median_ms"] + build["median_ms"]
                                         + statistics.median(r[0] for r in runs), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    rng = np.random.default_rng(SEED)
    sample = build_sample_network()
    cases = [case(sample, "F1-RMU08-LBS2", args.repeat, rng), case(scaled_model(sample, 9), "F1-RMU08-LBS2",
                                                                     args.repeat, rng)]
    if IEEE123.is_file():
        ieee = load_cim(IEEE123)
        cases.append(case(ieee, next(sw.name for sw in ieee.switches if sw.open), args.repeat, rng))
    result = {"benchmark": "oms_rebase", "cases": cases, "seed": SEED,
              "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                          "platform": platform.platform()}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
