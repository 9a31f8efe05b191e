"""FLISR plan time per scenario (locate + plan, median of 5 after one warm-up) on the sample network and IEEE 123.

    python benchmarks/flisr_plan.py --json benchmarks/results/flisr_plan.json

Each scenario locates the fault from its line (``locate_section``: the tripping device and the FPIs that pick up)
and computes the plan (``plan_restoration``: isolation, upstream reclose, ties checked by three-phase power flow,
split/shed when needed). Reported: median and max wall time, the plan's own ``plan_ms``, the number of flow-checked
options, steps and customers. The goal (issue #5) is < 1 s per plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dms.flisr import FlisrOptions, locate_section, plan_restoration  # noqa: E402
from dms.flisr.cli import default_controllable  # noqa: E402
from dms.flow_check import VoltageBand  # noqa: E402
from dms.network_state import NetworkState  # noqa: E402
from models.cim import load_cim  # noqa: E402
from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH  # noqa: E402

IEEE123 = REPO.parent / "shared" / "data" / "cim" / "IEEE123.xml"
REPEATS = 5


def scenarios() -> list[tuple[str, str, NetworkState, str, FlisrOptions]]:
    sample = NetworkState.from_model(load_cim(SAMPLE_NETWORK_PATH), frequency_hz=F_HZ)
    tele = default_controllable(sample.base)
    opts = FlisrOptions(controllable=tele)
    heavy = sample.scaled_loads(np.array([2.0 if ld.name.startswith("F1-") else 1.0 for ld in sample.base.loads]))
    out = [
        ("sample", "F2-C04 (demo: tie F1-F2)", sample, "F2-C04", opts),
        ("sample", "F2-C01 (first cable, breaker stays open)", sample, "F2-C01", opts),
        ("sample", "F2-C08 (next to the tie)", sample, "F2-C08", opts),
        ("sample", "F4-C05 (fed from F3 over the F3-F4 tie)", sample, "F4-C05", opts),
        ("sample", "F3-OH2 (spur, no restoration path)", sample, "F3-OH2", opts),
        ("sample", "F2-C02, F1 loads x2 (tie overloads: shed)", heavy, "F2-C02",
         FlisrOptions(controllable=tele, band=VoltageBand(0.85, 1.10))),
    ]
    # a second tie F2-F3 at RMU05 and F1 x2, F3 x2.3: neither tie carries the F2 tail alone, a split does
    template = next(s for s in sample.base.switches if s.name == "F1-RMU08-LBS2")
    tie = dataclasses.replace(template, mrid="bench-f2-f3-tie", name="F2-F3-TIE", feeder_mrid=None,
                              from_bus=sample.base.bus_by_name("F3-RMU05-BB").index,
                              to_bus=sample.base.bus_by_name("F2-RMU05-BB").index)
    two = NetworkState.from_model(dataclasses.replace(sample.base, switches=(*sample.base.switches, tie)),
                                  frequency_hz=F_HZ)
    two = two.scaled_loads(np.array([{"F1": 2.0, "F3": 2.3}.get(ld.name[:2], 1.0) for ld in two.base.loads]))
    out.append(("sample+tie", "F2-C02, F1 x2, F3 x2.3 (split between two ties)", two, "F2-C02",
                FlisrOptions(band=VoltageBand(0.85, 1.10))))
    if IEEE123.is_file():
        ieee = NetworkState.from_model(load_cim(IEEE123))
        out += [
            ("IEEE 123", "l117 (below sw4, tie sw7)", ieee, "l117", FlisrOptions()),
            ("IEEE 123", "l116 (below sw2, sw7 overloads: shed at sw5)", ieee, "l116", FlisrOptions()),
            ("IEEE 123", "l114 (radial end below sw3)", ieee, "l114", FlisrOptions()),
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rows = []
    for network, name, state, line, options in scenarios():
        plan = None
        times = []
        for k in range(REPEATS + 1):
            t0 = time.perf_counter()
            fault = locate_section(state, line, controllable=options.controllable)
            plan = plan_restoration(state, fault, options=options)
            if k:  # the first run warms caches up
                times.append((time.perf_counter() - t0) * 1e3)
        assert plan is not None
        rows.append({"network": network, "scenario": name, "median_ms": round(statistics.median(times), 1),
                     "max_ms": round(max(times), 1), "plan_ms": round(plan.plan_ms, 1),
                     "options_checked": len(plan.options), "steps": len(plan.steps),
                     "customers_interrupted": plan.customers_interrupted,
                     "customers_restored": plan.customers_restored, "customers_unserved": plan.customers_unserved,
                     "shed_loads": len(plan.shed_loads)})
        print(f"{network:9} {name:48} median {rows[-1]['median_ms']:7.1f} ms  max {rows[-1]['max_ms']:7.1f} ms  "
              f"options {len(plan.options)}  steps {len(plan.steps)}  restored {plan.customers_restored}/"
              f"{plan.customers_interrupted}")
    out = {"benchmark": "flisr_plan", "repeats": REPEATS, "scenarios": rows,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
