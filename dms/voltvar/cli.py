"""``dscada voltvar FILE [--objective losses|cvr] [--band 0.95,1.05] [--json]``: a Volt/VAR proposal for a CIM model.

Starts from the state the file describes (switch states, loads, tap steps, capacitor sections) and prints the
actions (tap steps, capacitor sections), losses and demand before and after, |V| min/max and the verdict of the
verifying power flow. The embedded sample network is solved at 50 Hz, anything else at 60 Hz unless
``--frequency-hz``. Exit 0 when a proposal was made (also when the band cannot be met: the output says so),
2 when the file cannot be read or the flow of the present state fails (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from dms.errors import DmsError
from dms.flow_check import VoltageBand
from dms.network_state import NetworkState
from dms.voltvar.engine import FlowFigures, Objective, VoltVarOptions, VoltVarProposal, optimise
from models.errors import ModelError

EXIT_OK = 0
EXIT_INVALID = 2


def _band(text: str) -> VoltageBand:
    try:
        low, high = (float(x) for x in text.split(","))
        return VoltageBand(low, high)
    except (ValueError, DmsError):
        raise argparse.ArgumentTypeError(f"--band {text!r}: give LOW,HIGH in pu with LOW < HIGH, e.g. 0.95,1.05"
                                         ) from None


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else x


def _figures(f: FlowFigures) -> dict:
    return {"converged": f.converged, "loss_kw": _num(f.loss_p_w / 1e3), "demand_kw": _num(f.load_p_w / 1e3),
            "v_min_pu": _num(f.v_min_pu), "v_max_pu": _num(f.v_max_pu), "voltage_violations": f.voltage_violations,
            "violations": [v.text() for v in f.violations]}


def proposal_data(p: VoltVarProposal) -> dict:
    return {
        "network": p.network, "state": p.state_label, "objective": p.objective.value,
        "band_pu": [p.band.low_pu, p.band.high_pu], "feasible": p.feasible, "verified": p.verified,
        "actions": [{"kind": a.kind.value, "element": a.element, "phases": a.phases, "before": a.before,
                     "after": a.after, "operations": a.operations} for a in p.actions],
        "before": _figures(p.before), "after": _figures(p.after),
        "new_violations": [v.text() for v in p.new_violations], "blocked": list(p.blocked), "message": p.message,
        "flows": p.flows, "elapsed_ms": round(p.elapsed_ms, 1),
    }


def _print(p: VoltVarProposal) -> None:
    print(f"Volt/VAR on {p.network} ({p.state_label}), objective {p.objective.value}, band "
          f"{p.band.low_pu:.3f}-{p.band.high_pu:.3f} pu")
    if p.actions:
        print(f"{'control':<16} {'kind':<10} {'phases':<6} {'before':>7} {'after':>7} {'ops':>4}")
        for a in p.actions:
            print(f"{a.element:<16} {a.kind.value:<10} {a.phases:<6} {a.before:7g} {a.after:7g} {a.operations:4d}")
    else:
        print("no action")
    print(f"{'':<8} {'losses kW':>10} {'demand kW':>10} {'V min pu':>9} {'V max pu':>9} {'outside':>7}")
    for label, f in (("before", p.before), ("after", p.after)):
        print(f"{label:<8} {f.loss_p_w / 1e3:10.1f} {f.load_p_w / 1e3:10.1f} {f.v_min_pu:9.4f} {f.v_max_pu:9.4f} "
              f"{f.voltage_violations:7d}")
    verdict = "verified" if p.verified else "NOT verified: " + "; ".join(v.text() for v in p.new_violations)
    print(f"band {'met' if p.feasible else 'NOT met'}; {verdict}; {p.flows} power flows in {p.elapsed_ms:.0f} ms")
    print(p.message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada voltvar", description="Volt/VAR proposal for a CIM network model")
    parser.add_argument("file", type=Path, help="CIM RDF/XML network model (.xml or .xml.gz)")
    parser.add_argument("--objective", choices=[o.value for o in Objective], default=Objective.LOSSES.value,
                        help="minimise losses, or demand by conservation voltage reduction (default losses)")
    parser.add_argument("--band", type=_band, default=VoltageBand(), help="voltage band LOW,HIGH in pu "
                        "(default 0.95,1.05)")
    parser.add_argument("--frequency-hz", type=float, default=None,
                        help="network frequency (default 50 for the embedded sample network, else 60)")
    parser.add_argument("--json", action="store_true", help="print the proposal as JSON")
    args = parser.parse_args(argv)
    from models.cim import load_cim
    from models.sample_network import F_HZ, NAME

    try:
        model = load_cim(args.file)
    except ModelError as exc:  # names the file itself
        print(f"dscada voltvar: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada voltvar: {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    freq = args.frequency_hz or (F_HZ if model.name.split(".")[0] == NAME else 60.0)
    try:
        proposal = optimise(NetworkState.from_model(model, label=args.file.name, frequency_hz=freq),
                            VoltVarOptions(objective=Objective(args.objective), band=args.band))
    except DmsError as exc:
        print(f"dscada voltvar: {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(proposal_data(proposal), indent=1))
    else:
        _print(proposal)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
