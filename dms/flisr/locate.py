"""Locate a fault from a protection trip and fault passage indicators (FPIs), or from a named faulted line.

The faulted zone is what lies downstream of the last switch whose FPI picked up (walking from the tripped device
away from the source along the fault-current path) and upstream of the first switches with an FPI that did not.
Only switches with an FPI narrow the zone (the sample network has them on the ring switches of RMU03/06/08 only);
the zone then grows outwards to the nearest *controllable* switches so it can be isolated remotely. Where no
controllable switch bounds it in a direction, the zone's own switch there is used and left to a field crew
(``telemetered=False`` in the plan): the upstream side of a zone fed through a manual switch, or a dead end whose
customers a tie or DER could still serve.

``boundary_switches`` lists the switches that must be open to isolate the section, the tripped device included
when it bounds the section itself (then it stays open and nothing is reclosed).
"""

from __future__ import annotations

from collections.abc import Collection

from dms.flisr._graph import BusGraph, operable_switches
from dms.flisr.errors import FaultLocationError
from dms.flisr.plan import FaultLocation
from dms.network_state import NetworkState, UnknownNetworkElementError
from models.network import NetworkModel, SwitchKind

__all__ = ["fpi_switches", "locate_fault", "locate_section", "tripping_device"]

TRIPPING_KINDS = (SwitchKind.BREAKER, SwitchKind.RECLOSER)


def fpi_switches(model: NetworkModel, controllable: Collection[str] | None = None) -> frozenset[str]:
    """Names of the switches with a fault passage indicator: those with an ``FPI`` measurement in the model, or,
    when the model has none (the IEEE feeders), every controllable switch (an FPI is assumed beside each)."""
    by_mrid = {s.mrid: s.name for s in model.switches}
    named = frozenset(by_mrid[m.element_mrid] for m in model.measurements
                      if m.measurement_type == "FPI" and m.element_mrid in by_mrid)
    if named:
        return named
    return frozenset(model.switches[i].name for i in operable_switches(model, controllable))


def locate_fault(state: NetworkState, tripped_switch: str, picked_up: Collection[str], *,
                 controllable: Collection[str] | None = None,
                 fpi: Collection[str] | None = None) -> FaultLocation:
    """The faulted section after ``tripped_switch`` opened with the FPIs of ``picked_up`` set.

    ``state`` may show the tripped switch open (live) or closed (study): the source tree is taken with it closed.
    ``controllable`` names the remotely operable switches (None: every switch but fuses); ``fpi`` the switches with
    an indicator (None or empty: :func:`fpi_switches`, which assumes one beside every controllable switch when the
    model names none).
    """
    model = state.base
    graph = BusGraph(model)
    tripped = state.switch_index(tripped_switch)
    closed = state.switch_closed.copy()
    closed[tripped] = True
    tree = graph.source_tree(closed)
    a, b = (int(x) for x in graph.switch_ends[tripped])
    if tree.depth[a] < 0 and tree.depth[b] < 0:
        raise FaultLocationError(f"tripped switch {tripped_switch!r} is not energised from any source in "
                                 f"{model.name!r} ({state.label})")
    down = b if tree.parent_bus[b] == a and tree.parent_switch[b] == tripped else a
    if tree.parent_switch[down] != tripped:
        raise FaultLocationError(f"tripped switch {tripped_switch!r} feeds nothing in {model.name!r} ({state.label})")
    notes: list[str] = []
    picked = [state.switch_index(p) for p in picked_up]
    below = []  # picked-up switches downstream of the tripped one, with their downstream bus
    for sw in picked:
        if sw == tripped:
            continue
        s_a, s_b = (int(x) for x in graph.switch_ends[sw])
        s_down = s_b if tree.parent_switch[s_b] == sw else s_a if tree.parent_switch[s_a] == sw else -1
        if s_down < 0 or tripped not in tree.path_switches(s_down):
            notes.append(f"FPI of {model.switches[sw].name} ignored: not downstream of {tripped_switch}")
            continue
        below.append((int(tree.depth[s_down]), sw, s_down))
    below.sort()
    if below:
        _, last, start = below[-1]
        on_path = set(tree.path_switches(start))
        stray = [model.switches[sw].name for _, sw, _ in below[:-1] if sw not in on_path]
        if stray:
            notes.append(f"FPIs of {', '.join(stray)} are off the fault path to {model.switches[last].name}")
    else:
        last, start = tripped, down
    if not fpi:  # None, or a live station without indicator points: as fpi_switches() says
        fpi = fpi_switches(model, controllable)
    fpi_set = {state.switch_index(n) for n in fpi}
    fpi_set |= set(picked) | {tripped}
    operable = operable_switches(model, controllable)
    zone = graph.region((start,), closed, stop=fpi_set | {last}, exclude=())
    section = set(zone.buses)
    boundary: dict[int, None] = {}
    for edge in zone.edge_switches:
        if edge == tripped:
            boundary[edge] = None
        elif edge in operable:
            boundary[edge] = None
        else:
            e_a, e_b = (int(x) for x in graph.switch_ends[edge])
            far = e_b if e_a in section else e_a
            beyond = graph.region((far,), closed, stop=operable | {tripped}, exclude=section)
            controlled = [sw for sw in beyond.edge_switches if sw != tripped and sw != edge]
            if controlled:  # grow the section to the nearest controllable switches
                section |= beyond.buses
                boundary.update(dict.fromkeys(controlled))
            else:  # nothing controllable beyond: a crew opens this one
                boundary[edge] = None
                notes.append(f"{model.switches[edge].name} is not remotely controllable: a crew must open it")
    boundary = {sw: None for sw in boundary if not set(int(x) for x in graph.switch_ends[sw]) <= section}
    buses = tuple(sorted(section))
    elements = _elements_in(model, section)
    names = [model.switches[sw].name for sw in boundary]
    where = f"between {', '.join(names)}" if names else "with no bounding switch"
    description = (f"fault downstream of {model.switches[last].name} "
                   f"({'FPI picked up' if last != tripped else 'tripped'}), section {where}: "
                   f"{len(elements)} elements ({', '.join(elements[:6])}{', ...' if len(elements) > 6 else ''})")
    if notes:
        description += "; " + "; ".join(notes)
    return FaultLocation(
        tripped_switch=model.switches[tripped].name,
        picked_up=tuple(model.switches[sw].name for _, sw, _ in below),
        faulted_buses=buses,
        faulted_elements=elements,
        boundary_switches=tuple(names),
        description=description,
    )


def _elements_in(model: NetworkModel, buses: set[int]) -> tuple[str, ...]:
    out = [ln.name for ln in model.lines if ln.from_bus in buses and ln.to_bus in buses]
    out += [tr.name for tr in model.transformers if set(tr.buses) <= buses]
    return tuple(out)


def _element_buses(state: NetworkState, element: str) -> tuple[int, ...]:
    model = state.base
    try:
        ln = model.lines[state.index_of("line", element)]
        return (ln.from_bus, ln.to_bus)
    except UnknownNetworkElementError:
        for tr in model.transformers:
            if element in (tr.name, tr.mrid):
                return tr.buses
        raise UnknownNetworkElementError(
            f"network {model.name!r} has no line or transformer named {element!r}") from None


def tripping_device(state: NetworkState, element: str) -> tuple[str, tuple[str, ...]]:
    """The protective device that clears a fault on ``element`` (the nearest closed Breaker or Recloser upstream;
    the switch nearest the source when the feeder has none, as on IEEE 123) and the switches between it and the
    element, source side first."""
    model = state.base
    graph = BusGraph(model)
    tree = graph.source_tree(state.switch_closed)
    buses = _element_buses(state, element)
    live = [b for b in buses if tree.depth[b] >= 0]
    if not live:
        raise FaultLocationError(f"{element!r} is not energised in {model.name!r} ({state.label}): nothing trips")
    top = min(live, key=lambda b: int(tree.depth[b]))
    path = tree.path_switches(top)  # nearest first
    if not path:
        raise FaultLocationError(f"no switch between {element!r} and the source in {model.name!r}")
    for k, sw in enumerate(path):
        if model.switches[sw].kind in TRIPPING_KINDS:
            return model.switches[sw].name, tuple(model.switches[s].name for s in reversed(path[:k]))
    return model.switches[path[-1]].name, tuple(model.switches[s].name for s in reversed(path[:-1]))


def locate_section(state: NetworkState, element: str, *, controllable: Collection[str] | None = None,
                   fpi: Collection[str] | None = None) -> FaultLocation:
    """The fault location FLISR would find for a fault on line ``element`` (studies and ``dscada flisr``): the
    device of :func:`tripping_device` trips and the FPIs between it and the fault pick up."""
    tripped, between = tripping_device(state, element)
    fpi_set = set(fpi or fpi_switches(state.base, controllable))
    picked = [sw for sw in between if sw in fpi_set]
    return locate_fault(state, tripped, picked, controllable=controllable, fpi=fpi)


