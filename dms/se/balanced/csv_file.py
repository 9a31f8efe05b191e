"""``dscada se FILE --measurements CSV --balanced``: a balanced estimate of a pandapower JSON network.

The same columns as the three-phase file (``kind,element,terminal,phase,value,sigma``; ``phase`` is ignored):

- ``v_kv``: bus voltage magnitude, line-to-line kV (as pandapower's ``vn_kv``); ``element`` = ``bus <index>`` or
  the bus name.
- ``p_kw`` / ``q_kvar``: three-phase totals. ``element`` = ``bus <index or name>``: the power injected into the
  network at the bus (generation positive, loads negative); ``line <index or name>`` / ``trafo <index or name>``:
  the flow into the branch at ``terminal`` 1 (from / hv end) or 2 (to / lv end).
- ``i_a``: current magnitude into a line or transformer at ``terminal`` 1 or 2, amperes.
- ``sigma`` in the same unit (empty: 0.5 % of the value plus a floor).

Zero-injection buses get virtual measurements; observability is checked before solving (unobservable islands are an
error naming the buses); chi-square + largest-normalised-residual bad-data removal.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dms.se.balanced.bad_data import BadDataResult, estimate_with_bad_data
from dms.se.balanced.measurements import MeasKind, Side, make_measurements, with_zero_injections
from dms.se.balanced.model import BalancedNetwork, network_from_pandapower
from dms.se.errors import MeasurementFileError
from dms.se.live_measurements import MeasurementAccuracy
from models.measurement_points import Quantity

__all__ = ["BalancedFileEstimate", "estimate_balanced_file"]

_KINDS = {"v_kv": Quantity.VOLTAGE_KV, "p_kw": Quantity.P_KW, "q_kvar": Quantity.Q_KVAR, "i_a": Quantity.CURRENT_A}


@dataclass(frozen=True, slots=True, eq=False)
class BalancedFileEstimate:
    network: BalancedNetwork
    outcome: BadDataResult
    bus_names: tuple[str, ...]  # per internal bus
    vn_kv: np.ndarray  # per internal bus

    def data(self) -> dict:
        r = self.outcome.result
        return {"network": "balanced", "converged": True, "objective": r.objective, "dof": r.dof,
                "chi2_passed": self.outcome.chi2_passed, "bad_data_detected": self.outcome.detected,
                "bad_data": [{"measurement": m, "normalized_residual": rn} for m, rn in
                             zip(self.outcome.removed, self.outcome.removed_normalized_residuals, strict=True)],
                "iterations": r.iterations, "solve_ms": r.time_s * 1e3,
                "buses": [{"bus": name, "v_pu": float(abs(v)), "v_kv": float(abs(v) * kv),
                           "angle_deg": float(np.degrees(np.angle(v)))}
                          for name, v, kv in zip(self.bus_names, r.v, self.vn_kv, strict=True)]}


def _lookup(table, text: str, what: str, where: str) -> int:  # noqa: ANN001 - pandas DataFrame
    """A pandapower element by ``<table> <index>`` style index or by name."""
    token = text.strip()
    if token.isdigit() and int(token) in table.index:
        return int(token)
    hits = table.index[table["name"].astype(str) == token] if "name" in table else []
    if len(hits) == 1:
        return int(hits[0])
    raise MeasurementFileError(f"{where}: no {what} {text!r}")


def estimate_balanced_file(model_path: Path, csv_path: Path, accuracy: MeasurementAccuracy) -> BalancedFileEstimate:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pandapower as pp
    try:
        net = pp.from_json(str(model_path))
    except Exception as exc:  # pandapower raises whatever its JSON reader raises
        raise MeasurementFileError(f"{model_path}: cannot read a pandapower JSON network ({exc})") from exc
    try:
        pp.runpp(net)
    except Exception as exc:
        raise MeasurementFileError(f"{model_path}: the power flow that sets up the model failed ({exc})") from exc
    bn = network_from_pandapower(net)
    base_mva = bn.base_mva
    branch_index = {name: i for i, name in enumerate(bn.branch_names)}
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise MeasurementFileError(f"{csv_path}: cannot read ({exc.strerror})") from exc
    meas = make_measurements(len(rows))
    for i, row in enumerate(rows):
        where = f"{csv_path}:{i + 2}"
        kind = _KINDS.get((row.get("kind") or "").strip().lower())
        if kind is None:
            raise MeasurementFileError(f"{where}: kind {row.get('kind')!r} is not one of {', '.join(_KINDS)}")
        try:
            value = float(row["value"])
            sigma_text = (row.get("sigma") or "").strip()
            sigma = float(sigma_text) if sigma_text else accuracy.sigma(kind, value)
        except (KeyError, TypeError, ValueError) as exc:
            raise MeasurementFileError(f"{where}: bad number ({exc})") from None
        table, _, ident = (row.get("element") or "").strip().partition(" ")
        if kind is Quantity.VOLTAGE_KV or table == "bus":
            pp_bus = _lookup(net.bus, ident if table == "bus" else row["element"], "bus", where)
            k = bn.bus_of_pp.get(pp_bus)
            if k is None:
                raise MeasurementFileError(f"{where}: bus {pp_bus} is out of service or merged away")
            if kind is Quantity.VOLTAGE_KV:
                vn = float(net.bus.vn_kv.at[pp_bus])
                meas[i] = (MeasKind.V_MAG, k, Side.FROM, value / vn, sigma / vn, False)
            elif kind is Quantity.CURRENT_A:
                raise MeasurementFileError(f"{where}: a current needs a line or trafo, not a bus")
            else:
                mk = MeasKind.P_INJ if kind is Quantity.P_KW else MeasKind.Q_INJ
                meas[i] = (mk, k, Side.FROM, value / 1e3 / base_mva, sigma / 1e3 / base_mva, False)
            continue
        if table not in ("line", "trafo"):
            raise MeasurementFileError(f"{where}: element {row.get('element')!r}: use 'bus N', 'line N' or 'trafo N'")
        idx = _lookup(net[table], ident, table, where)
        b = branch_index.get(f"{table} {idx}")
        if b is None:
            raise MeasurementFileError(f"{where}: {table} {idx} is out of service")
        terminal = (row.get("terminal") or "1").strip()
        if terminal not in ("1", "2"):
            raise MeasurementFileError(f"{where}: terminal {terminal!r} must be 1 (from/hv) or 2 (to/lv)")
        side = Side.FROM if terminal == "1" else Side.TO
        if kind is Quantity.CURRENT_A:
            end_bus = bn.f_bus[b] if side is Side.FROM else bn.t_bus[b]
            pp_end = next(p for p, k in bn.bus_of_pp.items() if k == end_bus)
            i_base_a = base_mva * 1e6 / (math.sqrt(3.0) * float(net.bus.vn_kv.at[pp_end]) * 1e3)
            meas[i] = (MeasKind.I_MAG, b, side, value / i_base_a, sigma / i_base_a, False)
        else:
            mk = MeasKind.P_FLOW if kind is Quantity.P_KW else MeasKind.Q_FLOW
            meas[i] = (mk, b, side, value / 1e3 / base_mva, sigma / 1e3 / base_mva, False)
    outcome = estimate_with_bad_data(bn, with_zero_injections(bn, meas))
    vn = np.zeros(bn.n_bus)
    for pp_bus, k in bn.bus_of_pp.items():
        vn[k] = float(net.bus.vn_kv.at[pp_bus])
    names = tuple(str(net.bus.name.at[min(p for p, k in bn.bus_of_pp.items() if k == i)])
                  if any(k == i for k in bn.bus_of_pp.values()) else bn.bus_names[i] for i in range(bn.n_bus))
    return BalancedFileEstimate(bn, outcome, names, vn)
