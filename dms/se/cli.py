"""``dscada se gridappsd-testset DIR [--json]``: run the three-phase estimator on GridAPPS-D's IEEE 123 test set.

Prints a table per snapshot (time, our |V| error mean/p95/max against the simulator's truth, GridAPPS-D's) and the
summary. Standalone: ``python -m dms.se.cli gridappsd-testset DIR``. Exit 0 on success, 2 when the files cannot be
read or the estimate fails (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from dms.se.errors import SeError
from dms.se.gridappsd_testset import TestsetReport, load_testset, run_testset

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


def main(argv: list[str] | None = None) -> int:
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
