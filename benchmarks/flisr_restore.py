"""Live FLISR end to end on the sample network: fault -> trip -> plan -> isolated -> customers restored.

    python benchmarks/flisr_restore.py --json benchmarks/results/flisr_restore.json [--instant-operate]

Starts the physics-driven simulators (IEC 104 RTU, Modbus meters, IEC 61850 feeder IEDs, DNP3 FRTUs) and the control
centre with the live FLISR service in automatic mode, then per scenario places a cable fault (``sim.place_fault``),
waits for the run to finish, reads its times and the live topology colouring, and puts the network back to normal
(fault cleared, FAULTED markings removed, switches commanded back, FPIs reset). Times are wall clock (UTC ms) from the
physics' fault stamp: ``trip`` is the breaker's field time tag, ``detected`` the run's creation (after the FPI settle
window, default 3 s), ``planned``, ``isolated`` (last isolation step confirmed by the topology) and ``restored`` (last
restoration step confirmed by the topology: the customers are back on the live colouring). Switch operate times are
the simulators' (breakers 0.08 s, motorised load-break switches 1.5 s) unless ``--instant-operate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dms.flisr.plan import FlisrMode  # noqa: E402
from dms.flisr.runs import FlisrRun  # noqa: E402
from dms.flisr.service import FlisrService, FlisrSettings  # noqa: E402
from models.config import OperatorConfig, Role, load_station_config  # noqa: E402
from models.measurement_points import Quantity  # noqa: E402
from models.points import DoubleState, PointKind  # noqa: E402
from models.samples import relocate_station_text, sample_network_station_path  # noqa: E402
from oms.outage_records import OutageRecordStore  # noqa: E402
from rtu_sim.grid_driver import INSTANT_OPERATE, OperateTimes, PhysicsSettings  # noqa: E402
from rtu_sim.native_output import divert_native_stderr  # noqa: E402
from rtu_sim.simulator import RtuSimulator  # noqa: E402
from scada.commands import FeedbackStatus  # noqa: E402
from scada.server import ControlCenter  # noqa: E402
from scada.tags import TagKind  # noqa: E402

SEED = 11
SCENARIOS = ("F2-C04", "F5-C04", "F1-C06", "F6-C03", "F4-C04")
BENCH = OperatorConfig("bench", Role.OPERATOR, "")


def _wait(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")


def _command(center: ControlCenter, switch: str, close: bool) -> None:
    point = next(p for p in center.config.points if p.control is not None and p.name == f"{switch}.Pos")
    value = DoubleState.ON if close else DoubleState.OFF
    for _attempt in (1, 2):
        center.commands.select(point.id, value, BENCH)
        out = center.commands.operate(point.id, value, BENCH)
        if out.status.value == "success" and out.feedback is not FeedbackStatus.NOT_CONFIRMED:
            return
    raise RuntimeError(f"switching {switch} back failed")


def _back_to_normal(center: ControlCenter, sim: RtuSimulator) -> None:
    sim.clear_fault()
    for tag in center.tags.active():
        if tag.kind is TagKind.FAULTED:
            center.tags.remove(tag.id, BENCH.name, "benchmark scenario over")
    assert center.topology is not None
    model = center.topology.model
    snap = center.topology.snapshot()
    for name in [s.name for i, s in enumerate(model.switches) if s.open and snap.switch_closed[i]]:
        _command(center, name, False)
    for name in [s.name for i, s in enumerate(model.switches) if not s.open and not snap.switch_closed[i]]:
        _command(center, name, True)
    sim.reset_fpis()
    fpis = [p.id for p in center.config.points if (b := center.config.binding(p)) and b.quantity is
            Quantity.FAULT_INDICATOR]
    _wait(lambda: not center.rtdb.snapshot(fpis)["value"].any(), 30, "every FPI reset")
    _wait(lambda: not len(center.topology.snapshot().deenergized_loads()), 30, "every load supplied")


def _scenario(center: ControlCenter, sim: RtuSimulator, flisr: FlisrService, line: str) -> dict[str, Any]:
    since = max((r.id for r in flisr.runs(limit=1)), default=0)
    fault = sim.place_fault(line)
    t0 = fault.time_ms
    run: FlisrRun = _wait(lambda: next((r for r in flisr.runs() if r.id > since), None), 60, f"a run for {line}")
    run = _wait(lambda: (r := flisr.run(run.id)).state.final and r, 120, f"the run for {line} to finish")

    def rel(t: int) -> float | None:
        return round((t - t0) / 1000.0, 3) if t >= 0 else None

    return {
        "fault": line, "tripped": list(fault.tripped), "fpis_picked_up": list(run.picked_up),
        "state": run.state.value, "error": run.error,
        "faulted_elements": list(run.plan.fault.faulted_elements) if run.plan else [],
        "plan_ms": round(run.plan.plan_ms, 1) if run.plan else None,
        "steps": [{"number": s.number, "switch": s.switch, "action": s.action.value, "purpose": s.purpose.value,
                   "status": s.status.value, "point": s.point,
                   "duration_s": round((s.finished_ms - s.started_ms) / 1000.0, 3)
                   if s.started_ms >= 0 and s.finished_ms >= 0 else None} for s in run.steps],
        "trip_s": rel(run.trip_ms), "detected_s": rel(run.created_ms), "planned_s": rel(run.planned_ms),
        "isolated_s": rel(run.isolated_ms), "restored_s": rel(run.restored_ms),
        "trip_to_restored_s": run.trip_to_restored_s,
        "customers_interrupted": run.customers_interrupted, "customers_restored": run.customers_restored,
        "customers_still_off": run.customers_still_off, "notes": list(run.plan.notes) if run.plan else [],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--instant-operate", action="store_true", help="switches move at once in the simulators")
    ap.add_argument("--settle-s", type=float, default=FlisrSettings().settle_s, help="FPI settle window after a trip")
    args = ap.parse_args(argv)
    operate = INSTANT_OPERATE if args.instant_operate else OperateTimes()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flisr-bench-") as tmp:
        folder = Path(tmp)
        source = sample_network_station_path()
        path = folder / "station.toml"
        path.write_text(relocate_station_text(source.read_text(encoding="utf-8"), folder / "data", source.parent),
                        encoding="utf-8")
        config = load_station_config(path)
        with divert_native_stderr(folder / "native.log"):
            sim = RtuSimulator(config, seed=SEED, physics=PhysicsSettings(operate_times=operate))
            center = ControlCenter(config, grpc_address="127.0.0.1:0")
            outages = OutageRecordStore(center.data_dir / "outages.sqlite")
            flisr = FlisrService.from_center(center, mode=FlisrMode.AUTOMATIC, recorder=outages,
                                             settings=FlisrSettings(settle_s=args.settle_s))
            sim.start()
            try:
                center.start()
                flisr.start()
                monitored = [p.id for p in config.points if p.kind is not PointKind.COMMAND]
                _wait(lambda: not center.rtdb.snapshot(monitored)["quality"].any(), 120, "every point good")
                for line in SCENARIOS:
                    res = _scenario(center, sim, flisr, line)
                    results.append(res)
                    print(f"{line}: {res['state']}, trip {res['trip_s']} s, planned {res['planned_s']} s "
                          f"(plan {res['plan_ms']} ms), isolated {res['isolated_s']} s, restored {res['restored_s']}"
                          f" s; trip -> restored {res['trip_to_restored_s']} s; customers "
                          f"{res['customers_restored']}/{res['customers_interrupted']} back"
                          + (f"; {res['error']}" if res["error"] else ""), flush=True)
                    _back_to_normal(center, sim)
            finally:
                flisr.stop()
                center.stop()
                sim.stop()
                outages.close()
    out = {"benchmark": "flisr_restore", "network": "embedded sample network (6 feeders, 50 Hz)",
           "mode": "automatic", "settle_s": args.settle_s,
           "operate_times_s": {"breaker": operate.breaker_s, "load_break_switch": operate.load_break_switch_s,
                               "disconnector": operate.disconnector_s},
           "scenarios": results,
           "machine": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                       "platform": platform.platform()}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
