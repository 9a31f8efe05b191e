"""Grid physics behind the RTU simulators: a power flow of the station's CIM model with time-varying loads, its own
switch, tap and capacitor states, faults and fault passage indicators.

- Flow (``FlowMethod``): BALANCED is pandapower's positive-sequence flow (the default); THREE_PHASE is the
  project's unbalanced flow (``models.three_phase_flow``) on the model with this object's switch/tap/capacitor
  states and curve-scaled loads, so per-phase measurements read the real unbalanced values (single-phase laterals).
- Taps: ``set_tap`` moves a tap changer (range-checked); the tap position measurements follow at the next solve.

- Loads: each model load follows a daily curve (residential or commercial, drawn per load from the seed, 70/30) times
  a per-load factor (0.85-1.15, also from the seed). The flow is rerun by whoever drives this object (the
  ``PhysicsDriver``: every few seconds and after every switching).
- Switches are pandapower bus-bus switches with a small impedance (``SWITCH_Z_OHM``): pandapower reports no flow for
  an ideal (fused) switch, and the current through a feeder breaker is what the RTU measures.
- Dead sections: pandapower leaves isolated buses and branches NaN; they read 0 V, 0 A, 0 W here.
- BALANCED values are three-phase balanced: a per-phase P or Q is a third of the three-phase total.
- Faults: ``place_fault`` puts a fault on a line. While a faulted line is energised (a closed path to a source), the
  nearest closed Breaker/Recloser between it and the source opens (a trip) and every switch on that source -> fault
  path picks up its fault passage indicator. So closing onto a persisting fault trips again. An FPI resets on
  ``reset_fpis`` or when its switch carries load again (closed, both sides live) after having been dead or open
  (voltage-restoration reset).

Thread-safe: every public method takes the one lock.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import networkx as nx
import numpy as np

from models.config import LoadCurve
from models.errors import ModelError
from models.measurement_points import MeasurementBinding, Quantity
from models.network import NetworkModel, Phase, SwitchKind
from models.pandapower_net import PowerFlowError, to_pandapower
from models.phase_model import build_phase_model
from models.points import DoubleState
from models.three_phase_flow import run_three_phase_powerflow
from models.three_phase_injections import InjectionKind, build_injections
from models.timebase import now_ms
from models.topology import BranchKind, build_topology_graph
from rtu_sim.curves import curve_multiplier, hour_of_day
from rtu_sim.errors import SimulatorError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pandapower as pp

log = logging.getLogger(__name__)

__all__ = ["FaultKind", "FaultResult", "FlowMethod", "FlowSnapshot", "GridPhysics", "PhaseFlows", "PhysicsError",
           "SwitchEvent"]

SWITCH_Z_OHM = 1e-3  # small enough to change no voltage visibly, large enough for pandapower to report the flow
RESIDENTIAL_SHARE = 0.7
LOAD_FACTOR_RANGE = (0.85, 1.15)
_PROTECTIVE = frozenset({SwitchKind.BREAKER, SwitchKind.RECLOSER})
_PHASE_LETTER = {int(Phase.A): "A", int(Phase.B): "B", int(Phase.C): "C", int(Phase.S1): "s1", int(Phase.S2): "s2"}


class PhysicsError(SimulatorError):
    """An element named in a physics request does not exist, or a fault has no protective device to clear it."""


class FlowMethod(StrEnum):
    BALANCED = "balanced"  # pandapower, positive sequence: per-phase values are a third of the total
    THREE_PHASE = "three_phase"  # models.three_phase_flow: real per-phase values


class FaultKind(StrEnum):
    THREE_PHASE = "three_phase"
    LINE_TO_GROUND = "line_to_ground"


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    """A switch (or capacitor bank) changed state in the physics."""

    mrid: str
    name: str
    closed: bool
    time_ms: int
    trip: bool  # opened by protection (not by a command)


@dataclass(frozen=True, slots=True)
class FaultResult:
    line_mrid: str
    line_name: str
    kind: FaultKind
    tripped: tuple[str, ...]  # names of the protective devices that opened
    fpis: tuple[str, ...]  # switches that carried the fault current (source -> fault); FPI points of these pick up
    time_ms: int


@dataclass(frozen=True, slots=True, eq=False)
class FlowSnapshot:
    """One solved flow. Arrays are per model bus / line / switch / load / capacitor / transformer (model order);
    flows are three-phase totals into the element at its from (hv) and to (lv) end; 0 where dead."""

    epoch_s: float
    converged: bool
    solve_s: float
    bus_v_ln_kv: np.ndarray
    line_p_kw: np.ndarray  # shape (n, 2): from, to
    line_q_kvar: np.ndarray
    line_i_a: np.ndarray
    switch_p_kw: np.ndarray
    switch_q_kvar: np.ndarray
    switch_i_a: np.ndarray
    trafo_p_kw: np.ndarray
    trafo_q_kvar: np.ndarray
    trafo_i_a: np.ndarray
    load_p_kw: np.ndarray
    load_q_kvar: np.ndarray
    cap_q_kvar: np.ndarray

    phases: PhaseFlows | None = None  # THREE_PHASE solves only

    def energised(self, bus: int) -> bool:
        return bool(self.bus_v_ln_kv[bus] > 0)


@dataclass(frozen=True, slots=True, eq=False)
class PhaseFlows:
    """Per-phase results of a THREE_PHASE solve, keyed by model bus index and phase letter (``A``, ``B``, ``C``,
    ``s1``, ``s2``); flows are into the element at its terminal on that bus; absent keys read 0 (dead or no such
    phase)."""

    v_ln_kv: dict[tuple[int, str], float]  # (bus, phase) -> |V| phase-neutral
    flow: dict[tuple[str, int, str], tuple[float, float, float]]  # (element mRID, bus, phase) -> (P kW, Q kvar, I A)


class GridPhysics:
    """The simulated grid of one network model."""

    def __init__(self, model: NetworkModel, *, seed: int = 0, noise_pct: float = 0.5,
                 clock: Callable[[], float] = time.time, f_hz: float = 50.0,
                 flow: FlowMethod = FlowMethod.BALANCED) -> None:
        if noise_pct < 0:
            raise PhysicsError(f"noise_pct must be >= 0, got {noise_pct}")
        self.model = model
        self.noise_pct = noise_pct
        self.flow = FlowMethod(flow)
        self._f_hz = f_hz
        self._clock = clock
        self._lock = threading.RLock()
        self._rng = random.Random(f"physics:{seed}:noise")
        try:
            self._net = to_pandapower(model, f_hz=f_hz).net
        except PowerFlowError as exc:
            raise PhysicsError(f"network {model.name!r}: {exc}") from None
        self._net.switch["z_ohm"] = SWITCH_Z_OHM
        self._closed = np.array([not s.open for s in model.switches], dtype=bool)
        self._cap_on = np.array([c.sections > 0 for c in model.capacitors], dtype=bool)
        self._switch_index = {s.mrid: i for i, s in enumerate(model.switches)} | {
            s.name: i for i, s in enumerate(model.switches)}
        self._cap_index = {c.mrid: i for i, c in enumerate(model.capacitors)} | {
            c.name: i for i, c in enumerate(model.capacitors)}
        self._line_index = {ln.mrid: i for i, ln in enumerate(model.lines)} | {
            ln.name: i for i, ln in enumerate(model.lines)}
        self._trafo_row = {str(n): int(i) for i, n in self._net.trafo["name"].items()}
        self._trafo_index = {t.mrid: i for i, t in enumerate(model.transformers)}
        self._load_index = {ld.mrid: i for i, ld in enumerate(model.loads)}
        self._tap_index = {t.mrid: i for i, t in enumerate(model.tap_changers)} | {
            t.name: i for i, t in enumerate(model.tap_changers)}
        self._tap_step = np.array([t.step for t in model.tap_changers], dtype=float)
        transformer_name = {t.mrid: t.name for t in model.transformers}
        self._taps_of_trafo: dict[str, list[int]] = {}  # transformer name -> its tap changers (pandapower tap_pos)
        for k, t in enumerate(model.tap_changers):
            self._taps_of_trafo.setdefault(transformer_name.get(t.transformer_mrid, ""), []).append(k)
        self._trafo3w_row = {str(n): int(i) for i, n in self._net.trafo3w["name"].items()}
        self._source_buses = sorted({s.bus for s in model.sources})
        # Per-load curve and factor, and which pandapower load row (one per bus) each model load belongs to.
        shape_rng = random.Random(f"physics:{seed}:loads")
        self._curve = [LoadCurve.RESIDENTIAL if shape_rng.random() < RESIDENTIAL_SHARE else LoadCurve.COMMERCIAL
                       for _ in model.loads]
        self._factor = np.array([shape_rng.uniform(*LOAD_FACTOR_RANGE) for _ in model.loads])
        row_of_bus = {int(b): int(i) for i, b in self._net.load["bus"].items()}
        self._load_row = np.array([row_of_bus[ld.bus] for ld in model.loads], dtype=np.int64)
        self._load_p_w = np.array([ld.p_w for ld in model.loads])
        self._load_q_var = np.array([ld.q_var for ld in model.loads])
        self._faults: dict[int, FaultKind] = {}  # line index -> kind
        self._fpi: set[int] = set()  # switch indexes with a picked-up FPI
        self._fpi_dead: set[int] = set()  # picked-up FPIs whose switch has been dead since
        self._solved_topology: bytes | None = None  # switch states of the last converged solve
        self._last: FlowSnapshot | None = None

    # ------------------------------------------------------------------------------------------- state

    def switch_closed(self, switch: str) -> bool:
        with self._lock:
            if switch in self._cap_index:
                return bool(self._cap_on[self._cap_index[switch]])
            return bool(self._closed[self._switch(switch)])

    def tap_step(self, tap_changer: str) -> float:
        """Present step of a tap changer (name or mRID)."""
        with self._lock:
            return float(self._tap_step[self._tap(tap_changer)])

    def set_tap(self, tap_changer: str, step: float) -> bool:
        """Move a tap changer (name or mRID) to ``step``; True when it moved. PhysicsError when the tap changer is
        unknown or the step is not a whole step within its range. The flow sees it at the next ``solve``."""
        with self._lock:
            k = self._tap(tap_changer)
            tap = self.model.tap_changers[k]
            if not (math.isfinite(step) and step == round(step) and tap.low_step <= step <= tap.high_step):
                raise PhysicsError(f"tap changer {tap.name!r}: step {step:g} is not a whole step in "
                                   f"{tap.low_step}..{tap.high_step}")
            if self._tap_step[k] == step:
                return False
            self._tap_step[k] = float(step)
            self._apply_tap_pos(self._transformer_name_of(tap.transformer_mrid))
            log.info("tap changer %r moved to step %g", tap.name, step)
            return True

    def _tap(self, tap_changer: str) -> int:
        try:
            return self._tap_index[tap_changer]
        except KeyError:
            raise PhysicsError(f"no tap changer {tap_changer!r} in network {self.model.name!r}") from None

    def _transformer_name_of(self, mrid: str) -> str:
        return next((t.name for t in self.model.transformers if t.mrid == mrid), "")

    def _apply_tap_pos(self, transformer: str) -> None:
        """pandapower keeps one tap_pos per unit: the mean of its per-phase steps (models.pandapower_net)."""
        steps = self._tap_step[self._taps_of_trafo.get(transformer, [])]
        if not len(steps):
            return
        if transformer in self._trafo_row:
            self._net.trafo.at[self._trafo_row[transformer], "tap_pos"] = float(steps.mean())
        elif transformer in self._trafo3w_row:
            self._net.trafo3w.at[self._trafo3w_row[transformer], "tap_pos"] = float(steps.mean())

    def fpi_picked_up(self) -> tuple[str, ...]:
        """Names of the switches whose fault passage indicator is picked up, in model order."""
        with self._lock:
            return tuple(self.model.switches[i].name for i in sorted(self._fpi))

    def fpi(self, switch: str) -> bool:
        with self._lock:
            return self._switch(switch) in self._fpi

    def faults(self) -> dict[str, FaultKind]:
        with self._lock:
            return {self.model.lines[i].name: k for i, k in self._faults.items()}

    @property
    def last(self) -> FlowSnapshot | None:
        with self._lock:
            return self._last

    def source_injections(self, snap: FlowSnapshot | None = None) -> dict[str, tuple[float, float]]:
        """What each grid source (CIM EnergySource) delivers into the network in a solved flow (``snap``, default
        the last one): source name -> (MW, Mvar), the sum of the flows into the branches at its bus. Empty before the
        first converged solve. The transmission simulator's tie flows follow these (``iccp.sim.hosted``)."""
        snap = snap if snap is not None else self.last
        if snap is None or not snap.converged:
            return {}
        m = self.model
        out: dict[str, tuple[float, float]] = {}
        for src in m.sources:
            p_kw = q_kvar = 0.0
            for arr_p, arr_q, ends in ((snap.line_p_kw, snap.line_q_kvar, [(x.from_bus, x.to_bus) for x in m.lines]),
                                       (snap.switch_p_kw, snap.switch_q_kvar,
                                        [(x.from_bus, x.to_bus) for x in m.switches]),
                                       (snap.trafo_p_kw, snap.trafo_q_kvar,
                                        [(t.buses[0], t.buses[-1]) for t in m.transformers])):
                for i, (a, b) in enumerate(ends):
                    if a == b:
                        continue
                    if a == src.bus:
                        p_kw, q_kvar = p_kw + float(arr_p[i][0]), q_kvar + float(arr_q[i][0])
                    elif b == src.bus:
                        p_kw, q_kvar = p_kw + float(arr_p[i][1]), q_kvar + float(arr_q[i][1])
            out[src.name] = (p_kw / 1000.0, q_kvar / 1000.0)
        return out

    def _switch(self, switch: str) -> int:
        try:
            return self._switch_index[switch]
        except KeyError:
            raise PhysicsError(f"no switch {switch!r} in network {self.model.name!r}") from None

    def set_switch(self, switch: str, closed: bool) -> tuple[SwitchEvent, ...]:
        """Operate a switch (or a capacitor bank) by name or mRID. Closing onto a persisting fault trips the
        protective device at once: the events then hold the close and the trip, in that order."""
        with self._lock:
            stamp = now_ms()
            if switch in self._cap_index:
                i = self._cap_index[switch]
                if self._cap_on[i] == closed:
                    return ()
                self._cap_on[i] = closed
                cap = self.model.capacitors[i]
                return (SwitchEvent(cap.mrid, cap.name, closed, stamp, False),)
            i = self._switch(switch)
            if self._closed[i] == closed:
                return ()
            self._closed[i] = closed
            sw = self.model.switches[i]
            events = [SwitchEvent(sw.mrid, sw.name, closed, stamp, False)]
            if closed and self._faults:
                events += self._protect(stamp)[0]
            return tuple(events)

    # ------------------------------------------------------------------------------------------- faults

    def place_fault(self, line: str, kind: FaultKind = FaultKind.THREE_PHASE) -> tuple[FaultResult, tuple[
            SwitchEvent, ...]]:
        """Fault a line (name or mRID): the protection clears it if it is energised. PhysicsError when the line
        is unknown or no breaker/recloser lies between it and its source (nothing could clear it)."""
        with self._lock:
            try:
                index = self._line_index[line]
            except KeyError:
                raise PhysicsError(f"no line {line!r} in network {self.model.name!r}") from None
            stamp = now_ms()
            self._faults[index] = FaultKind(kind)
            try:
                events, fpis = self._protect(stamp)
            except PhysicsError:
                del self._faults[index]
                raise
            ln = self.model.lines[index]
            return (FaultResult(ln.mrid, ln.name, FaultKind(kind), tuple(e.name for e in events if e.trip),
                                tuple(self.model.switches[i].name for i in fpis), stamp), events)

    def clear_fault(self, line: str | None = None) -> tuple[str, ...]:
        """Remove the fault of a line (None: all faults); returns the names of the lines cleared."""
        with self._lock:
            if line is None:
                cleared = list(self._faults)
            else:
                index = self._line_index.get(line)
                if index is None:
                    raise PhysicsError(f"no line {line!r} in network {self.model.name!r}")
                cleared = [index] if index in self._faults else []
            for i in cleared:
                del self._faults[i]
            return tuple(self.model.lines[i].name for i in cleared)

    def reset_fpis(self, switch: str | None = None) -> tuple[str, ...]:
        """Reset fault passage indicators (one switch or all); returns the names reset."""
        with self._lock:
            targets = set(self._fpi) if switch is None else {self._switch(switch)} & self._fpi
            self._fpi -= targets
            self._fpi_dead -= targets
            return tuple(self.model.switches[i].name for i in sorted(targets))

    def _graph(self) -> nx.MultiGraph:
        return build_topology_graph(self.model, {s.mrid: bool(c) for s, c in zip(self.model.switches, self._closed,
                                                                                   strict=True)})

    def _protect(self, stamp: int) -> tuple[list[SwitchEvent], list[int]]:
        """Trip the protective device of every energised faulted line; pick up the FPIs on the fault paths."""
        events: list[SwitchEvent] = []
        picked: list[int] = []
        for _round in range(len(self._faults) + 1):
            graph = self._graph()
            tripped_any = False
            for index in sorted(self._faults):
                path = self._fault_path(graph, index)
                if path is None:
                    continue  # the faulted line is dead: nothing flows into the fault
                switches = [self._switch_index[m] for kind, m in path if kind is BranchKind.SWITCH]
                protective = [i for i in switches if self.model.switches[i].kind in _PROTECTIVE]
                ln = self.model.lines[index]
                if not protective:
                    raise PhysicsError(f"fault on line {ln.name!r}: no closed breaker or recloser between it and "
                                       f"its source")
                for i in switches:
                    if i not in self._fpi:
                        self._fpi.add(i)
                        picked.append(i)
                trip = protective[-1]  # the nearest one to the fault
                self._closed[trip] = False
                sw = self.model.switches[trip]
                events.append(SwitchEvent(sw.mrid, sw.name, False, stamp, True))
                log.info("fault on %r (%s): %r tripped", ln.name, self._faults[index].value, sw.name)
                tripped_any = True
                break  # the topology changed: recompute the paths
            if not tripped_any:
                break
        return events, picked

    def _fault_path(self, graph: nx.MultiGraph, line_index: int) -> list[tuple[BranchKind, str]] | None:
        """Branches (kind, mRID) from a source to the nearer end of the line, or None when the line is dead."""
        ln = self.model.lines[line_index]
        sources = [b for b in self._source_buses if b in graph]
        if not sources:
            return None
        try:
            _n, nodes = nx.multi_source_dijkstra(graph, sources, target=ln.from_bus, weight=None)
        except nx.NetworkXNoPath:
            try:
                _n, nodes = nx.multi_source_dijkstra(graph, sources, target=ln.to_bus, weight=None)
            except nx.NetworkXNoPath:
                return None
        path: list[tuple[BranchKind, str]] = []
        for a, b in zip(nodes, nodes[1:], strict=False):
            key, data = next(iter(graph.get_edge_data(a, b).items()))
            path.append((data["kind"], key))
        return path

    # ------------------------------------------------------------------------------------------- flow

    def load_multipliers(self, epoch_s: float) -> np.ndarray:
        """Per model load: curve(hour) x per-load factor."""
        hour = hour_of_day(epoch_s)
        curve = {c: curve_multiplier(c, hour) for c in (LoadCurve.RESIDENTIAL, LoadCurve.COMMERCIAL)}
        return np.array([curve[c] for c in self._curve]) * self._factor

    def solve(self, epoch_s: float | None = None) -> FlowSnapshot:
        """Run the flow for the loads at ``epoch_s`` (default: the clock) and the present switch states."""
        with self._lock:
            epoch = self._clock() if epoch_s is None else epoch_s
            mult = self.load_multipliers(epoch)
            if self.flow is FlowMethod.THREE_PHASE:
                snap = self._solve_three_phase(epoch, mult)
                self._fpi_restoration(snap)
                self._last = snap
                return snap
            net = self._net
            n_rows = len(net.load)
            p = np.bincount(self._load_row, weights=self._load_p_w * mult, minlength=n_rows) / 1e6
            q = np.bincount(self._load_row, weights=self._load_q_var * mult, minlength=n_rows) / 1e6
            net.load["p_mw"] = p
            net.load["q_mvar"] = q
            net.switch["closed"] = self._closed
            if len(net.shunt):
                net.shunt["in_service"] = self._cap_on
            started = time.perf_counter()
            converged = self._run(net)
            solve_s = time.perf_counter() - started
            snap = self._collect(epoch, converged, solve_s, mult)
            self._fpi_restoration(snap)
            self._last = snap
            return snap

    def state_model(self, mult: np.ndarray | None = None) -> NetworkModel:
        """The network model with this grid's switch, tap and capacitor states and loads scaled by ``mult`` (per
        model load; default: unscaled)."""
        with self._lock:
            m = self.model
            switches = tuple(
                s if s.open == (not c) else replace(
                    s, open=not c, phase_states=tuple(replace(ps, open=not c) for ps in s.phase_states))
                for s, c in zip(m.switches, self._closed, strict=True))
            taps = tuple(t if t.step == k else replace(t, step=float(k))
                         for t, k in zip(m.tap_changers, self._tap_step, strict=True))
            caps = tuple(c if (c.sections > 0) == bool(on) else replace(
                c, sections=float(max(c.normal_sections, 1)) if on else 0.0)
                for c, on in zip(m.capacitors, self._cap_on, strict=True))
            loads = m.loads if mult is None else tuple(
                replace(ld, p_w=ld.p_w * f, q_var=ld.q_var * f,
                        phase_p_w=tuple((ph, v * f) for ph, v in ld.phase_p_w),
                        phase_q_var=tuple((ph, v * f) for ph, v in ld.phase_q_var))
                for ld, f in zip(m.loads, mult.tolist(), strict=True))
            return replace(m, switches=switches, loads=loads, tap_changers=taps, capacitors=caps)

    def _solve_three_phase(self, epoch: float, mult: np.ndarray) -> FlowSnapshot:
        m = self.model
        started = time.perf_counter()
        try:
            model = self.state_model(mult)
            pm = build_phase_model(model, frequency_hz=self._f_hz)
            res = run_three_phase_powerflow(model, phase_model=pm)
        except ModelError as exc:  # not converged or cannot be set up: measurements read 0 until the next solve
            log.warning("network %r: three-phase power flow failed: %s", m.name, exc)
            return self._collect(epoch, False, time.perf_counter() - started, mult)
        solve_s = time.perf_counter() - started
        nodes = res.nodes
        live = nodes["energised"]
        v = np.where(live, nodes["v_v"] * np.exp(1j * np.radians(np.nan_to_num(nodes["angle_deg"]))), 0.0)
        letters = [_PHASE_LETTER.get(int(p), "") for p in pm.node_phase]
        buses = pm.node_bus.tolist()
        v_kv = (np.abs(v) / 1e3).tolist()
        v_ln = {(b, ph): x for b, ph, x in zip(buses, letters, v_kv, strict=True)}
        bus_v = np.zeros(len(m.buses))
        np.maximum.at(bus_v, pm.node_bus, np.abs(v) / 1e3)
        mrid_of = {x.name: x.mrid for x in (*m.lines, *m.switches, *m.transformers)}
        bus_of = {b.name: b.index for b in m.buses}
        br = res.branches
        flow: dict[tuple[str, int, str], tuple[float, float, float]] = {}
        for e, bus, ph, p_w, q_var, i_a in zip(br["element"].tolist(), br["bus"].tolist(), br["phase"].tolist(),
                                               (br["p_w"] / 1e3).tolist(), (br["q_var"] / 1e3).tolist(),
                                               br["i_a"].tolist(), strict=True):
            flow[(mrid_of.get(e, e), bus_of[bus], ph)] = (p_w, q_var, i_a)
        # Loads: per-phase power and current at each of their nodes (a delta branch splits over its two nodes).
        inj = build_injections(model, pm, include_ders=False).only_at(live)
        t = inj.table
        s_br = inj.branch_power_va(v)
        vg = np.append(v, 0.0)
        vab = vg[t["a"]] - vg[t["b"]]
        with np.errstate(divide="ignore", invalid="ignore"):
            i_br = np.where(np.abs(vab) > 0, np.conj(s_br / vab), 0.0)
        node_i: dict[tuple[int, int], complex] = {}
        n = len(v)
        for owner, kind, a, b, i in zip(t["owner"].tolist(), t["kind"].tolist(), t["a"].tolist(), t["b"].tolist(),
                                        i_br.tolist(), strict=True):
            if kind != InjectionKind.LOAD:
                continue
            node_i[(owner, a)] = node_i.get((owner, a), 0j) + i
            if b < n:
                node_i[(owner, b)] = node_i.get((owner, b), 0j) - i
        load_p, load_q = np.zeros(len(m.loads)), np.zeros(len(m.loads))
        for (owner, node), i in node_i.items():
            s_ph = complex(v[node] * np.conj(i))
            ld = m.loads[owner]
            flow[(ld.mrid, buses[node], letters[node])] = (s_ph.real / 1e3, s_ph.imag / 1e3, abs(i))
            load_p[owner] += s_ph.real / 1e3
            load_q[owner] += s_ph.imag / 1e3
        cap_q = np.zeros(len(m.capacitors))
        for k, cap in enumerate(model.capacitors):
            b_of = dict(cap.phase_b_per_section_s)
            for node in np.flatnonzero(pm.node_bus == cap.bus).tolist():
                ph = Phase(int(pm.node_phase[node]))
                if not ph & cap.phases or cap.sections <= 0:
                    continue
                y = float(b_of.get(ph, cap.b_per_section_s) * cap.sections)
                q = -y * float(abs(v[node])) ** 2 / 1e3  # into the element: a capacitor delivers reactive power
                flow[(cap.mrid, cap.bus, letters[node])] = (0.0, q, y * float(abs(v[node])))
                cap_q[k] += q
        # Three-phase totals into the balanced-shaped arrays (energised() and anyone reading totals use them).
        snap = self._collect(epoch, False, solve_s, mult)
        totals = {}
        for (mrid, bus, _ph), (p_kw, q_kvar, i_a) in flow.items():
            acc = totals.setdefault((mrid, bus), [0.0, 0.0, 0.0])
            acc[0] += p_kw
            acc[1] += q_kvar
            acc[2] = max(acc[2], i_a)
        for arr_p, arr_q, arr_i, elements, ends in (
                (snap.line_p_kw, snap.line_q_kvar, snap.line_i_a, m.lines, lambda x: (x.from_bus, x.to_bus)),
                (snap.switch_p_kw, snap.switch_q_kvar, snap.switch_i_a, m.switches, lambda x: (x.from_bus, x.to_bus)),
                (snap.trafo_p_kw, snap.trafo_q_kvar, snap.trafo_i_a, m.transformers,
                 lambda x: (x.windings[0].bus, x.windings[-1].bus) if x.windings else (-1, -1))):
            for k, el in enumerate(elements):
                for end, bus in enumerate(ends(el)):
                    acc = totals.get((el.mrid, bus))
                    if acc is not None:
                        arr_p[k, end], arr_q[k, end], arr_i[k, end] = acc
        return replace(snap, converged=True, bus_v_ln_kv=bus_v, load_p_kw=load_p, load_q_kvar=load_q, cap_q_kvar=cap_q,
                       phases=PhaseFlows(v_ln, flow))

    def _run(self, net: pp.pandapowerNet) -> bool:
        # Warm start only on an unchanged topology: after re-energising a section its previous results are NaN.
        topology = self._closed.tobytes() + self._cap_on.tobytes()
        inits = ("results", "dc") if topology == self._solved_topology else ("dc", "flat")
        for init in inits:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pp.runpp(net, algorithm="nr", init=init, numba=False, calculate_voltage_angles=True,
                             max_iteration=30)
                self._solved_topology = topology
                return True
            except Exception as exc:  # pandapower raises several types; a failed solve must not stop the sim
                log.info("network %r: power flow (init=%s) failed: %s", self.model.name, init, exc)
        log.warning("network %r: power flow did not converge; measurements read 0 until the next solve",
                    self.model.name)
        self._solved_topology = None
        return False

    def _collect(self, epoch: float, converged: bool, solve_s: float, mult: np.ndarray) -> FlowSnapshot:
        net = self._net
        m = self.model
        if not converged:
            zeros = np.zeros(len(m.buses))
            vm = zeros
        else:
            vm = np.nan_to_num(net.res_bus["vm_pu"].reindex(range(len(m.buses))).to_numpy(), nan=0.0)
        v_ln = vm * net.bus["vn_kv"].reindex(range(len(m.buses))).to_numpy() / math.sqrt(3)

        def pair(table: str, a: str, b: str, n: int, scale: float) -> np.ndarray:
            if not converged or n == 0:
                return np.zeros((n, 2))
            res = getattr(net, table)
            out = np.column_stack([res[a].to_numpy(dtype=float), res[b].to_numpy(dtype=float)]) * scale
            return np.nan_to_num(out, nan=0.0)

        nl, ns = len(m.lines), len(m.switches)
        line_p = pair("res_line", "p_from_mw", "p_to_mw", nl, 1e3)
        line_q = pair("res_line", "q_from_mvar", "q_to_mvar", nl, 1e3)
        line_i = pair("res_line", "i_from_ka", "i_to_ka", nl, 1e3)
        sw_p = pair("res_switch", "p_from_mw", "p_to_mw", ns, 1e3)
        sw_q = pair("res_switch", "q_from_mvar", "q_to_mvar", ns, 1e3)
        sw_i = pair("res_switch", "i_ka", "i_ka", ns, 1e3)
        sw_i[~self._closed] = 0.0
        nt = len(m.transformers)
        tr_p, tr_q, tr_i = np.zeros((nt, 2)), np.zeros((nt, 2)), np.zeros((nt, 2))
        if converged:
            for k, t in enumerate(m.transformers):
                row = self._trafo_row.get(t.name)
                if row is None:
                    continue  # three-winding units: not measured by any RTU here
                r = net.res_trafo.loc[row]
                tr_p[k] = np.nan_to_num([r.p_hv_mw * 1e3, r.p_lv_mw * 1e3])
                tr_q[k] = np.nan_to_num([r.q_hv_mvar * 1e3, r.q_lv_mvar * 1e3])
                tr_i[k] = np.nan_to_num([r.i_hv_ka * 1e3, r.i_lv_ka * 1e3])
        alive = np.array([v_ln[ld.bus] > 0 for ld in m.loads], dtype=bool)
        load_p = np.where(alive, self._load_p_w * mult / 1e3, 0.0)
        load_q = np.where(alive, self._load_q_var * mult / 1e3, 0.0)
        cap_q = np.zeros(len(m.capacitors))
        if converged and len(m.capacitors):
            cap_q = np.nan_to_num(net.res_shunt["q_mvar"].to_numpy(dtype=float) * 1e3, nan=0.0)
        return FlowSnapshot(epoch, converged, solve_s, v_ln, line_p, line_q, line_i, sw_p, sw_q, sw_i, tr_p, tr_q,
                            tr_i, load_p, load_q, cap_q)

    def _fpi_restoration(self, snap: FlowSnapshot) -> None:
        for i in list(self._fpi):
            sw = self.model.switches[i]
            live = bool(self._closed[i]) and snap.energised(sw.from_bus) and snap.energised(sw.to_bus)
            if not live:
                self._fpi_dead.add(i)
            elif i in self._fpi_dead:
                self._fpi.discard(i)
                self._fpi_dead.discard(i)

    # ------------------------------------------------------------------------------------------- measurements

    def value(self, b: MeasurementBinding, snap: FlowSnapshot, *, noisy: bool = False) -> float:
        """The value a measurement reads in ``snap`` (engineering units of its point), with noise if asked."""
        with self._lock:
            v = self._true_value(b, snap)
        if noisy and self.noise_pct and b.quantity in (Quantity.VOLTAGE_KV, Quantity.CURRENT_A, Quantity.P_KW,
                                                       Quantity.Q_KVAR):
            v *= 1.0 + self._rng.gauss(0.0, self.noise_pct / 100.0)
        return v

    def _true_value(self, b: MeasurementBinding, snap: FlowSnapshot) -> float:
        q = b.quantity
        if q is Quantity.SWITCH_POSITION:
            closed = self.switch_closed(b.element_mrid)
            return float(DoubleState.ON if closed else DoubleState.OFF)
        if q is Quantity.FAULT_INDICATOR:
            i = self._switch_index.get(b.element_mrid)
            return 1.0 if i is not None and i in self._fpi else 0.0
        if q in (Quantity.TAP_POSITION, Quantity.TAP_SETPOINT):  # taps move at once: the target is the position
            k = self._tap_index.get(b.tap_changer_mrid or "")
            return float(self._tap_step[k]) if k is not None else 0.0
        if snap.phases is not None and b.bus is not None:
            ph = _PHASE_LETTER.get(int(b.phase), "")
            if q is Quantity.VOLTAGE_KV:
                return snap.phases.v_ln_kv.get((b.bus, ph), 0.0)
            p, qq, i_a = snap.phases.flow.get((b.element_mrid, b.bus, ph), (0.0, 0.0, 0.0))
            return {Quantity.P_KW: p, Quantity.Q_KVAR: qq}.get(q, i_a)
        if q is Quantity.VOLTAGE_KV:
            return float(snap.bus_v_ln_kv[b.bus]) if b.bus is not None else 0.0
        p, qq, i_a = self._element_flow(b, snap)
        if q is Quantity.CURRENT_A:
            return i_a
        return (p if q is Quantity.P_KW else qq) / 3.0  # balanced: a third per phase

    def _element_flow(self, b: MeasurementBinding, snap: FlowSnapshot) -> tuple[float, float, float]:
        """(P kW, Q kvar, I A) into the element at the measured terminal."""
        m = self.model
        if b.element_mrid in self._line_index:
            k = self._line_index[b.element_mrid]
            end = 0 if b.bus is None or b.bus == m.lines[k].from_bus else 1
            return float(snap.line_p_kw[k, end]), float(snap.line_q_kvar[k, end]), float(snap.line_i_a[k, end])
        if b.element_mrid in self._switch_index:
            k = self._switch_index[b.element_mrid]
            end = 0 if b.bus is None or b.bus == m.switches[k].from_bus else 1
            return float(snap.switch_p_kw[k, end]), float(snap.switch_q_kvar[k, end]), float(snap.switch_i_a[k, end])
        if b.element_mrid in self._trafo_index:
            k = self._trafo_index[b.element_mrid]
            t = m.transformers[k]
            end = 0 if b.bus is None or b.bus == t.windings[0].bus else 1
            return float(snap.trafo_p_kw[k, end]), float(snap.trafo_q_kvar[k, end]), float(snap.trafo_i_a[k, end])
        if b.element_mrid in self._load_index:
            k = self._load_index[b.element_mrid]
            p, q = float(snap.load_p_kw[k]), float(snap.load_q_kvar[k])
            v = snap.bus_v_ln_kv[m.loads[k].bus]
            return p, q, math.hypot(p, q) / (3 * v) if v > 0 else 0.0
        if b.element_mrid in self._cap_index:
            k = self._cap_index[b.element_mrid]
            q = float(snap.cap_q_kvar[k])
            v = snap.bus_v_ln_kv[m.capacitors[k].bus]
            return 0.0, q, abs(q) / (3 * v) if v > 0 else 0.0
        return 0.0, 0.0, 0.0
