"""``dscada powerflow FILE --balanced [--json]``: balanced (positive-sequence) power flow of a CIM feeder.

Standalone: ``python -m models.powerflow_cli FILE --balanced``. Exit 0 on success, 2 when the file cannot be imported
or converted, the power flow does not converge, or the arguments are wrong (the reason on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from models.cim import CimError, load_cim
from models.pandapower_net import BalancedPowerFlow, PowerFlowError, run_balanced_powerflow

EXIT_OK = 0
EXIT_INVALID = 2


def result_data(result: BalancedPowerFlow) -> dict[str, Any]:
    """The result as plain JSON-able data (the table view prints the same)."""
    data = asdict(result)
    data["branches"] = [{**b, "kind": b["kind"].value} for b in data["branches"]]
    data["notes"] = list(result.notes)
    return data


def _print_tables(data: dict[str, Any]) -> None:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada powerflow", description="Power flow of a CIM feeder")
    parser.add_argument("file", help="CIM100 RDF/XML file")
    parser.add_argument("--balanced", action="store_true", required=True,
                        help="balanced positive-sequence equivalent (the only method so far)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help (0) or bad usage (2): return the code instead
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INVALID
    try:
        result = run_balanced_powerflow(load_cim(args.file))
    except (CimError, PowerFlowError) as exc:
        print(f"dscada powerflow: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada powerflow: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    data = result_data(result)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_tables(data)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
