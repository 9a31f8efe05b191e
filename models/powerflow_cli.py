"""``dscada powerflow FILE [--three-phase|--balanced] [--der on|off] [--json]``: power flow of a CIM feeder.

Three-phase (unbalanced, on the phase-level model) is the default when the phase model can be built, else the
balanced positive-sequence pandapower flow. The three-phase output carries the balanced result beside it (a
"balanced" column per bus) so the cost of the balanced approximation is visible. ``--der off`` disconnects the DERs
in both. Standalone: ``python -m models.powerflow_cli FILE``. Exit 0 on success, 2 when the file cannot be imported
or converted, the power flow does not converge, or the arguments are wrong (the reason on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import asdict
from enum import StrEnum
from typing import Any

from models.cim import CimError, load_cim
from models.errors import ModelError
from models.network import NetworkModel
from models.phase_model import PhaseModel, PhaseModelError, build_phase_model
from models.three_phase_flow import DerMode, ThreePhaseFlow, run_three_phase_powerflow

EXIT_OK = 0
EXIT_INVALID = 2


class Method(StrEnum):
    THREE_PHASE = "three-phase"
    BALANCED = "balanced"


def result_data(result: Any) -> dict[str, Any]:
    """The balanced result as plain JSON-able data (the table view prints the same)."""
    data = asdict(result)
    data["branches"] = [{**b, "kind": b["kind"].value} for b in data["branches"]]
    data["notes"] = list(result.notes)
    return data


def three_phase_data(result: ThreePhaseFlow, balanced: dict[str, Any] | None,
                     balanced_error: str | None) -> dict[str, Any]:
    """The three-phase result as plain JSON-able data, with the balanced bus voltages beside it."""
    vm_balanced = {b["name"].lower(): b["vm_pu"] for b in balanced["buses"]} if balanced else {}
    nodes = [{"bus": str(r["bus"]), "phase": str(r["phase"]), "v_pu": _num(r["v_pu"]), "v_v": _num(r["v_v"]),
              "angle_deg": _num(r["angle_deg"]), "energised": bool(r["energised"]),
              "balanced_vm_pu": vm_balanced.get(str(r["bus"]).lower())} for r in result.nodes]
    branches = [{"element": str(r["element"]), "kind": str(r["kind"]), "terminal": int(r["terminal"]),
                 "bus": str(r["bus"]), "phase": str(r["phase"]), "p_w": float(r["p_w"]), "q_var": float(r["q_var"]),
                 "i_a": float(r["i_a"])} for r in result.branches]
    totals = {k: getattr(result, k) for k in ("source_p_w", "source_q_var", "load_p_w", "load_q_var", "der_p_w",
                                               "der_q_var", "capacitor_q_var", "loss_p_w", "loss_q_var")}
    return {
        "method": Method.THREE_PHASE.value, "network": result.network, "der": result.der_mode.value,
        "source_model": result.source_model.value, "iterations": result.iterations,
        "tolerance_pu": result.tolerance_pu, "max_mismatch_a": result.max_mismatch_a, "solve_s": result.solve_s,
        "totals": totals, "taps": [asdict(t) for t in result.taps], "nodes": nodes, "branches": branches,
        "deenergised_nodes": list(result.deenergised_nodes), "notes": list(result.notes),
        "balanced": None if balanced is None else {k: balanced[k] for k in (
            "iterations", "solve_s", "ext_grid_p_mw", "ext_grid_q_mvar", "loss_p_mw", "loss_q_mvar", "notes")},
        "balanced_error": balanced_error,
    }


def _num(x: float) -> float | None:
    return None if math.isnan(float(x)) else float(x)


def _print_balanced(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{data['network']}[/bold]: balanced power flow converged in {data['iterations']} "
                  f"iterations ({data['solve_s'] * 1e3:.1f} ms)")
    buses = Table(title="Bus voltages")
    for col in ("bus", "vn_kv", "vm_pu", "va_degree"):
        buses.add_column(col, justify="left" if col == "bus" else "right")
    for b in data["buses"]:
        buses.add_row(b["name"], f"{b['vn_kv']:.3f}", f"{b['vm_pu']:.4f}", f"{b['va_degree']:.2f}")
    console.print(buses)
    branches = Table(title="Branch flows (from end; MW, Mvar)")
    for col in ("branch", "kind", "from", "to", "p_from_mw", "q_from_mvar", "pl_mw", "ql_mvar"):
        branches.add_column(col)
    for b in data["branches"]:
        branches.add_row(b["name"], b["kind"], b["from_bus"], b["to_bus"], f"{b['p_from_mw']:.4f}",
                         f"{b['q_from_mvar']:.4f}", f"{b['pl_mw']:.5f}", f"{b['ql_mvar']:.5f}")
    console.print(branches)
    totals = Table(title="Totals")
    totals.add_column("quantity")
    totals.add_column("value", justify="right")
    for key in ("ext_grid_p_mw", "ext_grid_q_mvar", "load_p_mw", "load_q_mvar", "sgen_p_mw", "sgen_q_mvar",
                "shunt_q_mvar", "loss_p_mw", "loss_q_mvar"):
        totals.add_row(key, f"{data[key]:.5f}")
    console.print(totals)
    for note in data["notes"]:
        console.print(f"note: {note}")


def _print_three_phase(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{data['network']}[/bold]: three-phase power flow converged in {data['iterations']} "
                  f"iterations (tolerance {data['tolerance_pu']:.0e} pu, residual {data['max_mismatch_a']:.2e} A, "
                  f"{data['solve_s'] * 1e3:.1f} ms), DERs {data['der']}")
    nodes = Table(title="Node voltages (balanced: positive-sequence pandapower flow, per bus)")
    for col in ("bus", "phase", "|V| pu", "|V| V", "angle deg", "balanced pu"):
        nodes.add_column(col, justify="left" if col in ("bus", "phase") else "right")
    for r in data["nodes"]:
        bal = r["balanced_vm_pu"]
        nodes.add_row(r["bus"], r["phase"], f"{r['v_pu']:.4f}", f"{r['v_v']:.1f}",
                      "-" if r["angle_deg"] is None else f"{r['angle_deg']:.2f}", "-" if bal is None else f"{bal:.4f}")
    console.print(nodes)
    branches = Table(title="Branch flows (into the element at each terminal)")
    for col in ("element", "kind", "term", "bus", "phase", "P kW", "Q kvar", "I A"):
        branches.add_column(col, justify="left" if col in ("element", "kind", "bus", "phase") else "right")
    for b in data["branches"]:
        branches.add_row(b["element"], b["kind"], str(b["terminal"]), b["bus"], b["phase"], f"{b['p_w'] / 1e3:.2f}",
                         f"{b['q_var'] / 1e3:.2f}", f"{b['i_a']:.2f}")
    console.print(branches)
    totals = Table(title="Totals (kW, kvar)")
    totals.add_column("quantity")
    totals.add_column("three-phase", justify="right")
    totals.add_column("balanced", justify="right")
    bal = data["balanced"] or {}
    pairs = {"source_p_w": "ext_grid_p_mw", "source_q_var": "ext_grid_q_mvar", "loss_p_w": "loss_p_mw",
             "loss_q_var": "loss_q_mvar"}
    for key, value in data["totals"].items():
        other = bal.get(pairs.get(key, ""))
        totals.add_row(key, f"{value / 1e3:.2f}", "-" if other is None else f"{other * 1e3:.2f}")
    console.print(totals)
    for t in data["taps"]:
        console.print(f"tap {t['name']} ({t['transformer']} {t['phases']}): step {t['step']:g}, "
                      f"ratio {t['ratio_pu']:.5f}")
    for note in data["notes"] + [f"balanced: {n}" for n in bal.get("notes", [])]:
        console.print(f"note: {note}")
    if data["balanced_error"]:
        console.print(f"note: balanced flow not available: {data['balanced_error']}")


def _balanced(network: NetworkModel) -> dict[str, Any]:
    from models.pandapower_net import run_balanced_powerflow  # pandapower is slow to import: only when asked

    return result_data(run_balanced_powerflow(network))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada powerflow", description="Power flow of a CIM feeder")
    parser.add_argument("file", help="CIM100 RDF/XML file")
    method = parser.add_mutually_exclusive_group()
    method.add_argument("--three-phase", dest="method", action="store_const", const=Method.THREE_PHASE,
                        help="unbalanced flow on the phase-level model (default when it can be built)")
    method.add_argument("--balanced", dest="method", action="store_const", const=Method.BALANCED,
                        help="balanced positive-sequence equivalent (pandapower)")
    parser.add_argument("--der", choices=[m.value for m in DerMode], default=DerMode.ON.value,
                        help="'off' disconnects every DER (default on)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help (0) or bad usage (2): return the code instead
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INVALID
    der = DerMode(args.der)
    try:
        network = load_cim(args.file)
        if der is DerMode.OFF:
            network = dataclasses.replace(network, ders=())
        chosen: Method = args.method
        pm: PhaseModel | None = None
        if chosen is not Method.BALANCED:
            try:
                pm = build_phase_model(network)
                chosen = Method.THREE_PHASE
            except PhaseModelError as exc:
                if args.method is Method.THREE_PHASE:
                    raise
                print(f"dscada powerflow: phase model not available ({exc}); balanced flow instead", file=sys.stderr)
                chosen = Method.BALANCED
        if chosen is Method.BALANCED:
            data = _balanced(network)
        else:
            result = run_three_phase_powerflow(network, der=der, phase_model=pm)
            balanced, balanced_error = None, None
            try:
                balanced = _balanced(network)
            except ModelError as exc:  # reported beside, never fatal for the three-phase answer
                balanced_error = str(exc)
            data = three_phase_data(result, balanced, balanced_error)
    except (CimError, ModelError) as exc:
        print(f"dscada powerflow: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada powerflow: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(data, indent=2))
    elif chosen is Method.BALANCED:
        _print_balanced(data)
    else:
        _print_three_phase(data)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
