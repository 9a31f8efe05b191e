"""Feeder reconfiguration benchmark: time and losses before/after per network -> benchmarks/results/reconfig.json.

Networks: Baran & Wu 33-bus (``pandapower.networks.case33bw``, published optimum 139.55 kW), the MV Oberrhein
network (``pandapower.networks.mv_oberrhein``, two substations, 322 line switches), IEEE 123 (CIM, ties sw7/sw8,
three-phase check) and the embedded sample network (CIM, 50 Hz), with a synthetic two-feeder case for ``balance``.
Deterministic (no random input). Run: ``python benchmarks/reconfig.py [--quick]`` (``--quick`` skips Oberrhein).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "reconfig.json"
IEEE123 = ROOT.parent / "shared" / "data" / "cim" / "IEEE123.xml"


def _row(name: str, result, wall_s: float) -> dict:  # noqa: ANN001 - a ReconfigResult
    d = result.to_dict()
    return {"network": name, "objective": d["objective"], "candidates": d["candidates"],
            "losses_before_kw": d["losses_before_kw"], "losses_after_kw": d["losses_after_kw"],
            "losses_milp_config_kw": d["milp"]["losses_kw"] if d["milp"] else None,
            "open_before": d["before"]["open"], "open_after": d["after"]["open"],
            "max_feeder_before": max((f["loading_pct"] or f["s_mva"] or 0) for f in d["before"]["feeders"]),
            "max_feeder_after": max((f["loading_pct"] or f["s_mva"] or 0) for f in d["after"]["feeders"]),
            "v_min_before_pu": d["before"]["v_min_pu"], "v_min_after_pu": d["after"]["v_min_pu"],
            "sequence_steps": len(d["sequence"]), "exchanges_after_milp": len(d["exchanges"]),
            "milp_status": d["milp_status"], "milp_solves": d["milp_iterations"], "times_s": d["times_s"],
            "wall_s": round(wall_s, 3), "ac_solves": d["ac_solves"], "three_phase": d["three_phase"],
            "notes": d["notes"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the MV Oberrhein network")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    import pandapower.networks as pn

    from dms.network_state import NetworkState
    from dms.reconfig import Objective, ReconfigOptions, propose_for_state, reconfigure
    from models.cim import load_cim
    from models.sample_network import F_HZ, SAMPLE_NETWORK_PATH
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    sys.path.insert(0, str(ROOT / "tests"))
    from test_reconfig import two_source_net

    rows = []

    def run(name: str, fn) -> None:  # noqa: ANN001
        print(f"{name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        result = fn()
        rows.append(_row(name, result, time.perf_counter() - started))
        r = rows[-1]
        print(f"  {r['losses_before_kw']} -> {r['losses_after_kw']} kW, open {r['open_after']}, {r['wall_s']} s",
              file=sys.stderr, flush=True)

    run("case33bw", lambda: reconfigure(pn.case33bw()))
    run("case33bw (MILP run to its proof)", lambda: reconfigure(pn.case33bw(), ReconfigOptions(milp_time_limit_s=120)))
    run("two feeders, one source (balance)", lambda: reconfigure(two_source_net(second_source=False),
                                                                 ReconfigOptions(objective=Objective.BALANCE)))
    run("two feeders, two sources (balance)", lambda: reconfigure(two_source_net(second_source=True),
                                                                  ReconfigOptions(objective=Objective.BALANCE)))
    if IEEE123.is_file():
        model = load_cim(IEEE123)
        run("IEEE 123 (CIM)", lambda: propose_for_state(NetworkState.from_model(model, frequency_hz=60.0)).result)
    sample = load_cim(SAMPLE_NETWORK_PATH)
    run("sample network (CIM)", lambda: propose_for_state(NetworkState.from_model(sample, frequency_hz=F_HZ)).result)
    run("sample network (CIM, balance)", lambda: propose_for_state(
        NetworkState.from_model(sample, frequency_hz=F_HZ), ReconfigOptions(objective=Objective.BALANCE)).result)
    if not args.quick:
        run("mv_oberrhein", lambda: reconfigure(pn.mv_oberrhein()))
    doc = {"benchmark": "feeder reconfiguration", "published_case33bw_kw": {"before": 202.7, "after": 139.55,
                                                                            "open_1_based": [7, 9, 14, 32, 37]},
           "results": rows,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform(), "load_average": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
