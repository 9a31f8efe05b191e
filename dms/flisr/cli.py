"""``dscada flisr FILE --fault SECTION [--json] [--frequency HZ] [--controllable SW,...]``: the FLISR plan for a
fault on a line, as a study (no server, nothing reaches the field).

FILE is a CIM file (``.xml`` or ``.xml.gz``; the embedded sample is ``models/data/sample_network.xml.gz``). The
protective device that trips is the nearest closed breaker/recloser upstream of SECTION (the switch nearest the
source when the feeder has none, as on IEEE 123); the FPIs between it and the fault pick up. Controllable switches:
``--controllable`` names them; by default the switches with a telemetered position (``Pos`` measurement, fuses
excepted) when the model has any, else every switch but fuses. Frequency: 50 Hz for the embedded sample network
(model name ``sample_network``, the file's stem), else 60 Hz, unless ``--frequency`` says otherwise. Exit 0 with a
plan (even one that leaves customers off), 2 when the file cannot be read, SECTION or a switch is unknown, or the
arguments are wrong (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from dms.errors import DmsError
from dms.flisr.locate import locate_section
from dms.flisr.plan import FlisrPlan
from dms.flisr.planner import DEFAULT_REPAIR_TIME_H, FlisrOptions, plan_restoration
from dms.network_state import NetworkState
from models.cim import CimError, load_cim
from models.errors import ModelError
from models.network import NetworkModel, SwitchKind
from models.sample_network import F_HZ as SAMPLE_F_HZ

__all__ = ["default_controllable", "main", "plan_data"]

EXIT_OK = 0
EXIT_INVALID = 2
SAMPLE_MODEL_NAME = "sample_network"


def default_controllable(model: NetworkModel) -> frozenset[str] | None:
    """Switches with a telemetered position (a ``Pos`` measurement), fuses excepted; None when the model has no
    switch position measurement at all (then every switch but fuses counts as controllable)."""
    by_mrid = {s.mrid: s for s in model.switches}
    named = frozenset(by_mrid[m.element_mrid].name for m in model.measurements
                      if m.measurement_type == "Pos" and m.element_mrid in by_mrid
                      and by_mrid[m.element_mrid].kind is not SwitchKind.FUSE)
    return named or None


def plan_data(plan: FlisrPlan) -> dict[str, Any]:
    """The plan as plain JSON-able data (enums as their values)."""
    data = asdict(plan)
    data["steps"] = [asdict(s) for s in plan.steps]
    data["customers_restored"] = plan.customers_restored
    return json.loads(json.dumps(data))  # StrEnum members become plain strings


def _print(plan: FlisrPlan, network: str, controllable_note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{network}[/bold]: fault on {plan.fault.tripped_switch} trip, "
                  f"{plan.fault.description}")
    console.print(f"faulted section: {', '.join(plan.fault.faulted_elements)}; controllable: {controllable_note}")
    steps = Table(title="Switching steps")
    for col in ("#", "switch", "action", "purpose", "telemetered", "reason"):
        steps.add_column(col)
    for s in plan.steps:
        steps.add_row(str(s.number), s.switch, s.action.value, s.purpose.value, "yes" if s.telemetered else "crew",
                      s.reason)
    console.print(steps)
    if plan.options:
        options = Table(title="Restoration options checked by power flow")
        for col in ("area", "close", "open", "customers", "accepted", "check"):
            options.add_column(col)
        for o in plan.options:
            options.add_row(o.area, ", ".join(o.closes), ", ".join(o.opens) or "-", str(o.customers),
                            "yes" if o.accepted else "no", o.check)
        console.print(options)
    figures = Table(title="Customers")
    for col in ("interrupted", "restored upstream", "restored downstream", "unserved", "priority unserved"):
        figures.add_column(col, justify="right")
    figures.add_row(*(str(v) for v in (plan.customers_interrupted, plan.customers_restored_upstream,
                                       plan.customers_restored_downstream, plan.customers_unserved,
                                       plan.priority_customers_unserved)))
    console.print(figures)
    if plan.shed_loads:
        console.print(f"shed loads: {', '.join(plan.shed_loads)}")
    if plan.der_islands:
        console.print(f"DER islands: {', '.join(plan.der_islands)}")
    console.print(f"final check: {plan.final_check}")
    for note in plan.notes:
        console.print(f"note: {note}")
    console.print(f"planned in {plan.plan_ms:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dscada flisr", description="FLISR plan for a fault on a line (study)")
    parser.add_argument("file", help="CIM100 RDF/XML file (.xml or .xml.gz)")
    parser.add_argument("--fault", required=True, metavar="SECTION", help="the faulted line (name or mRID)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--frequency", type=float, metavar="HZ",
                        help="network frequency (default 50 Hz for the embedded sample, else 60 Hz)")
    parser.add_argument("--controllable", metavar="SW,...",
                        help="remotely controllable switches (default: those with a telemetered position)")
    parser.add_argument("--repair-time-h", type=float, default=DEFAULT_REPAIR_TIME_H,
                        help="how long a DER island must carry its load (default %(default)s h)")
    parser.add_argument("--loading-limit", type=float, default=100.0, metavar="PCT",
                        help="loading limit in %% of the ratings (default %(default)s)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # argparse exits on --help (0) or bad usage (2): return the code instead
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INVALID
    try:
        model = load_cim(args.file)
        frequency = args.frequency or (SAMPLE_F_HZ if model.name.removesuffix(".xml") == SAMPLE_MODEL_NAME
                                          else 60.0)
        state = NetworkState.from_model(model, label=f"study of {args.file}", frequency_hz=frequency)
        if args.controllable is not None:
            controllable: frozenset[str] | None = frozenset(s.strip() for s in args.controllable.split(",")
                                                            if s.strip())
            note = "as given"
        else:
            controllable = default_controllable(model)
            note = "telemetered switches" if controllable is not None else "every switch but fuses"
        options = FlisrOptions(controllable=controllable, repair_time_h=args.repair_time_h,
                               loading_limit_pct=args.loading_limit)
        fault = locate_section(state, args.fault, controllable=controllable)
        plan = plan_restoration(state, fault, options=options)
    except (CimError, ModelError, DmsError) as exc:
        text = " ".join(str(exc).split())  # one line, even for a list of CIM problems
        print(f"dscada flisr: {text if args.file in text else f'{args.file}: {text}'}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"dscada flisr: cannot read {args.file}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if args.json:
        print(json.dumps(plan_data(plan), indent=2))
    else:
        _print(plan, model.name, note)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
