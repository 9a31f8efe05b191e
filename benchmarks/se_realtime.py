"""Real-time three-phase state estimation on the project's own models with flow-generated noisy measurements.

    python benchmarks/se_realtime.py --json benchmarks/results/se_realtime.json

Networks: the embedded sample network (its station's points: busbar PNV, feeder-breaker and transformer P/Q/I, RMU
switch currents) and IEEE 123 (tests/data/ieee123_station.toml: line PNV and P/Q, load PNV and P/Q, switch
currents). Per snapshot (fixed seeds): every load drawn at 40-100 % of its model value, the project's three-phase
flow gives the truth, every bound point reads it with 0.5 % Gaussian noise; the estimator gets those points (the
live pipeline: dms.se.live_measurements), pseudo loads (model loads scaled to the meters) and zero injections, warm
start from the previous snapshot. Reported: the estimator-network build (once per topology), time per estimate
(telemetry, pseudo loads and WLS; the first from a flow start) with and without the voltage standard deviations and
with a gross error (bad-data removal: normalised residuals, re-estimates, meter re-scaling), |V| error
mean/p95/max against the flow, and with one gross error per snapshot (a telemetered current or P value x 2.5) how
often it is the measurement removed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dms.network_state import NetworkState  # noqa: E402
from dms.se.live_measurements import MeasurementAccuracy, live_measurements  # noqa: E402
from dms.se.model_estimate import EstimatorOptions, estimate_with_pseudo  # noqa: E402
from dms.se.phase_network import build_model_network  # noqa: E402
from dms.se.synthetic import flow_point_values, snapshot_of  # noqa: E402
from models.config import StationConfig, load_station_config  # noqa: E402
from models.measurement_points import Quantity  # noqa: E402
from models.samples import sample_network_station_path  # noqa: E402
from models.three_phase_flow import run_three_phase_powerflow  # noqa: E402

NETWORKS = {"sample_network": sample_network_station_path(),
            "ieee123": REPO / "tests" / "data" / "ieee123_station.toml"}
NOISE_PCT = 0.5


def _figures(err: np.ndarray) -> dict[str, float]:
    return {"mean_pu": round(float(err.mean()), 6), "p95_pu": round(float(np.percentile(err, 95)), 6),
            "max_pu": round(float(err.max()), 6)}


def _timing(ms: list[float]) -> dict[str, float]:
    return {"mean_ms": round(float(np.mean(ms)), 2), "median_ms": round(float(np.median(ms)), 2),
            "max_ms": round(float(np.max(ms)), 2)}


def run_network(name: str, config: StationConfig, snapshots: int, seed: int) -> dict:
    assert config.network is not None
    state = NetworkState.from_model(config.network, frequency_hz=config.frequency_hz)
    t0 = time.perf_counter()
    mn = build_model_network(state)
    build_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(seed)
    accuracy = MeasurementAccuracy(percent_of_reading=NOISE_PCT)
    candidates = [p.id for p in config.points if (b := config.binding(p)) is not None
                  and b.quantity in (Quantity.CURRENT_A, Quantity.P_KW) and b.element_class != "EnergyConsumer"]
    errors, times_sd, times, times_gross, hits, detected, counts = [], [], [], [], 0, 0, {}
    x0 = None
    for k in range(snapshots):
        truth = state.with_loads(state.load_p_w * rng.uniform(0.4, 1.0, len(state.load_p_w)),
                                 state.load_q_var * rng.uniform(0.4, 1.0, len(state.load_q_var)))
        flow = run_three_phase_powerflow(truth.model)
        values = flow_point_values(config, truth.model, flow, noise_pct=NOISE_PCT, seed=seed + k)
        tv = {str(n): float(v) for n, v in zip(flow.nodes["node"], flow.nodes["v_pu"], strict=True)}
        truth_v = np.array([tv[n] for n in mn.network.node_names])
        for gross in (False, True):
            vals = dict(values)
            bad_id = -1
            if gross:
                live = [i for i in candidates if abs(vals.get(i, 0.0)) > 5.0]
                bad_id = int(rng.choice(live))
                vals[bad_id] *= 2.5
            for with_sd in ((False, True) if not gross else (False,)):
                started = time.perf_counter()
                result, x = estimate_with_pseudo(
                    mn, lambda b, v=vals: live_measurements(b, config, snapshot_of(v), accuracy=accuracy),
                    state.load_p_w, state.load_q_var, x0=x0, options=EstimatorOptions(std_dev=with_sd))
                assert result.converged, f"{name} snapshot {k}: {result.error}"
                elapsed_ms = (time.perf_counter() - started) * 1e3
                (times_gross if gross else times_sd if with_sd else times).append(elapsed_ms)
            if gross:
                detected += int(result.bad_data_detected)
                removed = [b.measurement for b in result.bad_data]
                hits += int(removed[:1] == [config.points[bad_id].name])
            else:
                x0 = x
                errors.append(np.abs(result.nodes["v_pu"] - truth_v))
                counts = {"nodes": mn.size, "measurements": result.measurements, "telemetered": result.telemetered,
                          "chi2_passed_clean": result.chi2_passed}
    return {"network": name, "buses": len(config.network.buses), **counts, "build_ms": round(build_ms, 1),
            "estimate": _timing(times), "estimate_with_std_dev": _timing(times_sd),
            "estimate_with_gross_error": _timing(times_gross),
            "v_error": _figures(np.concatenate(errors)), "snapshots": snapshots,
            "gross_error": {"snapshots": snapshots, "detected": detected, "identified_first": hits}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    rows = [run_network(name, load_station_config(path), args.snapshots, args.seed)
            for name, path in NETWORKS.items()]
    out = {"benchmark": "se_realtime", "noise_pct": NOISE_PCT,
           "method": "three-phase WLS on the project's phase model; live measurement pipeline; pseudo loads scaled "
                     "to meters; chi-square + LNR", "results": rows,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
