"""Measurement files for ``dscada se FILE --measurements CSV`` (three-phase, on a CIM model).

Columns (header required, any order; ``sigma`` may be left empty for the default accuracy class):

========  =======================================================================================================
kind      ``v_kv`` (phase-neutral voltage), ``p_kw``, ``q_kvar`` (power), ``i_a`` (current magnitude)
element   ``v_kv``: a bus name. Power/current: a line, switch or transformer name (power/current *into* the
          element at the terminal), or a load name (the load's consumption on that phase)
terminal  power/current on series elements: terminal number (1 = from end / winding 1, 2 = to end ...) or
          the name of the bus at that end; ignored for buses and loads
phase     A, B or C (s1/s2 for split-phase legs)
value     kV, kW, kvar or A
sigma     standard deviation in the same unit (empty: 0.5 % of the value plus a floor)
========  =======================================================================================================

Each row becomes one measurement named ``kind element terminal phase`` (what the bad-data report shows).
"""

from __future__ import annotations

import csv
from pathlib import Path

from dms.se.errors import MeasurementFileError
from dms.se.live_measurements import MeasurementAccuracy, MeasurementBuilder
from models.measurement_points import Quantity
from models.network import Phase

__all__ = ["COLUMNS", "read_measurement_csv"]

COLUMNS = ("kind", "element", "terminal", "phase", "value", "sigma")
_KINDS = {"v_kv": Quantity.VOLTAGE_KV, "p_kw": Quantity.P_KW, "q_kvar": Quantity.Q_KVAR, "i_a": Quantity.CURRENT_A}
_PHASES = {"a": Phase.A, "b": Phase.B, "c": Phase.C, "s1": Phase.S1, "s2": Phase.S2}


def read_measurement_csv(path: Path, builder: MeasurementBuilder, accuracy: MeasurementAccuracy) -> int:
    """Add every row of ``path`` to ``builder``; returns the number of rows. MeasurementFileError names the file,
    line and problem (unknown bus/element/phase, bad number, a de-energised or open element)."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c != "sigma" and c not in (reader.fieldnames or ())]
            if missing:
                raise MeasurementFileError(f"{path}:1: missing column(s) {', '.join(missing)} (need "
                                           f"{', '.join(COLUMNS)})")
            rows = list(reader)
    except OSError as exc:
        raise MeasurementFileError(f"{path}: cannot read ({exc.strerror})") from exc
    model = builder.mn.state.model
    buses = {b.name.lower(): b.index for b in model.buses}
    loads = {ld.name.lower(): ld for ld in model.loads}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        kind = _KINDS.get((row.get("kind") or "").strip().lower())
        if kind is None:
            raise MeasurementFileError(f"{where}: kind {row.get('kind')!r} is not one of {', '.join(_KINDS)}")
        phase = _PHASES.get((row.get("phase") or "").strip().lower())
        if phase is None:
            raise MeasurementFileError(f"{where}: phase {row.get('phase')!r} is not A, B, C, s1 or s2")
        element = (row.get("element") or "").strip()
        terminal = (row.get("terminal") or "").strip()
        try:
            value = float(row["value"])
            sigma_text = (row.get("sigma") or "").strip()
            sigma = float(sigma_text) if sigma_text else accuracy.sigma(kind, value)
        except (TypeError, ValueError) as exc:
            raise MeasurementFileError(f"{where}: bad number ({exc})") from None
        if not sigma > 0:
            raise MeasurementFileError(f"{where}: sigma {sigma} must be > 0")
        mid = f"{kind.value} {element} {terminal} {phase.name}".replace("  ", " ")
        if kind is Quantity.VOLTAGE_KV:
            bus = buses.get(element.lower())
            if bus is None:
                raise MeasurementFileError(f"{where}: no bus {element!r} in {model.name!r}")
            ok = builder.voltage(mid, bus, phase, value, sigma)
        elif element.lower() in loads:
            ok = kind is not Quantity.CURRENT_A and builder.load(mid, kind, loads[element.lower()].mrid, phase,
                                                                  value, sigma)
        else:
            bus_at = buses.get(terminal.lower())
            number = int(terminal) if terminal.isdigit() else None
            if bus_at is None and number is None:
                raise MeasurementFileError(f"{where}: terminal {terminal!r} is neither a number nor a bus name")
            ok = builder.branch(mid, kind, element, phase, value, sigma, bus=bus_at, terminal=number)
        if not ok:
            raise MeasurementFileError(f"{where}: {element!r} phase {phase.name} terminal {terminal!r} is not an "
                                       "energised bus, closed series element or load phase of the model")
    return len(rows)
