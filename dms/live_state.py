"""The real-time NetworkState: switch positions from the live topology, tap and capacitor positions from the RTDB,
loads from the state estimator when it has an estimate, else the model's loads scaled per feeder by the metered
feeder-head active power (the classic pseudo-load method: each feeder's loads keep their shares, the feeder total
follows its breaker's meter).

A value is used only with a usable quality (not invalid, not communication-lost, not stale, not operator-blocked);
otherwise the model's value stays and the state's label says so.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from dms.network_state import NetworkState
from models.config import StationConfig
from models.measurement_points import Quantity
from models.network import NetworkModel, SwitchKind
from models.points import DoubleState, Quality
from scada.rtdb import Rtdb
from scada.tags import Tag, TagKind
from scada.topology_service import TopologyService

__all__ = ["LiveStateSource", "LoadEstimates", "USABLE_QUALITY_MASK", "feeder_head_points", "held_switches"]

#: A value with any of these bits says nothing reliable about the field now.
USABLE_QUALITY_MASK = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL | Quality.OPERATOR_BLOCKED)
_HEAD_KINDS = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})

#: Returns (p_w, q_var) per model load, or None when no estimate is available.
LoadEstimates = Callable[[], tuple[np.ndarray, np.ndarray] | None]


@dataclass(frozen=True, slots=True)
class _FeederMeter:
    feeder_mrid: str
    loads: np.ndarray  # indices of the feeder's loads
    p_points: tuple[int, ...]  # per-phase active power into the feeder at its head breaker


def feeder_head_points(config: StationConfig, model: NetworkModel) -> dict[str, tuple[int, ...]]:
    """Feeder mRID -> ids of the per-phase active-power points of its head breaker (the breaker of the feeder whose
    one side sits on a bus outside the feeder, e.g. the substation busbar)."""
    heads: dict[str, str] = {}
    for sw in model.switches:
        if sw.kind in _HEAD_KINDS and sw.feeder_mrid and sw.feeder_mrid not in heads:
            sides = (model.buses[sw.from_bus].feeder_mrid, model.buses[sw.to_bus].feeder_mrid)
            if sw.feeder_mrid not in sides or None in sides or len(set(sides)) > 1:
                heads[sw.feeder_mrid] = sw.mrid
    out: dict[str, list[int]] = {}
    by_switch = {mrid: feeder for feeder, mrid in heads.items()}
    for p in config.points:
        b = config.binding(p)
        if b is not None and b.quantity is Quantity.P_KW and b.element_mrid in by_switch:
            out.setdefault(by_switch[b.element_mrid], []).append(p.id)
    return {k: tuple(v) for k, v in out.items()}


class LiveStateSource:
    """Builds the present NetworkState on request (cheap: a snapshot and a few array operations)."""

    def __init__(self, config: StationConfig, rtdb: Rtdb, topology: TopologyService, *,
                 load_estimates: LoadEstimates | None = None) -> None:
        self._config = config
        self._rtdb = rtdb
        self._topology = topology
        self._lock = threading.Lock()
        self.load_estimates = load_estimates
        self._bound_model: NetworkModel | None = None
        self._meters: tuple[_FeederMeter, ...] = ()
        self._tap_points: dict[int, int] = {}  # tap changer index -> tap position point
        self._cap_points: dict[int, int] = {}  # capacitor index -> position point

    def _bind(self, model: NetworkModel) -> None:
        """(Re)bind points to a model's elements; redone when the live model is replaced."""
        if self._bound_model is model:
            return
        heads = feeder_head_points(self._config, model)
        meters = []
        for feeder in model.feeders:
            loads = np.array([i for i, ld in enumerate(model.loads) if ld.feeder_mrid == feeder.mrid], dtype=int)
            if feeder.mrid in heads and len(loads):
                meters.append(_FeederMeter(feeder.mrid, loads, heads[feeder.mrid]))
        taps = {t.mrid: i for i, t in enumerate(model.tap_changers)}
        caps = {c.mrid: i for i, c in enumerate(model.capacitors)}
        self._tap_points, self._cap_points = {}, {}
        for p in self._config.points:
            b = self._config.binding(p)
            if b is None:
                continue
            if b.quantity is Quantity.TAP_POSITION and b.tap_changer_mrid in taps:
                self._tap_points[taps[b.tap_changer_mrid]] = p.id
            elif b.quantity is Quantity.SWITCH_POSITION and b.element_mrid in caps:
                self._cap_points[caps[b.element_mrid]] = p.id
        self._meters = tuple(meters)
        self._bound_model = model

    def state(self) -> NetworkState:
        snap = self._topology.snapshot()
        with self._lock:
            self._bind(snap.model)
            base = NetworkState.from_model(snap.model, label=f"real time (topology v{snap.version})",
                                           frequency_hz=self._config.frequency_hz)
            state = base.with_switch_array(snap.switch_closed)
            values = self._rtdb.snapshot()
            usable = (values["quality"] & USABLE_QUALITY_MASK) == 0
            taps = state.tap_step.copy()
            for i, pid in self._tap_points.items():
                tc = snap.model.tap_changers[i]
                if usable[pid] and tc.low_step <= values["value"][pid] <= tc.high_step:
                    taps[i] = values["value"][pid]
            caps = state.capacitor_sections.copy()
            for i, pid in self._cap_points.items():
                if usable[pid] and values["value"][pid] in (DoubleState.OFF, DoubleState.ON):
                    caps[i] = float(max(snap.model.capacitors[i].maximum_sections, 1)) \
                        if values["value"][pid] == DoubleState.ON else 0.0
            state = state.replace(tap_step=taps, capacitor_sections=caps)
            estimated = self.load_estimates() if self.load_estimates is not None else None
            if estimated is not None:
                return state.replace(load_p_w=estimated[0], load_q_var=estimated[1],
                                     label=f"{state.label}, loads from the state estimate")
            p, q = state.load_p_w.copy(), state.load_q_var.copy()
            scaled = 0
            for meter in self._meters:
                pts = np.asarray(meter.p_points)
                if not usable[pts].all():
                    continue
                measured_w = abs(float(values["value"][pts].sum())) * 1e3
                model_w = float(base.load_p_w[meter.loads].sum())
                if model_w > 0 and measured_w > 0 and math.isfinite(measured_w):
                    factor = measured_w / model_w
                    p[meter.loads] *= factor
                    q[meter.loads] *= factor
                    scaled += 1
            label = f"{state.label}, loads scaled by {scaled} feeder meters" if scaled else \
                f"{state.label}, model loads (no usable feeder meter)"
            return state.replace(load_p_w=p, load_q_var=q, label=label)


#: Tag kinds that keep a switch where it is, or (on another element) keep its section as it is.
_HOLDING_TAGS = frozenset({TagKind.HOLD, TagKind.CLEARANCE, TagKind.FAULTED})


def held_switches(model: NetworkModel, tags: Iterable[Tag]) -> frozenset[str]:
    """Switches an optimisation must not operate: tagged hold/clearance/faulted themselves (by name, mRID or a point
    named after them), or touching an element marked faulted or earthed (re-energising it is what the marking
    forbids)."""
    by_key = {s.name: s for s in model.switches} | {s.mrid: s for s in model.switches}
    buses_of: dict[str, tuple[int, ...]] = {}
    for ln in model.lines:
        buses_of[ln.name] = buses_of[ln.mrid] = (ln.from_bus, ln.to_bus)
    for tr in model.transformers:
        buses_of[tr.name] = buses_of[tr.mrid] = tr.buses
    for ld in model.loads:
        buses_of[ld.name] = buses_of[ld.mrid] = (ld.bus,)
    held: set[str] = set()
    marked_buses: set[int] = set()
    for tag in tags:
        if tag.kind not in _HOLDING_TAGS:
            continue
        target = tag.target.split(".", 1)[0] if tag.target not in by_key else tag.target
        if target in by_key:
            held.add(by_key[target].name)
        elif tag.target in buses_of:
            marked_buses.update(buses_of[tag.target])
    held.update(s.name for s in model.switches if s.from_bus in marked_buses or s.to_bus in marked_buses)
    return frozenset(held)
