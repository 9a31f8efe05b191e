"""Plan fault isolation and service restoration (FLISR) for a located fault on a network state.

Steps, in the order a crew or SCADA executes them:

1. Isolation: open every boundary switch of the faulted section (the tripped device, when it bounds the section
   itself, simply stays open).
2. Upstream restoration: reclose the tripped device once the section is cut off from it.
3. Downstream restoration, per dead healthy area (largest priority/customer count first, on the state left by the
   areas before it): a DER island is kept when its DER can carry the area's load for the repair time; otherwise
   every normally-open tie from a live feeder into the area is checked by a three-phase power flow
   (:func:`dms.flow_check.check_flow`) and judged by what it adds (:func:`dms.flow_check.new_violations` against
   the pre-fault state). Closing one tie into a dead area can never parallel two sources: the area has none. The
   accepted option restoring most customers (priority customers first, telemetered switches first, least losses)
   wins. When no single tie carries the area it is split at an interior controllable switch and fed from two ties;
   when nothing fits, the area is cut at the interior switch that drops the least important load (fewest priority,
   then fewest customers) and the rest is fed: the shed load is named in the notes.

Every flow check of a candidate counts against ``FlisrOptions.max_candidates`` so a plan stays well under a second
(one check takes ~10 ms on IEEE 123 and ~20 ms on the sample network). Within an area the sequence opens first
(split/shed switches in a dead area break no load) and closes the tie last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from itertools import product

import numpy as np

from dms.flisr._graph import BusGraph, operable_switches
from dms.flisr.errors import FlisrError
from dms.flisr.plan import FaultLocation, FlisrPlan, RestorationOption, StepPurpose, SwitchAction, SwitchingStep
from dms.flow_check import FlowCheck, VoltageBand, check_flow, new_violations
from dms.network_state import NetworkState
from models.network import CustomerKind, DerKind, NetworkModel, SwitchKind

__all__ = ["DEFAULT_PRIORITY_KINDS", "DEFAULT_REPAIR_TIME_H", "FlisrOptions", "plan_restoration"]

# CIM CustomerKind has no "hospital": the kinds whose loss hurts most are water/sewage pumping (pumpingLoad) and
# the utility's own supplies (internalUse: substations, control rooms). Hospitals and other essential services are
# named by consumer number in ``priority_customers``.
DEFAULT_PRIORITY_KINDS: frozenset[CustomerKind] = frozenset({CustomerKind.PUMPING_LOAD, CustomerKind.INTERNAL_USE})
DEFAULT_REPAIR_TIME_H = 4.0  # a typical 11 kV cable fault repair


@dataclass(frozen=True, slots=True)
class FlisrOptions:
    band: VoltageBand = VoltageBand()
    loading_limit_pct: float = 100.0
    controllable: frozenset[str] | None = None  # remotely operable switches; None: every switch but fuses
    priority_customers: frozenset[str] = frozenset()  # consumer numbers (UsagePoint names)
    priority_kinds: frozenset[CustomerKind] = DEFAULT_PRIORITY_KINDS
    repair_time_h: float = DEFAULT_REPAIR_TIME_H  # how long a DER island must hold its load
    allow_load_shedding: bool = True
    allow_splitting: bool = True
    max_candidates: int = 20  # flow checks of restoration candidates per plan
    # switches the plan must not operate as ties, splits or sheds: tagged, or bounding a faulted/earthed section
    held: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.controllable is not None and not isinstance(self.controllable, frozenset):
            object.__setattr__(self, "controllable", frozenset(self.controllable))
        object.__setattr__(self, "priority_customers", frozenset(self.priority_customers))
        object.__setattr__(self, "held", frozenset(self.held))
        object.__setattr__(self, "priority_kinds", frozenset(CustomerKind(k) for k in self.priority_kinds))
        if not self.loading_limit_pct > 0:
            raise FlisrError(f"FLISR options: loading_limit_pct {self.loading_limit_pct} must be positive")
        if not self.repair_time_h > 0:
            raise FlisrError(f"FLISR options: repair_time_h {self.repair_time_h} must be positive")
        if self.max_candidates < 1:
            raise FlisrError(f"FLISR options: max_candidates {self.max_candidates} must be at least 1")


@dataclass(slots=True)
class _Candidate:
    closes: tuple[int, ...]
    opens: tuple[int, ...]
    restored: frozenset[int]  # buses fed
    customers: int
    priority: int
    shed_loads: tuple[int, ...] = ()
    telemetered: bool = True  # every switch it operates is remotely controllable


@dataclass(slots=True)
class _Context:
    state: NetworkState
    graph: BusGraph
    options: FlisrOptions
    operable: frozenset[int]
    customers: np.ndarray
    priority: np.ndarray
    base_check: FlowCheck
    budget: int
    options_out: list[RestorationOption] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[bytes, FlowCheck] = field(default_factory=dict)  # by switch positions: loads do not change
    held: frozenset[int] = frozenset()

    def name(self, sw: int) -> str:
        return self.state.base.switches[sw].name

    def loads_in(self, buses: Collection[int]) -> np.ndarray:
        return np.isin(self.graph.load_bus, np.fromiter(buses, dtype=np.int64, count=len(buses)))

    def count(self, buses: Collection[int]) -> tuple[int, int]:
        mask = self.loads_in(buses)
        return int(self.customers[mask].sum()), int(self.priority[mask].sum())

    def flow(self, state: NetworkState) -> FlowCheck:
        key = state.switch_closed.tobytes()
        if key not in self.checked:
            self.checked[key] = check_flow(state, band=self.options.band,
                                           loading_limit_pct=self.options.loading_limit_pct)
        return self.checked[key]

    def check(self, state: NetworkState) -> tuple[FlowCheck, tuple]:
        self.budget -= 1
        chk = self.flow(state)
        return chk, new_violations(self.base_check, chk)


def _priority_per_load(model: NetworkModel, options: FlisrOptions) -> np.ndarray:
    out = np.zeros(len(model.loads), dtype=np.int64)
    for c in model.customers:
        if c.load is not None and (c.consumer_number in options.priority_customers or c.kind in options.priority_kinds):
            out[c.load] += 1
    return out


def plan_restoration(state: NetworkState, fault: FaultLocation, *,
                     options: FlisrOptions = FlisrOptions()) -> FlisrPlan:
    """The isolation and restoration plan for ``fault`` on ``state`` (pre-fault, or with the tripped device
    already open as live data shows it)."""
    started = time.perf_counter()
    model = state.base
    graph = BusGraph(model)
    tripped = state.switch_index(fault.tripped_switch)
    boundary = [state.switch_index(s) for s in fault.boundary_switches]
    section = frozenset(fault.faulted_buses)
    operable = operable_switches(model, options.controllable)
    pre = state.with_switch_array(_set(state.switch_closed, close=[tripped]))
    base_check = check_flow(pre, band=options.band, loading_limit_pct=options.loading_limit_pct)
    ctx = _Context(state, graph, options, operable, state.customers_per_load(), _priority_per_load(model, options),
                   base_check, options.max_candidates,
                   held=frozenset(state.switch_index(n) for n in options.held))
    live_pre = graph.energised(pre.switch_closed)
    tripped_closed = _set(state.switch_closed, opened=[tripped])
    live_trip = graph.energised(tripped_closed)
    load_bus = graph.load_bus
    interrupted = live_pre[load_bus] & ~live_trip[load_bus]

    # 1. isolation
    steps: list[SwitchingStep] = []
    to_open = [sw for sw in boundary if sw != tripped and state.switch_closed[sw]]  # open ones isolate already
    for sw in to_open:
        steps.append(SwitchingStep(len(steps) + 1, ctx.name(sw), SwitchAction.OPEN, StepPurpose.ISOLATE,
                                   sw in operable, f"bounds the faulted section ({fault.tripped_switch} tripped)"))
    isolation = tuple(steps)
    isolated = _set(tripped_closed, opened=to_open)
    # 2. upstream restoration
    restoration: list[SwitchingStep] = []
    working_closed = isolated
    if tripped in boundary:
        ctx.notes.append(f"{fault.tripped_switch} bounds the faulted section itself: it stays open")
    else:
        reach = graph.region(graph.switch_ends[tripped], _set(isolated, close=[tripped]))
        if reach.buses & section:
            raise FlisrError(f"boundary switches {', '.join(fault.boundary_switches)} do not cut the faulted section "
                             f"off {fault.tripped_switch}")
        working_closed = _set(isolated, close=[tripped])
        restoration.append(SwitchingStep(0, fault.tripped_switch, SwitchAction.CLOSE, StepPurpose.RESTORE_UPSTREAM,
                                         tripped in operable, "the faulted section is isolated from it"))
    working = state.with_switch_array(working_closed)
    live_up = graph.energised(working_closed)
    restored_up = interrupted & live_up[load_bus]
    if restoration:
        chk, added = ctx.check(working)
        ctx.budget += 1  # the upstream check is not a candidate
        if added:
            ctx.notes.append(f"reclosing {fault.tripped_switch} adds violations: "
                             f"{'; '.join(v.text() for v in added[:3])}")

    # 3. downstream restoration, area by area
    dead = [b for b in range(len(model.buses)) if live_pre[b] and not live_up[b] and b not in section]
    areas = [a for a in graph.components(dead, working_closed) if ctx.loads_in(a).any()]
    areas.sort(key=lambda a: ctx.count(a)[::-1], reverse=True)
    boundary_set = set(boundary) | {tripped}
    shed: list[int] = []
    operated: set[int] = set()  # switches already in the plan: never a tie for a later area
    islands: list[str] = []
    island_loads = np.zeros(len(model.loads), dtype=bool)
    for area in areas:
        label = _area_label(ctx, area, boundary_set)
        if _keep_der_island(ctx, area, label, working):
            islands.append(label)
            island_loads |= ctx.loads_in(area)
            continue
        live_now = graph.energised(working.switch_closed)
        chosen = _restore_area(ctx, working, area, label, live_now, boundary_set | operated, section)
        if chosen is None:
            continue
        for sw in chosen.opens:
            purpose = StepPurpose.SHED_LOAD if chosen.shed_loads else StepPurpose.RESTORE_DOWNSTREAM
            why = (f"drops {', '.join(model.loads[i].name for i in chosen.shed_loads)} so the rest of {label} fits"
                   if chosen.shed_loads else f"splits {label} between ties")
            restoration.append(SwitchingStep(0, ctx.name(sw), SwitchAction.OPEN, purpose, sw in operable, why))
        for sw in chosen.closes:
            restoration.append(SwitchingStep(0, ctx.name(sw), SwitchAction.CLOSE, StepPurpose.RESTORE_DOWNSTREAM,
                                             sw in operable, f"feeds {label} from a live feeder"))
        working = working.with_switch_array(_set(working.switch_closed, close=chosen.closes, opened=chosen.opens))
        shed.extend(chosen.shed_loads)
        operated.update(chosen.closes + chosen.opens)

    numbered = tuple(SwitchingStep(len(isolation) + k + 1, s.switch, s.action, s.purpose, s.telemetered, s.reason)
                     for k, s in enumerate(restoration))
    final = ctx.flow(working)
    live_final = graph.energised(working.switch_closed)
    restored_down = interrupted & ~restored_up & (live_final[load_bus] | island_loads)
    unserved = interrupted & ~restored_up & ~restored_down
    cust, prio = ctx.customers, ctx.priority
    in_section = interrupted & np.isin(load_bus, np.fromiter(section, dtype=np.int64, count=len(section)))
    if in_section.any():
        ctx.notes.append(f"{int(cust[in_section].sum())} customers in the faulted section stay off until repair")
    shed_mask = np.zeros(len(model.loads), dtype=bool)
    shed_mask[shed] = True
    other_unserved = unserved & ~in_section & ~shed_mask
    if other_unserved.any():
        ctx.notes.append(f"{int(cust[other_unserved].sum())} customers of healthy areas have no acceptable "
                         f"restoration path: {_names(model, other_unserved)}")
    if added := new_violations(base_check, final):
        ctx.notes.append(f"the final state adds violations: {'; '.join(v.text() for v in added[:3])}")
    return FlisrPlan(
        fault=fault,
        isolation=isolation,
        restoration=numbered,
        customers_interrupted=int(cust[interrupted].sum()),
        customers_restored_upstream=int(cust[restored_up].sum()),
        customers_restored_downstream=int(cust[restored_down].sum()),
        customers_unserved=int(cust[unserved].sum()),
        priority_customers_unserved=int(prio[unserved].sum()),
        shed_loads=tuple(model.loads[i].name for i in shed),
        der_islands=tuple(islands),
        options=tuple(ctx.options_out),
        final_check=final.summary(),
        notes=tuple(ctx.notes),
        plan_ms=(time.perf_counter() - started) * 1e3,
    )


def _set(closed: np.ndarray, *, close: Iterable[int] = (), opened: Iterable[int] = ()) -> np.ndarray:
    """A copy of a switch array with ``close`` closed and ``opened`` opened."""
    out = np.array(closed, dtype=bool, copy=True)
    out[list(close)] = True
    out[list(opened)] = False
    return out


def _names(model: NetworkModel, mask: np.ndarray) -> str:
    names = [model.loads[i].name for i in np.flatnonzero(mask)]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _area_label(ctx: _Context, area: frozenset[int], boundary: set[int]) -> str:
    for sw in boundary:
        a, b = (int(x) for x in ctx.graph.switch_ends[sw])
        if a in area or b in area:
            return f"downstream of {ctx.name(sw)}"
    first = np.flatnonzero(ctx.loads_in(area))
    return f"area of {ctx.state.base.loads[int(first[0])].name}" if len(first) else "dead area"


def _keep_der_island(ctx: _Context, area: frozenset[int], label: str, state: NetworkState) -> bool:
    """True when the DER inside ``area`` can carry its load for the repair time (then it is kept as an island)."""
    ders = [i for i, b in enumerate(ctx.graph.der_bus) if int(b) in area]
    if not ders:
        return False
    model = ctx.state.base
    hours = ctx.options.repair_time_h
    capacity_w = 0.0
    for i in ders:
        units = model.ders[i].units
        for unit in units:  # a battery holds its power only as long as its stored energy lasts
            if unit.kind is DerKind.BATTERY and not math.isnan(unit.stored_e_wh):
                capacity_w += max(min(unit.max_p_w, unit.stored_e_wh / hours), 0.0)
        generators = [u for u in units if u.kind is not DerKind.BATTERY]
        if generators or not units:  # PV/wind: what it produces now (not its nameplate), capped by the units
            cap = sum(u.max_p_w for u in generators) if generators else math.inf
            capacity_w += max(min(float(state.der_p_w[i]), cap), 0.0)
    load_w = float(state.load_p_w[ctx.loads_in(area)].sum())
    names = ", ".join(dict.fromkeys(model.ders[i].name for i in ders))
    customers, priority = ctx.count(area)
    ctx.options_out.append(RestorationOption(
        label, (), (), customers, priority, capacity_w >= load_w,
        f"DER island: {capacity_w / 1e3:.0f} kW available for {hours:g} h against {load_w / 1e3:.0f} kW of load"))
    if capacity_w >= load_w:
        ctx.notes.append(f"{label} kept as a DER island: {names} can supply {capacity_w / 1e3:.0f} kW for "
                         f"{hours:g} h against {load_w / 1e3:.0f} kW of load (grid-forming inverter required)")
        return True
    ctx.notes.append(f"{label}: DER {names} can supply only {capacity_w / 1e3:.0f} kW for {hours:g} h against "
                     f"{load_w / 1e3:.0f} kW of load: not kept as an island, restored as a dead area")
    return False


def _ties(ctx: _Context, part: frozenset[int], live: np.ndarray, excluded: set[int],
          section: frozenset[int]) -> list[int]:
    """Open switches from a live bus into ``part``: closing one re-energises it without paralleling sources."""
    out = []
    for sw, (a, b) in enumerate(ctx.graph.switch_ends):
        a, b = int(a), int(b)
        if ctx.state.base.switches[sw].kind is SwitchKind.FUSE and sw not in ctx.operable:
            continue
        if sw in excluded or a in section or b in section:
            continue
        if sw in ctx.held:
            if (a in part and live[b]) or (b in part and live[a]):
                ctx.notes.append(f"tie {ctx.name(sw)} is tagged or bounds a marked section: not used")
            continue
        if (a in part and live[b]) or (b in part and live[a]):
            out.append(sw)
    return out


def _restore_area(ctx: _Context, state: NetworkState, area: frozenset[int], label: str, live: np.ndarray,
                  excluded: set[int], section: frozenset[int]) -> _Candidate | None:
    closed = state.switch_closed
    ties = [sw for sw in _ties(ctx, area, live, excluded, section) if not closed[sw]]
    customers, priority = ctx.count(area)
    if not ties:
        ctx.notes.append(f"{label}: no normally-open tie reaches it ({customers} customers stay off)")
        return None
    ties.sort(key=lambda sw: sw not in ctx.operable)
    # a) one tie for the whole area
    accepted: list[tuple[_Candidate, FlowCheck]] = []
    for tie in ties:
        cand = _Candidate((tie,), (), area, customers, priority)
        result = _evaluate(ctx, state, cand, label)
        if result is not None:
            accepted.append((cand, result))
    if accepted:
        return _best(accepted)
    cuts = [sw for sw, (a, b) in enumerate(ctx.graph.switch_ends)
            if closed[sw] and int(a) in area and int(b) in area and sw in ctx.operable and sw not in ctx.held]
    parts_of: dict[int, list[frozenset[int]]] = {}
    for cut in cuts:
        parts = ctx.graph.components(area, _set(closed, opened=[cut]))
        if len(parts) == 2:
            parts_of[cut] = parts
    # b) split between two ties
    if ctx.options.allow_splitting and len(ties) > 1:
        tried: set[tuple[tuple[int, ...], int, int]] = set()  # cuts that part the loads alike are one option
        for cut, parts in parts_of.items():
            feeds = [[t for t in ties if _touches(ctx, t, p)] for p in parts]
            if not all(feeds):
                continue
            first_loads = tuple(int(i) for i in np.flatnonzero(ctx.loads_in(parts[0])))
            for t1, t2 in product(*feeds):
                if ctx.budget <= 0:
                    break
                if (first_loads, t1, t2) in tried:
                    continue
                tried.add((first_loads, t1, t2))
                cand = _Candidate((t1, t2), (cut,), area, customers, priority)
                result = _evaluate(ctx, state, cand, label)
                if result is not None:
                    accepted.append((cand, result))
        if accepted:
            return _best(accepted)
    # c) shed: feed one side of a cut, leave the other off
    if ctx.options.allow_load_shedding:
        seen: set[tuple[tuple[int, ...], int]] = set()  # cuts that drop the same loads are one option
        options: list[_Candidate] = []
        for cut, parts in parts_of.items():
            for kept, dropped in (parts, parts[::-1]):
                dropped_loads = tuple(int(i) for i in np.flatnonzero(ctx.loads_in(dropped)))
                c, p = ctx.count(kept)
                for tie in ties:
                    if _touches(ctx, tie, kept) and (dropped_loads, tie) not in seen:
                        seen.add((dropped_loads, tie))
                        options.append(_Candidate((tie,), (cut,), kept, c, p, dropped_loads))
        options.sort(key=lambda c: (c.priority, c.customers, c.closes[0] in ctx.operable), reverse=True)
        for cand in options:
            if ctx.budget <= 0:
                break
            if not cand.customers:
                continue
            result = _evaluate(ctx, state, cand, label)
            if result is not None:
                model = ctx.state.base
                dropped_customers = int(ctx.customers[list(cand.shed_loads)].sum())
                ctx.notes.append(f"load shed in {label}: {', '.join(model.loads[i].name for i in cand.shed_loads)} "
                                 f"({dropped_customers} customers) left off by opening {ctx.name(cand.opens[0])}: "
                                 f"no tie carries the whole area")
                return cand
    if ctx.budget <= 0:
        ctx.notes.append(f"{label}: candidate budget ({ctx.options.max_candidates} flow checks) spent")
    ctx.notes.append(f"{label}: no restoration without violations ({customers} customers stay off)")
    return None


def _touches(ctx: _Context, sw: int, part: frozenset[int]) -> bool:
    a, b = (int(x) for x in ctx.graph.switch_ends[sw])
    return a in part or b in part


def _evaluate(ctx: _Context, state: NetworkState, cand: _Candidate, label: str) -> FlowCheck | None:
    """Flow-check one candidate and record it; the check when it is accepted."""
    names = ctx.name
    if ctx.budget <= 0:
        ctx.options_out.append(RestorationOption(label, tuple(map(names, cand.closes)), tuple(map(names, cand.opens)),
                                                 cand.customers, cand.priority, False, "not checked: budget spent"))
        return None
    cand.telemetered = all(sw in ctx.operable for sw in cand.closes + cand.opens)
    trial = state.with_switch_array(_set(state.switch_closed, close=cand.closes, opened=cand.opens))
    chk, added = ctx.check(trial)
    restored_loads = np.flatnonzero(ctx.loads_in(cand.restored))
    still_dead = set(chk.deenergised_loads) & {int(i) for i in restored_loads}
    ok = chk.converged and not added and not still_dead
    text = chk.summary()
    if added:
        text += " | adds: " + "; ".join(v.text() for v in added[:3])
    if still_dead:
        text += f" | {len(still_dead)} loads still dead"
    ctx.options_out.append(RestorationOption(label, tuple(map(names, cand.closes)), tuple(map(names, cand.opens)),
                                             cand.customers, cand.priority, ok, text))
    return chk if ok else None


def _best(accepted: list[tuple[_Candidate, FlowCheck]]) -> _Candidate:
    return max(accepted, key=lambda cf: (cf[0].priority, cf[0].customers, cf[0].telemetered,
                                         -len(cf[0].closes) - len(cf[0].opens), -cf[1].loss_p_w))[0]
