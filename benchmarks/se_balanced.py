"""Balanced WLS state estimation: time and accuracy on 145, 300, 1,354 and 9,241-bus pandapower cases, beside
pandapower's own ``estimate``.

    python benchmarks/se_balanced.py --json benchmarks/results/se_balanced.json

Per network: ``runpp`` gives the truth; measurements (fixed seed) are V at every bus, P/Q injections at every bus with
an injection element, P/Q flows at the from end of every branch and |I| at 30 % of the loaded branches, Gaussian
noise (sigma 0.004 pu V, 0.01 pu P/Q/I on the case base), plus virtual zero injections. Timed: observability analysis
+ Gauss-Newton from a flat start (median of ``--repeats``), and bad-data processing with one gross error (+20 sigma
on a P flow) and on the clean set, with chi-square detection and (up to 2,000 buses) LNR detection. pandapower's
``estimate`` gets the same measured quantities (built in bulk from its own result tables, same sigmas and seed);
it is skipped on the 10k case unless ``--pandapower-10k`` (measured there: ~29 s and ~10 GB,
MemoryError with a full measurement set, see /work/shared/LIBRARY_FACTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

warnings.simplefilter("ignore")
import pandapower as pp  # noqa: E402
import pandapower.networks as pn  # noqa: E402
import pandas as pd  # noqa: E402

from dms.se.balanced import (  # noqa: E402
    BadDataOptions,
    Detection,
    MeasKind,
    MeasurementPlan,
    analyse_observability,
    estimate,
    estimate_with_bad_data,
    generate_measurements,
    network_from_pandapower,
)

CASES = (("case145", pn.case145), ("case300", pn.case300), ("case1354pegase", pn.case1354pegase),
         ("case9241pegase", pn.case9241pegase))
LNR_MODE_MAX_BUSES = 2000  # the residual covariance diagonal costs ~100 s at 10k buses (see README)
PLAN = MeasurementPlan(current_fraction=0.3)
SEED = 42


def pandapower_measurements(net, plan: MeasurementPlan, seed: int) -> pd.DataFrame:  # noqa: ANN001
    """The same quantities for pandapower's estimator, from its result tables (load convention at buses)."""
    rng = np.random.default_rng(seed)
    base = net.sn_mva
    rows = []
    buses = net.bus.index[net.bus.in_service.values].values
    rows.append(("v", "bus", buses, net.res_bus.vm_pu.loc[buses].values, plan.sigma_v_pu, None))
    inj = np.unique(np.concatenate([net[t].bus.values for t in ("load", "sgen", "gen", "ext_grid", "shunt")
                                    if len(net[t])]))
    for q, col in (("p", "p_mw"), ("q", "q_mvar")):
        rows.append((q, "bus", inj, net.res_bus[col].loc[inj].values, plan.sigma_pq_pu * base, None))
        rows.append((q, "line", net.line.index.values, net.res_line[col.replace("_", "_from_")].values,
                     plan.sigma_pq_pu * base, "from"))
        rows.append((q, "trafo", net.trafo.index.values, net.res_trafo[col.replace("_", "_hv_")].values,
                     plan.sigma_pq_pu * base, "hv"))
    frames = []
    for mtype, etype, elements, values, std, side in rows:
        frames.append(pd.DataFrame({
            "name": None, "measurement_type": mtype, "element_type": etype, "element": elements.astype(np.uint32),
            "value": values + rng.standard_normal(len(values)) * std, "std_dev": std, "side": side}))
    return pd.concat(frames, ignore_index=True)


def run_case(name: str, factory, repeats: int, run_pp_10k: bool) -> dict:  # noqa: ANN001
    net = factory()
    pp.runpp(net)
    model = network_from_pandapower(net)
    meas = generate_measurements(model, PLAN, seed=SEED)
    times, obs_times = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        report = analyse_observability(model, meas)
        obs_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        result = estimate(model, meas)
        times.append(time.perf_counter() - t0)
    truth = model.v_powerflow
    entry = {
        "network": name, "buses": model.n_bus, "branches": model.n_branch, "measurements": int(len(meas)),
        "virtual_measurements": int(meas["virtual"].sum()), "states": 2 * model.n_bus - 1,
        "observable": report.observable, "iterations": result.iterations,
        "time_s_median": round(statistics.median(times), 4), "time_s_max": round(max(times), 4),
        "observability_time_s": round(statistics.median(obs_times), 4),
        "max_vm_error_pu": float(np.max(np.abs(np.abs(result.v) - np.abs(truth)))),
        "max_va_error_deg": float(np.degrees(np.max(np.abs(np.angle(result.v) - np.angle(truth))))),
        "objective_j": round(result.objective, 1), "dof": result.dof,
    }
    # Bad data: one gross error on a P flow, chi-square + LNR with removal.
    bad = meas.copy()
    target = int(np.flatnonzero(bad["kind"] == MeasKind.P_FLOW)[len(bad) // 7 % max(1, model.n_branch)])
    bad["value"][target] += 20 * bad["sigma"][target]
    t0 = time.perf_counter()
    out = estimate_with_bad_data(model, bad)
    entry["bad_data"] = {"injected": "+20 sigma on one P_FLOW", "time_s": round(time.perf_counter() - t0, 3),
                         "detected": out.detected, "removed": list(out.removed), "chi2_passed": out.chi2_passed}
    if model.n_bus <= LNR_MODE_MAX_BUSES:
        t0 = time.perf_counter()
        out = estimate_with_bad_data(model, bad, options=BadDataOptions(detection=Detection.LNR))
        entry["bad_data_lnr_mode"] = {"time_s": round(time.perf_counter() - t0, 3), "detected": out.detected,
                                      "removed": list(out.removed)}
        t0 = time.perf_counter()
        clean = estimate_with_bad_data(model, meas, options=BadDataOptions(detection=Detection.LNR))
        entry["clean_data_lnr_mode"] = {"time_s": round(time.perf_counter() - t0, 3), "detected": clean.detected,
                                        "removed": list(clean.removed)}
    else:  # exact LNR costs ~100 s here: pre-screen the 2,000 largest weighted residuals
        screened = BadDataOptions(detection=Detection.LNR, lnr_candidates=2000)
        t0 = time.perf_counter()
        out = estimate_with_bad_data(model, bad, options=screened)
        entry["bad_data_lnr_mode_2000_candidates"] = {"time_s": round(time.perf_counter() - t0, 3),
                                                      "detected": out.detected, "removed": list(out.removed)}
        t0 = time.perf_counter()
        clean = estimate_with_bad_data(model, meas, options=screened)
        entry["clean_data_lnr_mode_2000_candidates"] = {"time_s": round(time.perf_counter() - t0, 3),
                                                        "detected": clean.detected, "removed": list(clean.removed)}
    t0 = time.perf_counter()
    clean = estimate_with_bad_data(model, meas)
    entry["clean_data"] = {"time_s": round(time.perf_counter() - t0, 3), "detected": clean.detected,
                           "removed": list(clean.removed)}
    # pandapower's estimator on the same quantities.
    if model.n_bus > 5000 and not run_pp_10k:
        entry["pandapower"] = {"skipped": "not run: measured ~29 s and ~10 GB at 10k buses, MemoryError with a full "
                                          "measurement set (dense .toarray() for bad-data tests); > 60 s budget"}
    else:
        from pandapower.estimation import estimate as pp_estimate

        net.measurement = pandapower_measurements(net, PLAN, SEED)
        t0 = time.perf_counter()
        out = pp_estimate(net, init="flat")
        dt = time.perf_counter() - t0
        ok = bool(out["success"])
        vm_err = (float(np.nanmax(np.abs(net.res_bus_est.vm_pu.loc[net.res_bus.index].values
                                         - net.res_bus.vm_pu.values))) if ok else None)
        entry["pandapower"] = {"time_s": round(dt, 3), "success": ok, "iterations": int(out["num_iterations"]),
                               "measurements": len(net.measurement), "max_vm_error_pu": vm_err}
        # The same set without noise (sigmas 1e-6 pu): pandapower's own model/convergence error, apart from noise.
        net.measurement = pandapower_measurements(net, MeasurementPlan(sigma_v_pu=1e-6, sigma_pq_pu=1e-6), SEED)
        exact = pp_estimate(net, init="flat")
        entry["pandapower"]["noise_free_max_vm_error_pu"] = (
            float(np.nanmax(np.abs(net.res_bus_est.vm_pu.loc[net.res_bus.index].values - net.res_bus.vm_pu.values)))
            if exact["success"] else None)
    return entry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pandapower-10k", action="store_true")
    args = parser.parse_args()
    results = []
    for name, factory in CASES:
        entry = run_case(name, factory, args.repeats, args.pandapower_10k)
        print(json.dumps(entry), flush=True)
        results.append(entry)
    doc = {"benchmark": "se_balanced", "seed": SEED, "plan": PLAN.__repr__(), "results": results,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
