"""Three-phase power flow: solve time on IEEE 13, IEEE 123 and a synthetic feeder of IEEE 123 copies (~3,000 nodes).

    python benchmarks/three_phase_flow.py --json benchmarks/results/three_phase_flow.json

Each case: the phase-model build (Y-bus) and the solve (``run_three_phase_powerflow`` given the built model:
injections, factorisation, iterations, results and branch flows) are timed separately, median and max over
``--repeats`` runs. The synthetic feeder is ``--copies`` IEEE 123 copies (buses, lines, switches, regulators at their
taps, transformers, loads and capacitors renamed per copy), each fed from one common ideal 4.16 kV source bus
through a short 3-phase line (0.01 + j0.02 ohm per phase).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.cim import load_cim  # noqa: E402
from models.network import Bus, EnergySource, LineSegment, NetworkModel, Phase  # noqa: E402
from models.phase_model import build_phase_model  # noqa: E402
from models.three_phase_flow import DerMode, run_three_phase_powerflow  # noqa: E402

CIM = REPO.parent / "shared/data/cim"
ABC = Phase.A | Phase.B | Phase.C


def replicated(net: NetworkModel, copies: int) -> NetworkModel:
    """``copies`` renamed copies of ``net`` behind one ideal source bus (index 0), each via a short line."""
    src = net.sources[0]
    head = Bus(0, "head", "head", ("cn-head",), ABC, src.nominal_v, math.nan, math.nan, None)
    buses, lines, trs, taps, sws, loads, caps = [head], [], [], [], [], [], []
    z = np.diag([complex(0.01, 0.02)] * 3)
    for c in range(copies):
        off = 1 + c * len(net.buses)
        tag = f"c{c}_"

        def b(i: int, off: int = off) -> int:
            return i + off

        buses += [dataclasses.replace(x, index=b(x.index), name=tag + x.name, mrid=tag + x.mrid) for x in net.buses]
        lines += [dataclasses.replace(x, name=tag + x.name, from_bus=b(x.from_bus), to_bus=b(x.to_bus))
                  for x in net.lines]
        lines.append(LineSegment(f"feed{c}", f"feed{c}", 0, b(src.bus), (Phase.A, Phase.B, Phase.C), 1.0, "z", "z",
                                 z.real, z.imag, np.zeros((3, 3)), None, None))
        trs += [dataclasses.replace(t, name=tag + t.name, mrid=tag + t.mrid, windings=tuple(
            dataclasses.replace(w, bus=b(w.bus), end_mrid=tag + w.end_mrid) for w in t.windings))
            for t in net.transformers]
        taps += [dataclasses.replace(t, bus=b(t.bus), winding_end_mrid=tag + t.winding_end_mrid)
                 for t in net.tap_changers]
        sws += [dataclasses.replace(s, name=tag + s.name, from_bus=b(s.from_bus), to_bus=b(s.to_bus))
                for s in net.switches]
        loads += [dataclasses.replace(x, bus=b(x.bus)) for x in net.loads]
        caps += [dataclasses.replace(x, bus=b(x.bus)) for x in net.capacitors]
    source = EnergySource("src", "source", 0, src.nominal_v, src.voltage_magnitude_v, 0.0, 0.0, 0.0, 0.0, 0.0)
    return dataclasses.replace(net, name=f"{net.name} x{copies}", buses=tuple(buses), terminals=(), lines=tuple(lines),
                               transformers=tuple(trs), tap_changers=tuple(taps), switches=tuple(sws),
                               loads=tuple(loads), capacitors=tuple(caps), ders=(), sources=(source,),
                               measurements=())


def measure(net: NetworkModel, repeats: int) -> dict[str, object]:
    build, solve = [], []
    flow = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        pm = build_phase_model(net)
        t1 = time.perf_counter()
        flow = run_three_phase_powerflow(net, der=DerMode.ON, phase_model=pm)
        t2 = time.perf_counter()
        build.append(t1 - t0)
        solve.append(t2 - t1)
    assert flow is not None
    energised = flow.nodes["energised"]
    return {
        "network": net.name, "nodes": len(flow.nodes), "buses": len(net.buses), "lines": len(net.lines),
        "loads": len(net.loads), "iterations": flow.iterations, "tolerance_pu": flow.tolerance_pu,
        "max_mismatch_a": flow.max_mismatch_a,
        "build_ms_median": statistics.median(build) * 1e3, "build_ms_max": max(build) * 1e3,
        "solve_ms_median": statistics.median(solve) * 1e3, "solve_ms_max": max(solve) * 1e3,
        "v_pu_min": float(flow.nodes["v_pu"][energised].min()), "v_pu_max": float(flow.nodes["v_pu"].max()),
        "load_p_kw": flow.load_p_w / 1e3, "loss_p_kw": flow.loss_p_w / 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--copies", type=int, default=11)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    ieee123 = load_cim(CIM / "IEEE123.xml")
    cases = [measure(load_cim(CIM / "IEEE13.xml"), args.repeats), measure(ieee123, args.repeats),
             measure(replicated(ieee123, args.copies), max(3, args.repeats // 4))]
    out = {"benchmark": "three_phase_flow", "cases": cases,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
