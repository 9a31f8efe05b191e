"""Meter -> load (DT) -> upstream device chain of a network model, precomputed as arrays for outage prediction.

A breadth-first search from the sources over the as-operated topology (lines, transformers, closed switches) gives
every energised bus its nearest upstream *device*: a source (the EHV/grid supply), a power transformer, a
distribution transformer (DT), or a switch. Devices form a tree (``parent``); switches of protective kinds (breaker,
recloser, fuse, sectionaliser), DTs, power transformers and sources are *predictable*: outage prediction from meter
evidence names only these, because a load-break switch does not operate on a fault (a SCADA report of one opening
still names it); a model without any protective switch predicts at its plain switches instead. Each load has its
device chain (nearest first) as one row of ``load_chain``; each device its downstream customer count, so aggregating
thousands of meter events is a few ``numpy`` reductions.

Meters: a customer's meter number is its consumer number (CIM UsagePoint name). A model without usage points (IEEE
123) gets ``customer_count`` synthetic meters per load, numbered ``<load name>-<k>`` (k = 1..n).

The network changes under a running OMS: FLISR or an operator closes a normally-open point and opens section switches,
or the model itself is replaced (a GIS update). ``plan_rebuild`` tells cheaply (one vectorised comparison of switch
states) whether the feeding paths changed, and which switch positions to build the new connectivity with: a protective
device that opened since the last build is outage *evidence* (the predictor gets it as a SCADA opening), so it stays
closed in the tree; any other difference from the build state (a tie closed, a section switch opened, a tripped
device closed again that was open at the build) changes the feeding paths and needs a rebuild.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from models.network import NetworkModel, SwitchKind
from models.topology import BranchKind, build_static_topology
from oms.errors import OmsError

__all__ = [
    "Connectivity",
    "Device",
    "DeviceKind",
    "RebuildPlan",
    "UnknownElementError",
    "build_connectivity",
    "plan_rebuild",
]

NO_DEVICE = -1


class UnknownElementError(OmsError, KeyError):
    """A meter, customer or switch that the connectivity model does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DeviceKind(StrEnum):
    SOURCE = "source"  # grid / EHV supply (CIM EnergySource)
    TRANSFORMER = "transformer"  # power (substation) transformer
    DT = "dt"  # distribution transformer
    BREAKER = "breaker"
    RECLOSER = "recloser"
    FUSE = "fuse"
    SECTIONALISER = "sectionaliser"
    SWITCH = "switch"  # load-break switch, disconnector, other switch kinds: not protective


_SWITCH_DEVICE = {
    SwitchKind.BREAKER: DeviceKind.BREAKER,
    SwitchKind.RECLOSER: DeviceKind.RECLOSER,
    SwitchKind.FUSE: DeviceKind.FUSE,
    SwitchKind.SECTIONALISER: DeviceKind.SECTIONALISER,
}
PROTECTIVE = frozenset({DeviceKind.BREAKER, DeviceKind.RECLOSER, DeviceKind.FUSE, DeviceKind.SECTIONALISER})
PREDICTABLE = PROTECTIVE | {DeviceKind.SOURCE, DeviceKind.TRANSFORMER, DeviceKind.DT}


@dataclass(frozen=True, slots=True)
class Device:
    index: int
    name: str
    mrid: str
    kind: DeviceKind
    parent: int  # NO_DEVICE for a source
    depth: int  # 0 for a source
    customers: int  # downstream meters in the as-operated topology
    feeder: str  # feeder name, "" for substation equipment
    predictable: bool  # prediction from meter evidence may name it
    protective: bool  # operates on a fault (preferred among devices feeding the same customers)


@dataclass(frozen=True, slots=True, eq=False)
class Connectivity:
    """Read-only arrays; ``meter_load[m]`` indexes ``load_names``, ``load_chain[l]`` lists device indices nearest
    first, padded with NO_DEVICE; ``load_chain[l, 0]`` is NO_DEVICE for a load no source reaches."""

    model_name: str
    devices: tuple[Device, ...]
    device_index: Mapping[str, int]  # name and mRID -> device
    parent: np.ndarray  # int32 [D]
    pparent: np.ndarray  # int32 [D]: nearest predictable ancestor
    depth: np.ndarray  # int32 [D]
    customers: np.ndarray  # int64 [D]
    predictable: np.ndarray  # bool [D]
    protective: np.ndarray  # bool [D]
    load_names: tuple[str, ...]
    load_meters: np.ndarray  # int64 [L]
    load_chain: np.ndarray  # int32 [L, max depth + 1]
    meter_ids: tuple[str, ...]
    meter_index: Mapping[str, int]
    meter_load: np.ndarray  # int32 [M]
    # the switch positions it was built with, following ``model.switches`` (plan_rebuild compares against them)
    switch_mrids: tuple[str, ...]
    switch_names: tuple[str, ...]
    switch_open: np.ndarray  # bool [S]
    switch_protective: np.ndarray  # bool [S]: breaker, recloser, fuse, sectionaliser
    model: NetworkModel = field(repr=False)

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    def device(self, key: str) -> Device:
        """A device by name or mRID; UnknownElementError naming it otherwise."""
        try:
            return self.devices[self.device_index[key]]
        except KeyError:
            raise UnknownElementError(f"no device {key!r} in the connectivity of {self.model_name!r}") from None

    def meter(self, meter_id: str) -> int:
        try:
            return self.meter_index[meter_id]
        except KeyError:
            raise UnknownElementError(f"no meter {meter_id!r} in the connectivity of {self.model_name!r}") from None

    def chain(self, meter_id: str) -> tuple[Device, ...]:
        """The devices above a meter, nearest first (its DT, fuse, ..., breaker, substation, source)."""
        row = self.load_chain[self.meter_load[self.meter(meter_id)]]
        return tuple(self.devices[int(d)] for d in row if d != NO_DEVICE)

    def is_ancestor(self, upper: int, lower: int) -> bool:
        """True when device ``upper`` is ``lower`` or above it."""
        d = lower
        while d != NO_DEVICE:
            if d == upper:
                return True
            d = int(self.parent[d])
        return False

    def downstream_loads(self, device: int) -> np.ndarray:
        """Indices of the loads a device feeds."""
        return np.flatnonzero((self.load_chain == device).any(axis=1))


def _meters(model: NetworkModel) -> tuple[list[str], list[int]]:
    ids: list[str] = []
    loads: list[int] = []
    if model.customers:
        for c in model.customers:
            ids.append(c.consumer_number)
            loads.append(-1 if c.load is None else c.load)
    else:
        for i, load in enumerate(model.loads):
            for k in range(1, max(0, load.customer_count) + 1):
                ids.append(f"{load.name}-{k}")
                loads.append(i)
    return ids, loads


def build_connectivity(model: NetworkModel, switch_open: Mapping[str, bool] | None = None, *,
                       switches_predictable: bool | None = None) -> Connectivity:
    """Device tree and chains of ``model`` with its switches as operated (``switch_open`` overrides by name or
    mRID). ``switches_predictable``: whether plain switches (load-break, disconnector) may be predicted; None = only
    when the model has no protective switch at all (IEEE 123 as published has only plain switches).
    Raises UnknownElementError for a switch name the model lacks and OmsError for duplicate meter numbers."""
    static = build_static_topology(model)
    is_open = {sw.mrid: sw.open for sw in model.switches}
    if switch_open:
        by_name = {sw.name: sw.mrid for sw in model.switches}
        for key, value in switch_open.items():
            mrid = key if key in is_open else by_name.get(key)
            if mrid is None:
                raise UnknownElementError(f"no switch {key!r} in network {model.name!r}")
            is_open[mrid] = bool(value)
    feeder_names = {f.mrid: f.name for f in model.feeders}
    adjacency: list[list[tuple[int, int]]] = [[] for _ in range(static.n_buses)]
    for b in range(static.n_branches):
        kind = static.branch_kind[b]
        if kind is BranchKind.SWITCH and is_open[static.branch_mrid[b]]:
            continue
        a, c = int(static.branch_from[b]), int(static.branch_to[b])
        adjacency[a].append((c, b))
        adjacency[c].append((a, b))

    names: list[str] = []
    mrids: list[str] = []
    kinds: list[DeviceKind] = []
    parents: list[int] = []
    feeders: list[str] = []
    by_element: dict[tuple[str, int], int] = {}

    def new_device(name: str, mrid: str, kind: DeviceKind, parent: int, feeder: str | None) -> int:
        names.append(name)
        mrids.append(mrid)
        kinds.append(kind)
        parents.append(parent)
        feeders.append(feeder_names.get(feeder or "", ""))
        return len(names) - 1

    up = np.full(static.n_buses, NO_DEVICE, dtype=np.int32)
    seen = np.zeros(static.n_buses, dtype=bool)
    queue: deque[int] = deque()
    for src in model.sources:
        if seen[src.bus]:
            continue
        up[src.bus] = new_device(src.name, src.mrid, DeviceKind.SOURCE, NO_DEVICE, None)
        seen[src.bus] = True
        queue.append(src.bus)
    while queue:
        u = queue.popleft()
        for v, b in adjacency[u]:
            if seen[v]:
                continue
            seen[v] = True
            queue.append(v)
            kind = static.branch_kind[b]
            element = int(static.branch_element[b])
            device = int(up[u])
            if kind is BranchKind.SWITCH:
                sw = model.switches[element]
                if sw.kind is not SwitchKind.JUMPER:
                    device = new_device(sw.name, sw.mrid, _SWITCH_DEVICE.get(sw.kind, DeviceKind.SWITCH), device,
                                        sw.feeder_mrid)
            elif kind in (BranchKind.TRANSFORMER, BranchKind.DISTRIBUTION_TRANSFORMER):
                tr = model.transformers[element]
                key = ("transformer", element)
                if key not in by_element:  # the legs of a multi-winding transformer share one device
                    by_element[key] = new_device(
                        tr.name, tr.mrid,
                        DeviceKind.DT if kind is BranchKind.DISTRIBUTION_TRANSFORMER else DeviceKind.TRANSFORMER,
                        device, tr.feeder_mrid)
                device = by_element[key]
            up[v] = device

    n_dev = len(names)
    parent = np.asarray(parents, dtype=np.int32).reshape(n_dev)
    depth = np.zeros(n_dev, dtype=np.int32)
    for d in range(n_dev):  # parents are created before their children
        depth[d] = 0 if parent[d] == NO_DEVICE else depth[parent[d]] + 1
    if switches_predictable is None:
        switches_predictable = not any(sw.kind in _SWITCH_DEVICE for sw in model.switches)
    extra = {DeviceKind.SWITCH} if switches_predictable else set()
    predictable = np.asarray([k in PREDICTABLE | extra for k in kinds], dtype=bool).reshape(n_dev)
    protective = np.asarray([k in PROTECTIVE | extra for k in kinds], dtype=bool).reshape(n_dev)
    pparent = np.full(n_dev, NO_DEVICE, dtype=np.int32)
    for d in range(n_dev):
        p = int(parent[d])
        while p != NO_DEVICE and not predictable[p]:
            p = int(parent[p])
        pparent[d] = p

    meter_ids, meter_loads = _meters(model)
    meter_index: dict[str, int] = {}
    for m, mid in enumerate(meter_ids):
        if mid in meter_index:
            raise OmsError(f"network {model.name!r}: meter number {mid!r} is used by two customers")
        meter_index[mid] = m
    meter_load = np.asarray(meter_loads, dtype=np.int32).reshape(len(meter_ids))
    n_loads = len(model.loads)
    load_meters = np.bincount(meter_load[meter_load >= 0], minlength=n_loads).astype(np.int64)
    max_depth = int(depth.max()) + 1 if n_dev else 1
    chain = np.full((n_loads, max_depth), NO_DEVICE, dtype=np.int32)
    for i, load in enumerate(model.loads):
        d, c = int(up[load.bus]), 0
        while d != NO_DEVICE:
            chain[i, c] = d
            d, c = int(parent[d]), c + 1
    customers = np.zeros(n_dev, dtype=np.int64)
    valid = chain >= 0
    np.add.at(customers, chain[valid], np.broadcast_to(load_meters[:, None], chain.shape)[valid])
    devices = tuple(Device(d, names[d], mrids[d], kinds[d], int(parent[d]), int(depth[d]), int(customers[d]),
                           feeders[d], bool(predictable[d]), bool(protective[d])) for d in range(n_dev))
    device_index = {mrids[d]: d for d in range(n_dev)} | {names[d]: d for d in range(n_dev)}
    sw_open = np.asarray([is_open[sw.mrid] for sw in model.switches], dtype=bool).reshape(len(model.switches))
    sw_protective = np.asarray([sw.kind in _SWITCH_DEVICE for sw in model.switches],
                               dtype=bool).reshape(len(model.switches))
    for array in (parent, pparent, depth, customers, predictable, protective, load_meters, chain, meter_load, sw_open,
                  sw_protective):
        array.flags.writeable = False
    return Connectivity(model.name, devices, device_index, parent, pparent, depth, customers, predictable,
                        protective, tuple(x.name for x in model.loads), load_meters, chain, tuple(meter_ids),
                        meter_index, meter_load, tuple(sw.mrid for sw in model.switches),
                        tuple(sw.name for sw in model.switches), sw_open, sw_protective, model)


def _energised_buses(model: NetworkModel, switch_open: np.ndarray) -> np.ndarray:
    """Per bus: connected to a source through lines, transformers and closed switches."""
    static = build_static_topology(model)
    keep = np.ones(static.n_branches, dtype=bool)
    keep[static.switch_branch] = ~switch_open
    a, b = static.branch_from[keep], static.branch_to[keep]
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(static.n_buses, static.n_buses))
    _n, labels = connected_components(graph, directed=False)
    return np.isin(labels, labels[[src.bus for src in model.sources]])


@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """What a topology change means for the connectivity. ``switch_open`` (by mRID) is what to build with when
    ``needed`` (empty otherwise: the check stays cheap); ``feeding_changes`` name the switches whose change alters
    the feeding paths (empty when only the model changed); ``evidence`` names protective devices open now but kept
    closed in the tree: outage evidence the predictor must hold as SCADA openings (the RTDB watcher feeds
    telemetered ones)."""

    needed: bool
    model_changed: bool
    switch_open: Mapping[str, bool]
    feeding_changes: tuple[str, ...]
    evidence: tuple[str, ...]


def plan_rebuild(built: Connectivity | None, model: NetworkModel,
                 switch_open: np.ndarray | Mapping[str, bool]) -> RebuildPlan:
    """Compare live switch positions with the positions ``built`` was made with (None: a first build, against the
    model's normal states). ``switch_open``: every switch's state as an array following ``model.switches`` (the live
    form: ``~TopologySnapshot.switch_closed``), or changes by name/mRID on top of the built positions (of the model's
    own states for a new model).

    A protective switch (breaker, recloser, fuse, sectionaliser) open now but closed in the base is an outage, not a
    new open point: it stays closed in the build and is listed in ``evidence`` (unless other switches moved too and
    the live positions feed both its sides: then it is the new open point of a reconfiguration, a feeding change).
    Every other difference from the base changes the feeding paths. A model other than ``built``'s always needs a
    rebuild; switches it shares with ``built`` (by mRID) keep ``built``'s base, new ones their normal state."""
    n = len(model.switches)
    same_model = built is not None and built.model is model
    if built is not None and same_model:
        base, protective = built.switch_open, built.switch_protective
    else:
        base = np.asarray([sw.normal_open for sw in model.switches], dtype=bool).reshape(n)
        if built is not None:
            old = dict(zip(built.switch_mrids, built.switch_open.tolist(), strict=True))
            base = np.asarray([old.get(sw.mrid, bool(base[i])) for i, sw in enumerate(model.switches)],
                              dtype=bool).reshape(n)
        protective = np.asarray([sw.kind in _SWITCH_DEVICE for sw in model.switches], dtype=bool).reshape(n)
    if isinstance(switch_open, np.ndarray):
        if switch_open.shape != (n,):
            raise OmsError(f"plan_rebuild: {len(switch_open)} switch states for the {n} switches of network "
                           f"{model.name!r}")
        now = switch_open.astype(bool, copy=False)
    else:  # changes on top of the built positions (a new model: on top of its own states)
        index = {sw.mrid: i for i, sw in enumerate(model.switches)} | {sw.name: i for i, sw in
                                                                       enumerate(model.switches)}
        now = (base.copy() if same_model else
               np.asarray([sw.open for sw in model.switches], dtype=bool).reshape(n))
        for key, value in switch_open.items():
            i = index.get(key)
            if i is None:
                raise UnknownElementError(f"no switch {key!r} in network {model.name!r}")
            now[i] = bool(value)
    tripped = now & ~base & protective  # evidence: kept closed in the tree
    build = now & ~tripped
    changed = np.flatnonzero(build != base)
    if tripped.any() and (len(changed) or not same_model):
        # A protective device opened while other switches moved may be a new open point rather than a trip: when
        # the live positions feed both its sides, nobody is off because of it, so it opens in the tree.
        energised = _energised_buses(model, now)
        for i in np.flatnonzero(tripped):
            sw = model.switches[int(i)]
            if energised[sw.from_bus] and energised[sw.to_bus]:
                tripped[i], build[i] = False, True
        changed = np.flatnonzero(build != base)
    needed = not same_model or len(changed) > 0
    return RebuildPlan(
        needed=needed,
        model_changed=not same_model and built is not None,
        switch_open=({sw.mrid: bool(build[i]) for i, sw in enumerate(model.switches)} if needed else {}),
        feeding_changes=tuple(model.switches[int(i)].name for i in changed),
        evidence=tuple(model.switches[int(i)].name for i in np.flatnonzero(tripped)),
    )
