"""Volt/VAR optimisation: time per proposal on IEEE 13, IEEE 123 and the embedded sample network.

    python benchmarks/voltvar.py --json benchmarks/results/voltvar.json

Each case starts from the state the CIM file describes (the sample network at 50 Hz, the IEEE feeders at 60 Hz) and
runs ``dms.voltvar.optimise`` for the losses and the CVR objective, ``--repeats`` times (deterministic: same result
each time); reported: median and max time, power flows per proposal and time per flow, actions and operations,
losses and demand before/after, |V| min/max after, feasible and verified. IEEE 13 is run twice: with the default band
(0.95-1.05 pu, which its regulator output bus rg60 starts above) and a 0.95-1.07 band that the start meets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dms.flow_check import VoltageBand  # noqa: E402
from dms.network_state import NetworkState  # noqa: E402
from dms.voltvar import Objective, VoltVarOptions, VoltVarProposal, optimise  # noqa: E402
from models.cim import load_cim  # noqa: E402
from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH  # noqa: E402

CIM_DIR = REPO.parent / "shared" / "data" / "cim"


def _case(name: str, state: NetworkState, band: VoltageBand, objective: Objective, repeats: int) -> dict:
    times: list[float] = []
    p: VoltVarProposal | None = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = optimise(state, VoltVarOptions(objective=objective, band=band))
        times.append((time.perf_counter() - t0) * 1e3)
    assert p is not None
    median = statistics.median(times)
    return {
        "case": name, "objective": objective.value, "band_pu": [band.low_pu, band.high_pu],
        "nodes": len(state.base.buses), "tap_changers": len(state.base.tap_changers),
        "capacitors": len(state.base.capacitors),
        "time_ms_median": round(median, 1), "time_ms_max": round(max(times), 1), "flows": p.flows,
        "ms_per_flow": round(median / max(p.flows, 1), 2),
        "actions": [a.text() for a in p.actions], "operations": p.operations,
        "loss_kw_before": round(p.before.loss_p_w / 1e3, 2), "loss_kw_after": round(p.after.loss_p_w / 1e3, 2),
        "demand_kw_before": round(p.before.load_p_w / 1e3, 1), "demand_kw_after": round(p.after.load_p_w / 1e3, 1),
        "v_min_pu_after": round(p.after.v_min_pu, 4), "v_max_pu_after": round(p.after.v_max_pu, 4),
        "outside_before": p.before.voltage_violations, "outside_after": p.after.voltage_violations,
        "feasible": p.feasible, "verified": p.verified, "new_violations": [v.text() for v in p.new_violations],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    cases: list[tuple[str, NetworkState, VoltageBand]] = []
    if (CIM_DIR / "IEEE13.xml").is_file():
        ieee13 = NetworkState.from_model(load_cim(CIM_DIR / "IEEE13.xml"))
        cases += [("IEEE 13", ieee13, VoltageBand()), ("IEEE 13 (band 0.95-1.07)", ieee13, VoltageBand(0.95, 1.07))]
    if (CIM_DIR / "IEEE123.xml").is_file():
        cases.append(("IEEE 123", NetworkState.from_model(load_cim(CIM_DIR / "IEEE123.xml")), VoltageBand()))
    cases.append(("sample network", NetworkState.from_model(load_cim(SAMPLE_NETWORK_PATH), frequency_hz=F_HZ),
                  VoltageBand()))
    optimise(cases[-1][1])  # warm-up: imports and first-call costs
    rows = []
    for name, state, band in cases:
        for objective in Objective:
            row = _case(name, state, band, objective, args.repeats)
            rows.append(row)
            print(f"{name:<26} {objective.value:<6} {row['time_ms_median']:8.1f} ms {row['flows']:4d} flows "
                  f"{row['ms_per_flow']:5.1f} ms/flow  ops {row['operations']:3d}  losses {row['loss_kw_before']:.1f}"
                  f"->{row['loss_kw_after']:.1f} kW  demand {row['demand_kw_before']:.0f}->{row['demand_kw_after']:.0f}"
                  f" kW  feasible {row['feasible']} verified {row['verified']}")
    out = {"benchmark": "voltvar", "repeats": args.repeats, "cases": rows,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    text = json.dumps(out, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
