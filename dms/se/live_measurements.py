"""Measurements for the model-based estimator in engineering units: from live RTDB points, CSV files or a flow.

:class:`MeasurementBuilder` turns values in kV / kW / kvar / A at a bus phase or at an element's terminal phase into
rows of a :class:`~dms.se.measurements.MeasurementSet` in per unit of a :class:`~dms.se.phase_network.ModelNetwork`.

Live points (:func:`live_measurements`): every VOLTAGE_KV / P_KW / Q_KVAR / CURRENT_A point bound to the model
becomes a measurement with sigma ``percent_of_reading`` % of |value| plus the quantity's floor
(:class:`MeasurementAccuracy`). Excluded (listed with the reason): values with INVALID, COMM_LOST, NOT_TOPICAL
(stale), OPERATOR_BLOCKED, BLOCKED or OVERFLOW set; values with QUESTIONABLE set by anyone but the estimator (the
points the estimator flagged itself stay in, so it can see them come good again); non-finite values; points whose
bus/element is open, de-energised or not in the model, and flows of capacitors (they are part of the admittance
matrix). P/Q points of loads (EnergyConsumer) are load telemetry: they replace the load's pseudo value on that
phase (``MeasurementBuilder.load_values``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from dms.se.errors import SeError
from dms.se.measurements import MeasurementKind, MeasurementSet, measurement_array
from dms.se.phase_network import ModelNetwork
from models.config import StationConfig
from models.measurement_points import Quantity
from models.network import Phase, single_phases
from models.points import Quality

__all__ = ["EXCLUDING_QUALITY", "Excluded", "MeasurementAccuracy", "MeasurementBuilder", "live_measurements"]

#: Quality bits that keep a value out of the estimate (QUESTIONABLE is handled apart: see the module text).
EXCLUDING_QUALITY = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL | Quality.OPERATOR_BLOCKED
                        | Quality.BLOCKED | Quality.OVERFLOW)
ANALOG_QUANTITIES = (Quantity.VOLTAGE_KV, Quantity.P_KW, Quantity.Q_KVAR, Quantity.CURRENT_A)


@dataclass(frozen=True, slots=True)
class MeasurementAccuracy:
    """Sigma of a telemetered value: ``percent_of_reading`` % of |value| plus the quantity's floor."""

    percent_of_reading: float = 0.5
    voltage_floor_kv: float = 0.005
    power_floor_kw: float = 1.0  # also kvar
    current_floor_a: float = 0.5

    def __post_init__(self) -> None:
        for name in ("percent_of_reading", "voltage_floor_kv", "power_floor_kw", "current_floor_a"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"measurement accuracy: {name} must be >= 0, got {getattr(self, name)}")
        if self.percent_of_reading == 0 and min(self.voltage_floor_kv, self.power_floor_kw, self.current_floor_a) == 0:
            raise ValueError("measurement accuracy: a zero percentage needs non-zero floors")

    def sigma(self, quantity: Quantity, value: float) -> float:
        floor = {Quantity.VOLTAGE_KV: self.voltage_floor_kv, Quantity.CURRENT_A: self.current_floor_a}.get(
            quantity, self.power_floor_kw)
        return abs(value) * self.percent_of_reading / 100.0 + floor


@dataclass(frozen=True, slots=True)
class Excluded:
    point: str
    reason: str


class MeasurementBuilder:
    """Collects measurement rows (engineering units in, per unit out); :meth:`build` makes the set."""

    def __init__(self, mn: ModelNetwork) -> None:
        self.mn = mn
        self._rows: list[tuple[int, int, int, float, float, bool]] = []
        self._ids: list[str] = []
        # Telemetered load powers (loads are injections, not branches): (load index, phase flag, P or Q) ->
        # (value W or var, sigma, point name). The pseudo step uses them in place of pseudo values.
        self.load_values: dict[tuple[int, int, Quantity], tuple[float, float, str]] = {}
        self._load_index = {ld.mrid: i for i, ld in enumerate(mn.state.model.loads)}

    def __len__(self) -> int:
        return len(self._rows)

    def add_pu(self, mid: str, kind: MeasurementKind, node: int, node2: int, value: float, sigma: float,
               pseudo: bool = False) -> None:
        self._rows.append((int(kind), int(node), int(node2), float(value), float(sigma), pseudo))
        self._ids.append(mid)

    def nodes_of(self, kind: MeasurementKind) -> list[int]:
        return [r[1] for r in self._rows if r[0] == int(kind)]

    def voltage(self, mid: str, bus: int, phase: Phase, v_kv: float, sigma_kv: float) -> bool:
        """|V| phase-to-neutral at a bus phase; False when the node is not energised / not in the model."""
        node = self.mn.node_of(bus, phase)
        if node is None:
            return False
        base = self.mn.base_v[node] / 1e3
        self.add_pu(mid, MeasurementKind.V_MAG, node, node, v_kv / base, sigma_kv / base)
        return True

    def branch(self, mid: str, quantity: Quantity, element: str, phase: Phase, value: float, sigma: float, *,
               bus: int | None = None, terminal: int | None = None) -> bool:
        """P (kW), Q (kvar) or I (A) into ``element`` at its terminal (by bus, else terminal number) on ``phase``."""
        row = self.mn.terminal_row(element, phase, bus=bus, terminal=terminal)
        if row is None:
            return False
        assert self.mn.network.branch_node is not None
        node = int(self.mn.network.branch_node[row])
        s = self.mn.s_base_va
        if quantity is Quantity.CURRENT_A:
            scale = self.mn.base_v[node] / s
            kind = MeasurementKind.I_MAG
        elif quantity in (Quantity.P_KW, Quantity.Q_KVAR):
            scale = 1e3 / s
            kind = MeasurementKind.P_FLOW if quantity is Quantity.P_KW else MeasurementKind.Q_FLOW
        else:
            raise SeError(f"measurement {mid!r}: {quantity.value} is not a branch quantity")
        self.add_pu(mid, kind, row, node, value * scale, sigma * scale)
        return True

    def load(self, mid: str, quantity: Quantity, load_mrid: str, phase: Phase, value: float, sigma: float) -> bool:
        """P (kW) or Q (kvar) consumed by a load on one phase; False when the load or phase is not energised."""
        i = self._load_index.get(load_mrid)
        if i is None or quantity not in (Quantity.P_KW, Quantity.Q_KVAR):
            return False
        ld = self.mn.state.model.loads[i]
        if self.mn.node_of(ld.bus, phase) is None:
            return False
        self.load_values[(i, int(phase), quantity)] = (value * 1e3, sigma * 1e3, mid)
        return True

    def is_load(self, element_mrid: str) -> bool:
        return element_mrid in self._load_index

    def build(self) -> MeasurementSet:
        data = measurement_array(len(self._rows))
        for i, row in enumerate(self._rows):
            data[i] = row
        if len(set(self._ids)) != len(self._ids):
            dup = next(x for x in self._ids if self._ids.count(x) > 1)
            raise SeError(f"measurement {dup!r} appears more than once")
        return MeasurementSet(tuple(self._ids), data)


def live_measurements(builder: MeasurementBuilder, config: StationConfig, snapshot: np.ndarray, *,
                      accuracy: MeasurementAccuracy, own_flags: Iterable[int] = ()) -> list[Excluded]:
    """Add every usable bound analog of an RTDB ``snapshot`` (CHANGE_DTYPE rows) to ``builder``; the measurement
    id is the point name. Returns the points left out, with the reason."""
    own = set(own_flags)
    excluded: list[Excluded] = []
    for row in snapshot:
        pid = int(row["point"])
        point = config.points[pid]
        b = config.binding(point)
        if b is None or b.quantity not in ANALOG_QUANTITIES:
            continue
        q = int(row["quality"])
        value = float(row["value"])
        if q & EXCLUDING_QUALITY:
            excluded.append(Excluded(point.name, "quality " + "|".join(Quality(q & EXCLUDING_QUALITY).names())))
            continue
        if q & Quality.QUESTIONABLE and pid not in own:
            excluded.append(Excluded(point.name, "quality QUESTIONABLE (set by another application)"))
            continue
        if not np.isfinite(value):
            excluded.append(Excluded(point.name, "no value"))
            continue
        phases = single_phases(b.phase)
        if len(phases) != 1:
            excluded.append(Excluded(point.name, f"not a per-phase point ({b.phase!r})"))
            continue
        sigma = accuracy.sigma(b.quantity, value)
        if b.quantity is not Quantity.VOLTAGE_KV and builder.is_load(b.element_mrid):
            ok = builder.load(point.name, b.quantity, b.element_mrid, phases[0], value, sigma)
            if not ok:
                excluded.append(Excluded(point.name, f"load {b.element_name}: {b.quantity.value} phase "
                                                     f"{phases[0].name} not used (de-energised or a current)"))
            continue
        if b.quantity is Quantity.VOLTAGE_KV:
            ok = b.bus is not None and builder.voltage(point.name, b.bus, phases[0], value, sigma)
        else:
            ok = builder.branch(point.name, b.quantity, b.element_name, phases[0], value, sigma, bus=b.bus,
                                terminal=b.terminal)
        if not ok:
            excluded.append(Excluded(point.name, f"{b.element_name} phase {phases[0].name} is open, de-energised "
                                                 "or not a series element (capacitor flows are not used)"))
    return excluded
