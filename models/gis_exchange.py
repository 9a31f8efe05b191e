"""Export of a network reconfiguration to GIS and energy accounting as an IEC 61970-552 CIM difference model.

What changes, in CIM terms, against the network model as the GIS holds it (the model's CIM file):
- ``Switch.open`` of every switch whose state changed (forward: new, reverse: old), and with the model's CimGraph
  at hand, ``SwitchPhase.closed`` of its phases;
- with ``permanent=True`` the reconfiguration becomes the new normal: ``Switch.normalOpen`` of the switches named
  whose normal state differs from their new state (a new normally-open point, the old one closed);
- for every distribution transformer and every load (customer point) whose feeding feeder changed, its
  ``Equipment.EquipmentContainer`` from the old Feeder to the new one (reverse: the container the model holds);
- the ``dm:DifferenceModel`` header: ``md:Model.created`` = the reconfiguration time, a description with the switching,
  the feeder moves, the operator and the reason.

The feeding feeder of an element is traced over ``models.topology.build_topology_graph`` under a switch state: the
first branch in a Feeder container on the way from a source (the feeder breaker), breadth-first from all sources.
A de-energised element has no feeding feeder; it is reported, but its container is left alone (being dead does not
move equipment to another feeder).
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import networkx as nx

from models.cim.difference import DifferenceHeader, Fragment, difference_document
from models.cim.rdf import CimGraph
from models.errors import ModelError
from models.network import NetworkModel
from models.topology import BranchKind, build_topology_graph, is_distribution_transformer

__all__ = [
    "FeedState",
    "FeederMove",
    "MovedKind",
    "GisExchangeError",
    "Reconfiguration",
    "SwitchChange",
    "analyse_reconfiguration",
    "feeding_state",
    "reconfiguration_difference",
    "reconfiguration_document",
]

MODELING_AUTHORITY = "dscada"


class GisExchangeError(ModelError):
    """A reconfiguration cannot be exported (unknown switch, time without a zone, ...)."""


class MovedKind(StrEnum):
    DISTRIBUTION_TRANSFORMER = "distribution_transformer"
    LOAD = "load"


@dataclass(frozen=True, slots=True)
class FeedState:
    """Per bus, under one switch state: the feeding feeder (None: none on the path, or de-energised), whether it is
    energised, and the nearest distribution transformer upstream (None when fed at primary voltage)."""

    feeder_of_bus: Mapping[int, str | None]
    energised: frozenset[int]
    transformer_of_bus: Mapping[int, str | None]


@dataclass(frozen=True, slots=True)
class SwitchChange:
    mrid: str
    name: str
    closed_before: bool
    closed_after: bool
    normal_open_before: bool
    normal_open_after: bool  # differs from before only for a permanent reconfiguration


@dataclass(frozen=True, slots=True)
class FeederMove:
    """A distribution transformer or load whose feeding feeder changed. Feeder ids are None when de-energised."""

    mrid: str
    name: str
    kind: MovedKind
    old_feeder_mrid: str | None
    new_feeder_mrid: str | None
    old_feeder: str  # feeder name (the feeder number), "" when none
    new_feeder: str
    container_mrid: str | None  # the model's Equipment.EquipmentContainer (Feeder) before the move
    transformer_mrid: str | None  # for a load: its distribution transformer after (else before) the move
    customers: int  # EnergyConsumer.customerCount (loads); for a transformer, the sum over its loads that moved
    usage_points: tuple[str, ...] = ()  # customer (consumer) numbers: UsagePoint names, when the CimGraph was given


@dataclass(frozen=True, slots=True)
class Reconfiguration:
    model_name: str
    when: datetime
    operator: str
    reason: str
    permanent: bool
    switches: tuple[SwitchChange, ...]
    transformers: tuple[FeederMove, ...]
    loads: tuple[FeederMove, ...]

    def description(self) -> str:
        switching = ", ".join(f"{s.name} {'closed' if s.closed_after else 'opened'}" for s in self.switches
                              if s.closed_before != s.closed_after) or "no switching"
        moves = "; ".join(f"{m.name} {m.old_feeder or 'dead'} -> {m.new_feeder or 'dead'}" for m in self.transformers)
        parts = [f"Network reconfiguration of {self.model_name} at {self.when.isoformat()}: {switching}",
                 f"distribution transformers moved: {moves}" if moves else "no distribution transformer moved"]
        if self.permanent:
            parts.append("made permanent (normally-open points changed)")
        if self.operator:
            parts.append(f"operator {self.operator}")
        if self.reason:
            parts.append(f"reason: {self.reason}")
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        def move(m: FeederMove) -> dict[str, Any]:
            return {"mrid": m.mrid, "name": m.name, "old_feeder": m.old_feeder or None,
                    "new_feeder": m.new_feeder or None, "old_feeder_mrid": m.old_feeder_mrid,
                    "new_feeder_mrid": m.new_feeder_mrid, "customers": m.customers,
                    "transformer_mrid": m.transformer_mrid, "usage_points": list(m.usage_points)}
        return {
            "model": self.model_name, "when": self.when.isoformat(), "operator": self.operator,
            "reason": self.reason, "permanent": self.permanent, "description": self.description(),
            "switches": [{"mrid": s.mrid, "name": s.name, "closed_before": s.closed_before,
                          "closed_after": s.closed_after, "normal_open_before": s.normal_open_before,
                          "normal_open_after": s.normal_open_after} for s in self.switches],
            "transformers": [move(m) for m in self.transformers],
            "loads": [move(m) for m in self.loads],
        }

    def table(self) -> str:
        """Feeder changes per distribution transformer, as plain text for people."""
        rows = [("DT", "old feeder", "new feeder", "loads moved", "customers")]
        for m in self.transformers:
            moved = [ld.name for ld in self.loads if ld.transformer_mrid == m.mrid]
            rows.append((m.name, m.old_feeder or "(dead)", m.new_feeder or "(dead)", ", ".join(moved) or "-",
                         str(m.customers)))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"Reconfiguration at {self.when.isoformat()}"]
        lines += [f"  {s.name}: {'closed' if s.closed_before else 'open'} -> {'closed' if s.closed_after else 'open'}"
                  + (f" (normally {'open' if s.normal_open_after else 'closed'})"
                     if s.normal_open_after != s.normal_open_before else "") for s in self.switches]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join(lines)


def feeding_state(model: NetworkModel, switch_closed: Mapping[str, bool] | None = None,
                  graph: nx.MultiGraph | None = None) -> FeedState:
    """Trace every bus breadth-first from all sources over the closed topology (one pass, O(buses + branches))."""
    g = graph if graph is not None else build_topology_graph(model, switch_closed)
    sources = sorted(n for n, is_src in g.nodes(data="is_source") if is_src)
    feeder: dict[int, str | None] = {n: None for n in sources}  # the feeder is taken from the branches
    dt: dict[int, str | None] = {n: None for n in sources}
    queue = deque(sources)
    while queue:
        node = queue.popleft()
        for nxt, edges in sorted(g.adj[node].items()):
            if nxt in feeder:
                continue
            key, data = min(edges.items())  # parallel branches: a fixed choice
            feeder[nxt] = feeder[node] or data["feeder_mrid"]
            dt[nxt] = key if data["kind"] is BranchKind.DISTRIBUTION_TRANSFORMER else dt[node]
            queue.append(nxt)
    return FeedState(feeder, frozenset(feeder), dt)


def _states(model: NetworkModel, given: Mapping[str, bool], what: str) -> dict[str, bool]:
    """Switch states by mRID from a mapping keyed by mRID or name; unknown keys are refused."""
    by_key = {sw.mrid: sw.mrid for sw in model.switches} | {sw.name: sw.mrid for sw in model.switches}
    result: dict[str, bool] = {}
    for key, closed in given.items():
        mrid = by_key.get(key)
        if mrid is None:
            raise GisExchangeError(f"{what} names switch {key!r}, which is not in network {model.name!r}")
        result[mrid] = bool(closed)
    return result


def analyse_reconfiguration(model: NetworkModel, before: Mapping[str, bool], after: Mapping[str, bool],
                            when: datetime, *, operator: str = "", reason: str = "", permanent: bool = False,
                            graph: CimGraph | None = None) -> Reconfiguration:
    """What a reconfiguration changes. ``before`` / ``after`` map switch mRID (or name) to closed; a switch missing
    from ``before`` is taken at the model's state, one missing from ``after`` at its ``before`` state. With the
    model's ``graph`` the customers (UsagePoints) of each moved load are named."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise GisExchangeError(f"reconfiguration time {when.isoformat()} has no time zone")
    actual = {sw.mrid: not sw.open for sw in model.switches}
    old = actual | _states(model, before, "before")
    new = old | _states(model, after, "after")
    named = set(_states(model, before, "before")) | set(_states(model, after, "after"))
    switches = []
    for sw in model.switches:
        if sw.mrid not in named:
            continue
        normal_after = (not new[sw.mrid]) if permanent else sw.normal_open
        if old[sw.mrid] != new[sw.mrid] or normal_after != sw.normal_open:
            switches.append(SwitchChange(sw.mrid, sw.name, old[sw.mrid], new[sw.mrid], sw.normal_open, normal_after))
    feed_old = feeding_state(model, old)
    feed_new = feeding_state(model, new)
    feeder_name = {f.mrid: f.name for f in model.feeders}

    def feeder_at(feed: FeedState, bus: int) -> str | None:
        return feed.feeder_of_bus.get(bus) if bus in feed.energised else None

    usage_points = _usage_points(graph) if graph is not None else {}
    loads = []
    for ld in model.loads:
        was, now = feeder_at(feed_old, ld.bus), feeder_at(feed_new, ld.bus)
        if was != now:
            dt_mrid = feed_new.transformer_of_bus.get(ld.bus) or feed_old.transformer_of_bus.get(ld.bus)
            ups = tuple(sorted(usage_points.get(ld.mrid, ())))
            loads.append(FeederMove(ld.mrid, ld.name, MovedKind.LOAD, was, now, feeder_name.get(was or "", ""),
                                    feeder_name.get(now or "", ""), ld.feeder_mrid, dt_mrid,
                                    ld.customer_count or len(ups), ups))
    source_buses = frozenset(s.bus for s in model.sources)
    transformers = []
    for tr in model.transformers:
        if not is_distribution_transformer(model, tr, source_buses):
            continue
        was, now = (_primary_feeder(feed, tr.buses) for feed in (feed_old, feed_new))
        if was != now:
            customers = sum(m.customers for m in loads if m.transformer_mrid == tr.mrid)
            ups = tuple(u for m in loads if m.transformer_mrid == tr.mrid for u in m.usage_points)
            transformers.append(FeederMove(tr.mrid, tr.name, MovedKind.DISTRIBUTION_TRANSFORMER, was, now,
                                           feeder_name.get(was or "", ""), feeder_name.get(now or "", ""),
                                           tr.feeder_mrid, None, customers, ups))
    return Reconfiguration(model.name, when, operator, reason, permanent, tuple(switches), tuple(transformers),
                           tuple(loads))


def _usage_points(graph: CimGraph) -> dict[str, list[str]]:
    """UsagePoint names by the equipment (EnergyConsumer) they are linked to, from either end of the association."""
    result: dict[str, list[str]] = {}
    points = {up.mrid: up for up in graph.of("UsagePoint")}
    for up in points.values():
        for eq in up.refs.get("UsagePoint.Equipments", ()):
            result.setdefault(eq, []).append(up.name or up.mrid)
    for objs in graph.by_class.values():
        for obj in objs:
            for ref in obj.refs.get("Equipment.UsagePoints", ()):
                if ref in points and (points[ref].name or ref) not in result.get(obj.mrid, []):
                    result.setdefault(obj.mrid, []).append(points[ref].name or ref)
    return result


def _primary_feeder(feed: FeedState, buses: tuple[int, ...]) -> str | None:
    live = [b for b in buses if b in feed.energised]
    if not live:
        return None
    # Both windings' buses inherit the primary's feeder through the trace; take the first that has one.
    for bus in live:
        if feed.feeder_of_bus.get(bus) is not None:
            return feed.feeder_of_bus[bus]
    return None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _switch_phase_fragments(graph: CimGraph, s: SwitchChange) -> tuple[list[Fragment], list[Fragment]]:
    """Per-phase state (``SwitchPhase.closed`` / ``normalOpen``) kept in step with the switch; the old values are
    the graph's own, so the reverse side always matches the base."""
    forward, reverse = [], []
    for phase in graph.of("SwitchPhase"):
        if phase.ref("SwitchPhase.Switch") != s.mrid:
            continue
        new_values, old_values = {}, {}
        for prop, value in (("SwitchPhase.closed", s.closed_after), ("SwitchPhase.normalOpen", s.normal_open_after)):
            old = phase.values.get(prop)
            if old is not None and old.lower() != _flag(value):
                new_values[prop], old_values[prop] = _flag(value), old
        if new_values:
            forward.append(Fragment(phase.mrid, None, new_values))
            reverse.append(Fragment(phase.mrid, None, old_values))
    return forward, reverse


def reconfiguration_document(reconfiguration: Reconfiguration, *, graph: CimGraph | None = None) -> bytes:
    """The difference model of an analysed reconfiguration. With the model's ``graph`` (from ``read_rdf``) the
    per-phase switch states (SwitchPhase) are changed too, which the NetworkModel alone cannot name."""
    r = reconfiguration
    forward: list[Fragment] = []
    reverse: list[Fragment] = []
    for s in r.switches:
        if graph is not None:
            phase_forward, phase_reverse = _switch_phase_fragments(graph, s)
            forward += phase_forward
            reverse += phase_reverse
        new_values: dict[str, str] = {}
        old_values: dict[str, str] = {}
        if s.closed_before != s.closed_after:
            new_values["Switch.open"] = _flag(not s.closed_after)
            old_values["Switch.open"] = _flag(not s.closed_before)
        if s.normal_open_before != s.normal_open_after:
            new_values["Switch.normalOpen"] = _flag(s.normal_open_after)
            old_values["Switch.normalOpen"] = _flag(s.normal_open_before)
        forward.append(Fragment(s.mrid, None, new_values))
        reverse.append(Fragment(s.mrid, None, old_values))
    for m in (*r.transformers, *r.loads):
        # Only a live element with a known old container moves; a dead one keeps its container (see module doc).
        if m.new_feeder_mrid is None or m.old_feeder_mrid is None or m.container_mrid is None:
            continue
        if m.container_mrid == m.new_feeder_mrid:
            continue
        forward.append(Fragment(m.mrid, None, {}, {"Equipment.EquipmentContainer": (m.new_feeder_mrid,)}))
        reverse.append(Fragment(m.mrid, None, {}, {"Equipment.EquipmentContainer": (m.container_mrid,)}))
    identity = "|".join([r.model_name, r.when.isoformat(), *(f"{s.mrid}:{s.closed_after}:{s.normal_open_after}"
                                                             for s in r.switches)])
    header = DifferenceHeader(str(uuid.uuid5(uuid.NAMESPACE_URL, f"dscada:reconfiguration:{identity}")),
                              r.when.isoformat(), r.description(), MODELING_AUTHORITY)
    return difference_document(header, forward, reverse)


def reconfiguration_difference(model: NetworkModel, before: Mapping[str, bool], after: Mapping[str, bool],
                               when: datetime, *, operator: str = "", reason: str = "",
                               permanent: bool = False, graph: CimGraph | None = None) -> bytes:
    """The CIM difference document (RDF/XML bytes) of a reconfiguration; see the module docstring for content.
    ``graph``: the CIM objects the model was built from, to keep SwitchPhase states in step."""
    return reconfiguration_document(analyse_reconfiguration(model, before, after, when, operator=operator,
                                                            reason=reason, permanent=permanent, graph=graph),
                                    graph=graph)
