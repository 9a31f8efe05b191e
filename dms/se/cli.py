"""State estimation from the command line (study use, no server).

``dscada se gridappsd-testset DIR [--json]``: the three-phase estimator on GridAPPS-D's IEEE 123 test set; a table
per snapshot (time, our |V| error mean/p95/max against the simulator's truth, GridAPPS-D's) and the summary.

``dscada se FILE --measurements CSV --balanced [--json]``: the balanced estimator on a pandapower JSON network
(``dms/se/balanced/csv_file.py`` names the elements).

``dscada se FILE --measurements CSV [--json] [--frequency HZ]``: a three-phase estimate of the CIM model FILE from
the measurements in CSV (columns ``kind,element,terminal,phase,value,sigma``: see ``dms/se/csv_measurements.py`` or
``--help``), with pseudo loads (the model's loads scaled to the metered P/Q) and zero injections; prints the estimate
summary, node voltages outside 0.95..1.05 pu, unobservable buses and the bad-data report.

Standalone: ``python -m dms.se.cli ...``. Exit 0 on success, 2 when a file cannot be read or the estimate fails (the
reason on stderr, naming the file and line or element).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dms.se.errors import SeError
from dms.se.gridappsd_testset import TestsetReport, load_testset, run_testset
from dms.se.results import EstimateResult

EXIT_OK = 0
EXIT_INVALID = 2


def report_data(report: TestsetReport) -> dict:
    return asdict(report)


def _print_table(report: TestsetReport) -> None:
    print(f"{'snapshot':>11} {'ms':>6} {'it':>3} {'rm':>3} | {'ours mean':>9} {'p95':>8} {'max':>8} | "
          f"{'theirs mean':>11} {'p95':>8} {'max':>8}")
    for r in report.rows:
        print(f"{r.timestamp:>11} {r.time_ms:6.1f} {r.iterations:3d} {len(r.removed):3d} | {r.ours.mean_pu:9.5f} "
              f"{r.ours.p95_pu:8.5f} {r.ours.max_pu:8.5f} | {r.theirs.mean_pu:11.5f} {r.theirs.p95_pu:8.5f} "
              f"{r.theirs.max_pu:8.5f}")
    print(f"{'all':>11} {report.time_ms_mean:6.1f} {'':>3} {'':>3} | {report.ours.mean_pu:9.5f} "
          f"{report.ours.p95_pu:8.5f} {report.ours.max_pu:8.5f} | {report.theirs.mean_pu:11.5f} "
          f"{report.theirs.p95_pu:8.5f} {report.theirs.max_pu:8.5f}")
    print(f"{len(report.rows)} snapshots, {report.nodes} nodes, {report.measurements} measurements; |V| error in pu "
          f"vs simulator truth; time per snapshot mean {report.time_ms_mean:.1f} ms, max {report.time_ms_max:.1f} ms")


CSV_HELP = """measurement CSV columns: kind,element,terminal,phase,value,sigma
  kind      v_kv (phase-neutral kV at a bus), p_kw, q_kvar (power), i_a (current magnitude)
  element   bus name for v_kv; line/switch/transformer name (into the element at the terminal) or load name
  terminal  terminal number (1 = from end / winding 1) or the bus name at that end; empty for buses and loads
  phase     A, B, C (s1, s2)
  value     in the kind's unit
  sigma     standard deviation in the same unit; empty: 0.5 % of the value plus a floor"""


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def estimate_data(result: EstimateResult) -> dict:
    nodes = result.nodes
    return {
        "network": result.network, "converged": result.converged, "error": result.error,
        "objective": _finite(result.objective), "chi2_threshold": _finite(result.chi2_threshold),
        "chi2_passed": result.chi2_passed,
        "bad_data_detected": result.bad_data_detected,
        "bad_data": [asdict(b) for b in result.bad_data], "unobservable_buses": list(result.unobservable_buses),
        "deenergised_buses": list(result.deenergised_buses), "loss_p_w": _finite(result.loss_p_w),
        "loss_q_var": _finite(result.loss_q_var), "measurements": result.measurements,
        "telemetered": result.telemetered,
        "iterations": result.iterations, "solve_ms": result.solve_ms,
        "nodes": [{"node": str(n["node"]), "bus": str(n["bus"]), "phase": str(n["phase"]),
                   "v_pu": None if not n["observable"] else float(n["v_pu"]),
                   "angle_deg": None if not n["observable"] else float(n["angle_deg"]),
                   "v_sigma_pu": _finite(n["v_sigma_pu"])} for n in nodes],
    }


def _print_estimate(result: EstimateResult) -> None:
    print(result.summary())
    if not result.converged:
        return
    obs = result.nodes[result.nodes["observable"]]
    out = obs[(obs["v_pu"] < 0.95) | (obs["v_pu"] > 1.05)]
    if len(out):
        print(f"{len(out)} node phase(s) outside 0.95..1.05 pu:")
        for n in out[np.argsort(out["v_pu"])][:20]:
            print(f"  {n['node']:<24} {n['v_pu']:.4f} pu +- {n['v_sigma_pu']:.4f}")
    if result.unobservable_buses:
        print(f"unobservable (not estimated): {', '.join(result.unobservable_buses)}")
    if result.bad_data:
        print("bad data (removed):")
        for b in result.bad_data:
            print(f"  {b.measurement:<40} reads {b.value:.4g}, estimate {b.estimate:.4g}, normalised residual "
                  f"{b.normalized_residual:.1f}")
    else:
        print("bad data: none")


def _estimate_file(args: argparse.Namespace) -> EstimateResult:
    from dms.network_state import NetworkState
    from dms.se.csv_measurements import read_measurement_csv
    from dms.se.errors import MeasurementFileError
    from dms.se.live_measurements import MeasurementBuilder
    from dms.se.model_estimate import EstimatorOptions, estimate_with_pseudo
    from dms.se.phase_network import build_model_network
    from dms.se.pseudo import PseudoOptions
    from models.cim import load_cim

    try:
        model = load_cim(args.file)
    except Exception as exc:  # the CIM reader's errors name the file and the element
        raise MeasurementFileError(f"{args.file}: cannot load the network model ({exc})") from exc
    options = EstimatorOptions(pseudo=PseudoOptions(pseudo_percent=args.pseudo_percent))
    state = NetworkState.from_model(model, frequency_hz=args.frequency)
    mn = build_model_network(state, s_base_va=options.s_base_va)

    def telemetry(builder: MeasurementBuilder) -> list:
        read_measurement_csv(args.measurements, builder, options.accuracy)
        return []  # a file row that cannot be used is an error, not an exclusion

    result, _ = estimate_with_pseudo(mn, telemetry, state.load_p_w, state.load_q_var, options=options,
                                     trigger="cli")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gridappsd-testset":
        return _testset_main(argv)
    parser = argparse.ArgumentParser(prog="dscada se", description="three-phase state estimate of a CIM model from a "
                                     "measurement file (or: dscada se gridappsd-testset DIR)",
                                     epilog=CSV_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", type=Path, help="CIM network model (XML); with --balanced a pandapower JSON network")
    parser.add_argument("--measurements", type=Path, required=True, help="measurement CSV (columns below)")
    parser.add_argument("--frequency", type=float, default=60.0, choices=(50.0, 60.0),
                        help="network frequency in Hz (line charging, switch model); default 60")
    parser.add_argument("--pseudo-percent", type=float, default=30.0,
                        help="sigma of a pseudo load in %% of its value (default 30)")
    parser.add_argument("--balanced", action="store_true",
                        help="balanced estimate of a pandapower JSON network (see dms/se/balanced/csv_file.py for "
                             "the element names: 'bus N', 'line N', 'trafo N'; v_kv line-to-line, P/Q/I totals)")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    args = parser.parse_args(argv)
    if args.balanced:
        return _balanced(args)
    try:
        result = _estimate_file(args)
    except SeError as exc:
        print(f"dscada se: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if not result.converged:
        print(f"dscada se: {args.file}: {result.error}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(estimate_data(result), indent=1))
    else:
        _print_estimate(result)
    return EXIT_OK


def _balanced(args: argparse.Namespace) -> int:
    from dms.se.balanced.csv_file import estimate_balanced_file
    from dms.se.live_measurements import MeasurementAccuracy

    try:
        est = estimate_balanced_file(args.file, args.measurements, MeasurementAccuracy())
    except SeError as exc:
        print(f"dscada se: {exc}", file=sys.stderr)
        return EXIT_INVALID
    data = est.data()
    if args.json:
        print(json.dumps(data, indent=1))
        return EXIT_OK
    v = np.array([b["v_pu"] for b in data["buses"]])
    verdict = "passed" if data["chi2_passed"] else "failed"
    print(f"balanced state estimate: {len(v)} buses, |V| {v.min():.4f}..{v.max():.4f} pu; J = "
          f"{data['objective']:.1f} (chi-square {verdict}); {data['iterations']} iterations in "
          f"{data['solve_ms']:.1f} ms")
    if data["bad_data"]:
        print("bad data (removed):")
        for b in data["bad_data"]:
            print(f"  {b['measurement']:<50} normalised residual {b['normalized_residual']:.1f}")
    else:
        print("bad data: none")
    return EXIT_OK


def _testset_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dscada se", description="state estimation tools")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("gridappsd-testset", help="run GridAPPS-D's IEEE 123 estimator test set and compare")
    p.add_argument("directory", type=Path, help="folder with nodelist.csv, ysparse.csv, measurements.csv ...")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = run_testset(load_testset(args.directory))
    except SeError as exc:
        print(f"dscada se: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(report_data(report), indent=1))
    else:
        _print_table(report)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
