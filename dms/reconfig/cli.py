"""``dscada reconfigure FILE [--objective losses|balance] [--json]``: feeder reconfiguration of a CIM or pandapower
JSON network, without a running server.

Prints the switches/lines to open and close, losses and feeder loadings before and after, and the switching
sequence; ``--json`` prints one JSON object (``ReconfigResult.to_dict()``) and nothing else. Errors print one line
naming the file and the problem and return 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import warnings

from dms.reconfig.engine import ReconfigOptions, ReconfigResult, reconfigure_file
from dms.reconfig.errors import ReconfigError
from dms.reconfig.evaluate import Operating
from dms.reconfig.milp import Objective
from dms.reconfig.problem import SwitchableLines

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dscada reconfigure", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="CIM (.xml, .xml.gz) or pandapower JSON (.json) network")
    p.add_argument("--objective", choices=[o.value for o in Objective], default=Objective.LOSSES.value)
    p.add_argument("--json", action="store_true", help="machine-readable output only")
    p.add_argument("--v-min", type=float, default=0.95, help="lower voltage limit, pu (default 0.95)")
    p.add_argument("--v-max", type=float, default=1.05, help="upper voltage limit, pu (default 1.05)")
    p.add_argument("--loading-limit", type=float, default=100.0, help="branch loading limit, %% (default 100)")
    p.add_argument("--switchable-lines", choices=[s.value for s in SwitchableLines], default="auto",
                   help="which lines may be opened (auto: every line when the net has no switch)")
    p.add_argument("--frequency", type=float, default=None,
                   help="Hz for a CIM file (default: 50 for the embedded sample network, else 60)")
    p.add_argument("--time-limit", type=float, default=10.0, help="MILP time limit, s (default 10)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    warnings.filterwarnings("ignore", module="pandapower")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    try:
        options = ReconfigOptions(objective=Objective(args.objective), v_low_pu=args.v_min, v_high_pu=args.v_max,
                                  loading_limit_pct=args.loading_limit,
                                  switchable_lines=SwitchableLines(args.switchable_lines),
                                  milp_time_limit_s=args.time_limit)
        progress = None if args.json else (lambda msg: print(f"  .. {msg}", file=sys.stderr, flush=True))
        result = reconfigure_file(args.file, options, frequency_hz=args.frequency, on_progress=progress)
    except ReconfigError as exc:
        print(f"dscada reconfigure: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(render(result))
    return 0


def _fmt(x: float, spec: str) -> str:
    return format(x, spec) if math.isfinite(x) else "-"


def _state_line(label: str, op: Operating) -> str:
    return (f"{label:<7} losses {_fmt(op.losses_mw * 1e3, '9.2f')} kW   |V| {_fmt(op.v_min_pu, '.4f')}-"
            f"{_fmt(op.v_max_pu, '.4f')} pu   max loading {_fmt(op.max_loading_pct, '.0f')} % "
            f"({op.max_loading_element or '-'})")


def render(r: ReconfigResult) -> str:
    lines = [f"Reconfiguration of {r.network} (objective {r.objective.value}, {r.candidates} switchable branches)",
             f"algorithm: {r.algorithm}", ""]
    if r.improved:
        lines.append(f"open : {', '.join(r.to_open)}")
        lines.append(f"close: {', '.join(r.to_close)}")
    else:
        lines.append("no change: the present configuration is the best found")
    lines.append(f"open points after: {', '.join(sorted(r.after.open_set))}")
    lines.append("")
    lines.append(_state_line("before", r.before))
    lines.append(_state_line("after", r.after))
    if r.before.losses_mw > 0:
        saved = r.before.losses_mw - r.after.losses_mw
        lines.append(f"saving  {saved * 1e3:.2f} kW ({100 * saved / r.before.losses_mw:.1f} %)")
    lines.append("")
    lines.append("feeder loading (head: MVA and % of its rating, before -> after)")
    after = {f.head: f for f in r.after.feeders}
    for f in r.before.feeders:
        a = after.get(f.head)
        after_text = f"{_fmt(a.s_mva, '.3f')} MVA {_fmt(a.loading_pct, '.1f')} %" if a else "-"
        lines.append(f"  {f.head:<30} {_fmt(f.s_mva, '.3f')} MVA {_fmt(f.loading_pct, '.1f')} % -> {after_text}")
    if r.sequence:
        lines.append("")
        lines.append("switching sequence")
        for s in r.sequence:
            note = "" if s.radial else "  (transient loop, one source)"
            if s.interrupted_mw > 1e-9:
                note += f"  (interrupts {s.interrupted_mw:.3f} MW briefly)"
            if s.violations:
                note += f"  WARNING: {'; '.join(s.violations)}"
            lines.append(f"  {s.number:>2}. {s.action.value:<5} {s.element:<24} [{s.mode.value}] losses "
                         f"{_fmt(s.losses_mw * 1e3, '.2f')} kW, Vmin {_fmt(s.v_min_pu, '.4f')} pu{note}")
    tp = r.three_phase
    if tp is not None:
        verdict = "refused: " + "; ".join(tp.new_violations) if tp.new_violations else "adds no violation"
        lines.append(f"three-phase check: losses {_fmt(tp.losses_before_kw, '.2f')} -> "
                     f"{_fmt(tp.losses_after_kw, '.2f')} kW, |V| after {_fmt(tp.v_min_after_pu, '.4f')}-"
                     f"{_fmt(tp.v_max_after_pu, '.4f')} pu, {verdict}")
    lines.append("")
    lines.append(f"times: MILP {r.milp_s:.2f} s ({r.milp_iterations} solves: {r.milp_status}), AC polish "
                 f"{r.polish_s:.2f} s ({len(r.exchanges)} exchanges), sequence {r.sequence_s:.2f} s, total "
                 f"{r.total_s:.2f} s, {r.ac_solves} AC power flows")
    for n in r.notes:
        lines.append(f"note: {n}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
