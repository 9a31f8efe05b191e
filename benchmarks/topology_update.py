"""Topology processor: time to re-process one switch change, on IEEE 123 and on a synthetic 10,000-bus radial feeder.

    python benchmarks/topology_update.py --json benchmarks/results/topology_update.json

Each sample opens or closes one switch (``TopologyProcessor.set_switch``, the incremental island update) and then
builds the operator-display colouring (``colouring()``, every bus, branch and load); both are timed separately and
together. ``service`` times the live path through ``scada.topology_service.TopologyService`` (one double point per
switch): a change set processed (processor, colouring, island summary, diff, publish), and RTDB ingest to the update in
a subscriber's queue with the RTDB writer and the service thread running. The synthetic feeder is a random tree
(fixed seed) from one source, with a sectionalising switch on every ``--switch-every``-th branch, normally-open ties
between random buses, and one load per bus. Targets: < 10 ms on IEEE 123 and < 100 ms on 10,000 buses for switch
change + colouring.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.cim import load_cim  # noqa: E402
from models.config import StationConfig, parse_station_config  # noqa: E402
from models.network import (  # noqa: E402
    Bus,
    EnergySource,
    Feeder,
    LineSegment,
    Load,
    ModelDiagnostics,
    NetworkModel,
    Phase,
    ShuntConnection,
    Switch,
    SwitchKind,
)
from models.points import DoubleState  # noqa: E402
from models.updates import Cause, UpdateBatch, new_update_rows  # noqa: E402
from scada.changes import ChangeSet  # noqa: E402
from scada.rtdb import Rtdb  # noqa: E402
from scada.topology import TopologyProcessor  # noqa: E402
from scada.topology_service import TopologyService  # noqa: E402

SEED = 20261126
IEEE123 = REPO.parent / "shared/data/cim/IEEE123.xml"
ABC = Phase.A | Phase.B | Phase.C


def synthetic_radial_model(n_buses: int, *, switch_every: int, ties: int, seed: int) -> NetworkModel:
    """A random radial tree of ``n_buses`` buses fed at bus 0; every ``switch_every``-th branch is a closed switch,
    plus ``ties`` normally-open switches between random bus pairs."""
    rng = np.random.default_rng(seed)
    z = np.zeros((3, 3))
    z.flags.writeable = False
    buses = tuple(
        Bus(i, f"bus{i}", f"bus{i}", (f"cn{i}",), ABC, 12470.0, math.nan, math.nan, "F") for i in range(n_buses)
    )
    # Parent drawn near the end of the tree so far: long feeders with laterals, like a real one.
    parents = [int(max(0, i - 1 - rng.integers(0, 20))) for i in range(1, n_buses)]
    lines: list[LineSegment] = []
    switches: list[Switch] = []
    for k, (child, parent) in enumerate(zip(range(1, n_buses), parents, strict=True)):
        if k % switch_every == 0:
            name = f"sw{child}"
            switches.append(
                Switch(name, name, SwitchKind.LOAD_BREAK_SWITCH, parent, child, ABC, False, False, 400.0, 1e4, (), "F")
            )
        else:
            name = f"l{child}"
            lines.append(
                LineSegment(name, name, parent, child, (Phase.A, Phase.B, Phase.C), 50.0, "z", "z", z, z, z, None, "F")
            )
    for t in range(ties):
        a, b = (int(x) for x in rng.integers(1, n_buses, size=2))
        name = f"tie{t}"
        switches.append(Switch(name, name, SwitchKind.LOAD_BREAK_SWITCH, a, b, ABC, True, True, 400.0, 1e4, (), "F"))
    loads = tuple(
        Load(f"ld{i}", f"ld{i}", i, ABC, ShuntConnection.Y, 1e3, 1e2, (), (), True, 1, None, "F")
        for i in range(1, n_buses)
    )
    return NetworkModel(
        name=f"synthetic{n_buses}",
        source="benchmarks/topology_update.py",
        buses=buses,
        terminals=(),
        lines=tuple(lines),
        transformers=(),
        tap_changers=(),
        switches=tuple(switches),
        loads=loads,
        capacitors=(),
        ders=(),
        sources=(EnergySource("src", "src", 0, 12470.0, 12470.0, 0.0, 0.1, 0.1, 0.1, 0.1),),
        feeders=(Feeder("F", "synthetic"),),
        measurements=(),
        diagnostics=ModelDiagnostics({}, {}),
    )


def _stats_ms(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "median_ms": round(float(np.median(ms)), 4),
        "p95_ms": round(float(np.percentile(ms, 95)), 4),
        "max_ms": round(float(ms.max()), 4),
    }


def run(model: NetworkModel, *, changes: int, seed: int, target_ms: float) -> dict[str, object]:
    t0 = time.perf_counter()
    tp = TopologyProcessor(model)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    names = [sw.name for sw in model.switches]
    switch_s: list[float] = []
    colour_s: list[float] = []
    total_s: list[float] = []
    splits = merges = 0
    for _ in range(changes):
        name = names[int(rng.integers(0, len(names)))]
        closed = not tp.switch_closed(name)
        t0 = time.perf_counter()
        change = tp.set_switch(name, closed)
        t1 = time.perf_counter()
        tp.colouring()
        t2 = time.perf_counter()
        switch_s.append(t1 - t0)
        colour_s.append(t2 - t1)
        total_s.append(t2 - t0)
        splits += change.island_split
        merges += change.islands_merged
    total = _stats_ms(total_s)
    # Worst case for the incremental update: open/close the switch nearest the source in the intact network, so
    # the split search walks the whole energized island and half the buses change state.
    worst = TopologyProcessor(model)
    nearest = min(model.switches, key=lambda sw: min(sw.from_bus, sw.to_bus)).name
    worst_s: list[float] = []
    for k in range(2 * 50):
        t0 = time.perf_counter()
        worst.set_switch(nearest, closed=k % 2 == 1)
        worst.colouring()
        worst_s.append(time.perf_counter() - t0)
    return {
        "network": model.name,
        "buses": len(model.buses),
        "branches": tp.static.n_branches,
        "switches": len(model.switches),
        "loads": len(model.loads),
        "build_ms": round(build_s * 1e3, 3),
        "changes": changes,
        "island_splits": splits,
        "island_merges": merges,
        "final_islands": tp.island_count,
        "set_switch": _stats_ms(switch_s),
        "colouring": _stats_ms(colour_s),
        "switch_plus_colouring": total,
        "worst_case_switch": nearest,
        "worst_case_switch_plus_colouring": _stats_ms(worst_s),
        "target_ms": target_ms,
        "meets_target_p95": max(total["p95_ms"], _stats_ms(worst_s)["p95_ms"]) < target_ms,
    }


def _station_for(model: NetworkModel) -> StationConfig:
    """One RTU with a double position point per switch of the model, bound by switch name."""
    points = "".join(
        f'[[points]]\nname = "{sw.name}.pos"\nkind = "double"\nrtu = "R"\naddress = {i + 1}\ntype = "M_DP_TB_1"\n'
        f'element = "{sw.name}"\n' for i, sw in enumerate(model.switches))
    text = '[station]\nname = "bench"\n[[rtus]]\nname = "R"\ncommon_address = 1\naddresses = ["127.0.0.1:1"]\n'
    return parse_station_config(text + points, "bench.toml")


def run_service(model: NetworkModel, *, changes: int, seed: int, target_ms: float) -> dict[str, object]:
    """The live path: an RTDB change set of one switch point -> TopologyService (processor, colouring, islands, diff,
    publish). ``process_*``: the service's own work on a change set, called directly; ``end_to_end_*``: RTDB ingest
    -> writer -> subscription -> service thread -> update in a subscriber's queue, with every thread running."""
    config = _station_for(model)
    rtdb = Rtdb(config)
    service = TopologyService(rtdb, model)
    rng = np.random.default_rng(seed)
    ids = [config.point(f"{sw.name}.pos").id for sw in model.switches]
    process_s: list[float] = []
    state = {i: not sw.open for i, sw in zip(ids, model.switches, strict=True)}
    seq = 0
    for _ in range(changes):
        pid = ids[int(rng.integers(0, len(ids)))]
        state[pid] = not state[pid]
        rows = rtdb.snapshot([pid])
        rows["value"], rows["quality"] = (DoubleState.ON if state[pid] else DoubleState.OFF), 0
        seq += 1
        rows["seq"] = seq
        t0 = time.perf_counter()
        service.process(ChangeSet(rows, True, time.monotonic()))
        process_s.append(time.perf_counter() - t0)
    rtdb = Rtdb(config)
    service = TopologyService(rtdb, model)
    rtdb.start()
    service.start()
    e2e_s: list[float] = []
    try:
        _snap, sub = service.subscribe("bench", max_pending=changes + 10)
        state = {i: not sw.open for i, sw in zip(ids, model.switches, strict=True)}
        for _ in range(min(changes, 200)):
            pid = ids[int(rng.integers(0, len(ids)))]
            state[pid] = not state[pid]
            rows = new_update_rows(1)
            rows[0] = (pid, DoubleState.ON if state[pid] else DoubleState.OFF, 0, -1, Cause.SPONTANEOUS)
            t0 = time.perf_counter()
            rtdb.ingest(UpdateBatch("bench", rows, 0))
            while True:
                update = sub.get(timeout_s=5)
                if update is None:
                    raise RuntimeError("no topology update within 5 s")
                if update.switches or update.full:
                    break
            e2e_s.append(time.perf_counter() - t0)
    finally:
        service.stop()
        rtdb.stop()
    process = _stats_ms(process_s)
    return {
        "network": model.name,
        "bound_switch_points": len(ids),
        "changes": changes,
        "process_change_set": process,
        "end_to_end_ingest_to_update": _stats_ms(e2e_s),
        "target_ms": target_ms,
        "meets_target_p95": process["p95_ms"] < target_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buses", type=int, default=10_000)
    parser.add_argument("--switch-every", type=int, default=10)
    parser.add_argument("--ties", type=int, default=50)
    parser.add_argument("--changes", type=int, default=400)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks/results/topology_update.json")
    args = parser.parse_args()
    results: list[dict[str, object]] = []
    service: list[dict[str, object]] = []
    if IEEE123.exists():
        ieee123 = load_cim(IEEE123)
        results.append(run(ieee123, changes=args.changes, seed=SEED, target_ms=10.0))
        service.append(run_service(ieee123, changes=args.changes, seed=SEED, target_ms=10.0))
    else:
        print(f"skipping IEEE 123: {IEEE123} is missing", file=sys.stderr)
    synthetic = synthetic_radial_model(args.buses, switch_every=args.switch_every, ties=args.ties, seed=SEED)
    results.append(run(synthetic, changes=args.changes, seed=SEED, target_ms=100.0))
    service.append(run_service(synthetic, changes=args.changes, seed=SEED, target_ms=100.0))
    report = {
        "benchmark": "topology_update",
        "seed": SEED,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": results,
        "service": service,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if all(r["meets_target_p95"] for r in results + service) else 1


if __name__ == "__main__":
    raise SystemExit(main())
