"""Calculated points: RTDB points whose source is a calculation in the control centre, not a field device.

A station opts in with ``[calculated] state_estimate = true``; the configuration then gets an internal source
``RtuConfig(name="DMS-SE", protocol="calculated")`` (no adapter, no simulator, no address) and these analog points,
written by the real-time state estimator (``dms.se.realtime``) through the one update path:

- ``<bus>.SE.V.ph_<X>`` kV phase-neutral estimate and ``<bus>.SE.V_sd.ph_<X>`` its standard deviation (kV), for
  every phase A/B/C of every bus at or above ``min_bus_kv`` line-to-line (default 1 kV: the 11 and 33 kV buses of
  the sample network, not the LV ones);
- ``<element>.SE.P.ph_<X>`` kW, ``.SE.Q.ph_<X>`` kvar and ``.SE.A.ph_<X>`` A for every series element with P/Q/I
  telemetry in the station (feeder breakers, ring switches, transformers), at the measured terminal, power counted
  into the element like the field points (``.T<n>`` is inserted when an element is measured at several terminals);
- ``<network>.SE.Losses`` kW, the network's active losses.

``element`` of each point is the bus or element mRID (the network's name for losses). Branch flows carry no standard
deviation: the estimate gives voltage variances only (the diagonal of the gain inverse), not the flow covariance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from models.measurement_points import MeasurementBinding, Quantity
from models.network import NetworkModel, Phase, single_phases
from models.points import PointDef, PointKind, PointSource

__all__ = [
    "CALCULATED_FRONTEND",
    "CalculatedPoint",
    "CalculatedQuantity",
    "SE_ADAPTER",
    "SE_SOURCE",
    "derive_state_estimate_points",
]

CALCULATED_FRONTEND = "calculated"  # PointSource.frontend of every calculated point (models.config.Protocol value)
SE_SOURCE = "DMS-SE"  # the internal source (RTU) of the state-estimation points
SE_ADAPTER = "dms:se"  # the adapter name the estimator writes and sends link events under
SE_TYPE_ID = "state_estimate"

_PHASES = (Phase.A, Phase.B, Phase.C)
_FLOW_QUANTITIES = (Quantity.P_KW, Quantity.Q_KVAR, Quantity.CURRENT_A)


class CalculatedQuantity(StrEnum):
    V_KV = "v_kv"  # phase-neutral voltage estimate
    V_SD_KV = "v_sd_kv"  # its standard deviation
    P_KW = "p_kw"  # into the element at the terminal
    Q_KVAR = "q_kvar"
    I_A = "i_a"
    LOSSES_KW = "losses_kw"


_UNITS = {CalculatedQuantity.V_KV: "kV", CalculatedQuantity.V_SD_KV: "kV", CalculatedQuantity.P_KW: "kW",
          CalculatedQuantity.Q_KVAR: "kvar", CalculatedQuantity.I_A: "A", CalculatedQuantity.LOSSES_KW: "kW"}
_SUFFIX = {CalculatedQuantity.V_KV: "V", CalculatedQuantity.V_SD_KV: "V_sd", CalculatedQuantity.P_KW: "P",
           CalculatedQuantity.Q_KVAR: "Q", CalculatedQuantity.I_A: "A"}
# Historian deadbands: an estimate moves a little every run; keep what an engineer would look at.
_DEADBAND = {CalculatedQuantity.V_KV: 0.005, CalculatedQuantity.V_SD_KV: 0.005, CalculatedQuantity.P_KW: 1.0,
             CalculatedQuantity.Q_KVAR: 1.0, CalculatedQuantity.I_A: 0.5, CalculatedQuantity.LOSSES_KW: 0.5}


@dataclass(frozen=True, slots=True)
class CalculatedPoint:
    """What one calculated point carries: the quantity, where (bus / element + measured terminal) and the phase."""

    point: int  # id in the station's point list
    name: str
    quantity: CalculatedQuantity
    bus: str  # bus name: of the voltage, or of the measured terminal of a flow; "" for losses
    element: str  # element name of a flow; "" otherwise
    terminal: int | None  # terminal sequence number of a flow
    phase: str  # "A", "B", "C"; "" for losses


@dataclass(frozen=True, slots=True)
class _Flow:
    element: str
    element_mrid: str
    terminal: int | None
    bus: int
    phases: Phase


def _measured_flows(network: NetworkModel, bindings: Sequence[MeasurementBinding | None]) -> list[_Flow]:
    """Series elements with P/Q/I telemetry, one entry per measured terminal, with the phases measured there."""
    loads = {ld.mrid for ld in network.loads}
    found: dict[tuple[str, int], _Flow] = {}
    for b in bindings:
        if b is None or b.quantity not in _FLOW_QUANTITIES or b.bus is None or b.element_mrid in loads:
            continue
        key = (b.element_name, b.bus)
        old = found.get(key)
        phases = (old.phases if old else Phase.NONE) | b.phase
        found[key] = _Flow(b.element_name, b.element_mrid, b.terminal, b.bus, phases)
    return sorted(found.values(), key=lambda f: (f.element, f.terminal or 0, f.bus))


def derive_state_estimate_points(network: NetworkModel, bindings: Sequence[MeasurementBinding | None], *,
                                 first_id: int, stale_after_s: float, min_bus_kv: float = 1.0
                                 ) -> tuple[tuple[PointDef, ...], tuple[CalculatedPoint, ...]]:
    """The state-estimation points of a station (ids from ``first_id``) and what each one carries.

    ``bindings``: the station's field-point bindings (which elements are measured)."""
    specs: list[tuple[str, CalculatedQuantity, str, str, str, int | None, str, str]] = []
    for bus in network.buses:
        if not bus.nominal_v >= min_bus_kv * 1e3:  # NaN (unknown) is left out as well
            continue
        for ph in single_phases(bus.phases):
            if ph not in _PHASES:
                continue
            for q in (CalculatedQuantity.V_KV, CalculatedQuantity.V_SD_KV):
                what = "voltage estimate" if q is CalculatedQuantity.V_KV else "voltage estimate standard deviation"
                specs.append((f"{bus.name}.SE.{_SUFFIX[q]}.ph_{ph.name}", q, bus.mrid, bus.name, "", None, ph.name,
                              f"{bus.name} phase {ph.name} {what} (phase-neutral)"))
    flows = _measured_flows(network, bindings)
    terminals: dict[str, int] = {}
    for f in flows:
        terminals[f.element] = terminals.get(f.element, 0) + 1
    for f in flows:
        tag = f".T{f.terminal}" if terminals[f.element] > 1 and f.terminal is not None else ""
        bus_name = network.buses[f.bus].name
        for ph in single_phases(f.phases):
            if ph not in _PHASES:
                continue
            for q in (CalculatedQuantity.P_KW, CalculatedQuantity.Q_KVAR, CalculatedQuantity.I_A):
                specs.append((f"{f.element}{tag}.SE.{_SUFFIX[q]}.ph_{ph.name}", q, f.element_mrid, bus_name,
                              f.element, f.terminal, ph.name,
                              f"{f.element} phase {ph.name} estimated {_UNITS[q]} into the element at {bus_name}"))
    specs.append((f"{network.name}.SE.Losses", CalculatedQuantity.LOSSES_KW, network.name, "", "", None, "",
                  f"{network.name} estimated active losses"))
    points: list[PointDef] = []
    calculated: list[CalculatedPoint] = []
    for k, (name, q, mrid, bus_name, element, terminal, phase, text) in enumerate(specs):
        pid = first_id + k
        points.append(PointDef(
            id=pid, name=name, kind=PointKind.ANALOG,
            source=PointSource(CALCULATED_FRONTEND, SE_SOURCE, 0, k, SE_TYPE_ID),
            units=_UNITS[q], element=mrid, terminal=terminal, description=f"calculated: {text}",
            stale_after_s=stale_after_s, historian_deadband=_DEADBAND[q]))
        calculated.append(CalculatedPoint(pid, name, q, bus_name, element, terminal, phase))
    return tuple(points), tuple(calculated)
