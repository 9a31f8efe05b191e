"""Update budgets on a mixed fleet: IEC 104 RTUs, DNP3 FRTUs, Modbus TCP meters and IEC 61850 IEDs on loopback.

    python benchmarks/fleet_budget.py --iec104 50 --dnp3 50 --modbus 20 --iec61850 10 --points 20000 \
        --changes-per-s 2000 --seconds 60 --json benchmarks/results/fleet_budget.json \
        --png benchmarks/results/fleet_budget.png

Processes, as in a deployment: the simulated devices (one process per protocol, or one for all with
``--sim-processes one``), the server (this process: ControlCenter with its RTDB, SOE, alarms, historian and gRPC),
one supervised adapter process per protocol (children of the server), and a gRPC subscriber process.

The simulators change randomly chosen points at ``--changes-per-s`` over the fleet (each protocol's share in
proportion to its points, ``--status-share`` of them digital) and log every change (point, value, time). Latency is
receipt time minus the field's time tag of the change; where the protocol carries none (Modbus is polled) it is
measured from the logged change time of the value that arrived. All processes share the machine's clock.

Lost updates: for the event-driven protocols every change must arrive: the RTDB's count of spontaneous changes per
device equals the simulator's sent counter (``RtuStats.sent``). For polled Modbus, intermediate values between two
polls are legitimately not seen; every value that stayed in the device for a scan period plus one second must have
arrived, and the last value of every point must arrive. For every protocol the RTDB's final values must equal the
simulators'.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.config import StationConfig, load_station_config  # noqa: E402
from models.points import DoubleState, PointKind, Quality, TimeSource  # noqa: E402
from models.protocols import TIME_SOURCE, time_source  # noqa: E402
from models.synthetic import FLEET_ROLES, mixed_fleet_station_toml  # noqa: E402
from models.timebase import now_ms  # noqa: E402
from models.updates import Cause, LinkEvent  # noqa: E402

TOKEN = "bench-operator-token"
PROTOCOLS = ("iec104", "dnp3", "modbus", "iec61850")
EVENT_PROTOCOLS = ("iec104", "dnp3", "iec61850")
CLASSES = ("digital", "analog")
#: Update budgets (field change -> RTDB), ms: (digital, analog) for an RTU and an FRTU.
BUDGET_MS = {False: (4000.0, 5000.0), True: (6000.0, 10000.0)}
EVENT_GOAL_P99_MS = 250.0  # goal for the event-driven protocols; Modbus: scan period + this
LOAD_PERIOD_S = 0.005
POINT_STATUS_SHARE = 0.2  # digital points in each device's point list
GI_TIMEOUT_S = 240.0
ROW_DTYPE = np.dtype([("point", "<i4"), ("value", "<f8"), ("source_time_ms", "<i8"), ("recv_time_ms", "<i8"),
                      ("cause", "u1")])
LOG_DTYPE = np.dtype([("point", "<i4"), ("value", "<f8"), ("time_ms", "<i8")])


# ================================================================================================ simulator child
class LoadGenerator:
    """Changes random points of the hosted devices at a steady rate and logs each change (point, value, time).

    Analogs take integer values (exact in every encoding: IEC 104 float, DNP3 integer or float, Modbus float32,
    IEC 61850 float), each different from the last; status points flip. Runs on its own thread."""

    def __init__(self, sim: Any, seed: int) -> None:
        self._rng = random.Random(f"fleet_budget:{seed}:{','.join(sim.rtu_names)}")
        self._status: list[tuple[Any, Any]] = []  # (outstation, slot)
        self._analog: list[tuple[Any, Any]] = []
        for name in sim.rtu_names:
            o = sim.outstation(name)
            for s in o.slots:
                if not s.monitored:
                    continue
                if s.point.kind.is_status:
                    self._status.append((o, s))
                elif s.point.kind is PointKind.ANALOG:
                    self._analog.append((o, s))
        self._value = {s.point.id: o.value(s.point.name) for o, s in self._status + self._analog}
        self._log: list[tuple[int, float, int]] = []
        self._generated: dict[str, int] = dict.fromkeys(sim.rtu_names, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self, changes_per_s: float, status_share: float) -> None:
        self.stop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(changes_per_s, status_share), name="fleet-load",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _next_value(self, s: Any) -> float:
        cur = self._value[s.point.id]
        kind = s.point.kind
        if kind is PointKind.DOUBLE:
            return float(DoubleState.ON if cur == DoubleState.OFF else DoubleState.OFF)
        if kind is PointKind.SINGLE:
            return 0.0 if cur else 1.0
        base = float(round(cur)) if np.isfinite(cur) else 200.0
        step = self._rng.choice((-1, 1)) * self._rng.randint(1, 20)
        new = base + step if 100.0 <= base + step <= 300.0 else base - step
        return new if new != cur else new + 1.0

    def _run(self, rate: float, share: float) -> None:
        carry, last = 0.0, time.monotonic()
        while not self._stop.wait(LOAD_PERIOD_S):
            mono = time.monotonic()
            due = carry + rate * (mono - last)
            last = mono
            n = int(due)
            carry = due - n
            stamp = now_ms()
            for _ in range(n):
                pool = self._status if (self._rng.random() < share and self._status) or not self._analog \
                    else self._analog
                o, s = self._rng.choice(pool)
                value = self._next_value(s)
                try:
                    o.set_value(s.point.name, value, Quality.GOOD, time_ms=stamp, hold=False)
                except Exception:  # counted: a refused change shows up as a mismatch in the results
                    self.errors += 1
                    continue
                self._value[s.point.id] = value
                self._log.append((s.point.id, value, stamp))
                self._generated[o.name] += 1

    def log(self) -> np.ndarray:
        return np.array(self._log, dtype=LOG_DTYPE) if self._log else np.zeros(0, dtype=LOG_DTYPE)

    @property
    def generated(self) -> dict[str, int]:
        return dict(self._generated)


def _sim_stats(sim: Any, gen: LoadGenerator) -> dict[str, Any]:
    st = sim.stats()
    return {"rtus": {n: {"sent": r.sent, "dropped": r.dropped, "unsent": r.unsent, "queued": r.queued,
                         "sent_by_kind": dict(r.sent_by_kind)} for n, r in st.rtus.items()},
            "generated": gen.generated, "errors": gen.errors}


def simulator_main(conn: Connection, cfg_path: str, rtus: list[str], seed: int) -> None:
    """Child process: hosts ``rtus`` and answers requests from the benchmark over ``conn``."""
    import logging

    from rtu_sim.simulator import RtuSimulator

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s sim %(levelname)s %(name)s: %(message)s")
    sim = None
    try:
        config = load_station_config(cfg_path)
        sim = RtuSimulator(config, rtus, seed=seed, physics=False)
        sim.start()
        gen = LoadGenerator(sim, seed)
        conn.send(("ready", os.getpid()))
        while True:
            op, *args = conn.recv()
            if op == "load":
                gen.start(*args)
                conn.send(("ok",))
            elif op == "stop_load":
                gen.stop()
                conn.send(("ok",))
            elif op == "stats":
                conn.send(("stats", _sim_stats(sim, gen)))
            elif op == "result":
                finals = {s.point.id: o.value(s.point.name) for n in sim.rtu_names
                          for o in [sim.outstation(n)] for s in o.slots if s.monitored}
                conn.send(("result", gen.log(), finals))
            elif op == "quit":
                conn.send(("ok",))
                break
    except (EOFError, KeyboardInterrupt):
        pass
    except Exception:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        if sim is not None:
            sim.stop()


class SimProcess:
    """A simulator child process and its request pipe."""

    def __init__(self, label: str, cfg_path: Path, rtus: list[str], seed: int) -> None:
        self.label = label
        self.rtus = rtus
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=simulator_main, args=(child, str(cfg_path), rtus, seed),
                                name=f"sim-{label}", daemon=True)
        self.proc.start()
        child.close()
        self.pid = self.proc.pid or 0

    def request(self, *msg: Any, timeout_s: float = 60.0) -> tuple[Any, ...]:
        self._conn.send(msg)
        if not self._conn.poll(timeout_s):
            raise SystemExit(f"simulator {self.label}: no answer to {msg[0]!r} within {timeout_s:g} s")
        answer = self._conn.recv()
        if answer[0] == "error":
            raise SystemExit(f"simulator {self.label} failed:\n{answer[1]}")
        return answer  # type: ignore[no-any-return]

    def wait_ready(self, timeout_s: float) -> None:
        if not self._conn.poll(timeout_s):
            raise SystemExit(f"simulator {self.label}: not ready within {timeout_s:g} s")
        answer = self._conn.recv()
        if answer[0] != "ready":
            raise SystemExit(f"simulator {self.label} failed to start:\n{answer[1]}")

    def close(self) -> None:
        if self.proc.is_alive():
            try:
                self._conn.send(("quit",))
                if self._conn.poll(10):
                    self._conn.recv()
            except (OSError, EOFError):
                pass
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# ================================================================================================ subscriber child
def run_subscriber(address: str, out: str) -> int:
    """Child process: subscribe to every point over gRPC and record each change's receipt time until stdin says stop."""
    from scada.api.client import ScadaClient

    rows: list[tuple[int, float, int, int, int]] = []
    dropped = 0
    with ScadaClient(address, TOKEN) as client:
        client.wait_ready(10)
        stream = client.subscribe(max_pending=100_000)

        def stop_on_stdin() -> None:
            sys.stdin.readline()
            stream.cancel()

        threading.Thread(target=stop_on_stdin, daemon=True).start()
        for msg in stream:
            if msg.snapshot:
                if msg.end_of_snapshot:
                    print("ready", flush=True)
                continue
            now = now_ms()
            rows.extend((v.point, v.value, v.source_time_ms, now, v.cause) for v in msg.values
                        if v.cause != Cause.SUPERVISION)
            dropped = msg.dropped
    arr = np.array(rows, dtype=ROW_DTYPE) if rows else np.zeros(0, dtype=ROW_DTYPE)
    np.savez(out, rows=arr, dropped=dropped)
    return 0


# ================================================================================================ measurement
def proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc); 0 if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB; 0 if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return 0.0


def stats_ms(a: np.ndarray, budget_ms: float, goal_ms: float) -> dict[str, Any]:
    if not len(a):
        return {"count": 0}
    return {"count": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1),
            "mean_ms": round(float(a.mean()), 1), "budget_ms": budget_ms,
            "inside_budget_pct": round(100.0 * float((a <= budget_ms).mean()), 3),
            "goal_p99_ms": goal_ms, "p99_goal_met": bool(np.percentile(a, 99) <= goal_ms)}


@dataclass(frozen=True, slots=True)
class PointTable:
    """Per point id: protocol index, digital flag, RTU index, budget, p99 goal."""

    protocol: np.ndarray
    digital: np.ndarray
    rtu: np.ndarray
    budget_ms: np.ndarray
    goal_ms: np.ndarray
    field_time: np.ndarray  # the protocol carries the field's time tag of a change
    rtu_names: tuple[str, ...]

    @classmethod
    def of(cls, config: StationConfig, scan_ms: Callable[[Any, bool], float]) -> PointTable:
        rtu_index = {r.name: i for i, r in enumerate(config.rtus)}
        rtus = {r.name: r for r in config.rtus}
        n = len(config.points)
        proto = np.zeros(n, dtype=np.int8)
        digital = np.zeros(n, dtype=bool)
        rtu = np.zeros(n, dtype=np.int32)
        budget = np.zeros(n)
        goal = np.zeros(n)
        for p in config.points:
            r = rtus[p.source.rtu]
            proto[p.id] = PROTOCOLS.index(r.protocol.value)
            digital[p.id] = p.kind.is_status
            rtu[p.id] = rtu_index[r.name]
            budget[p.id] = BUDGET_MS[r.frtu][0 if digital[p.id] else 1]
            goal[p.id] = EVENT_GOAL_P99_MS + (scan_ms(r, bool(digital[p.id])) if r.protocol.value == "modbus" else 0)
        field_time = np.array([time_source(p) is TimeSource.FIELD for p in config.points], dtype=bool)
        return cls(proto, digital, rtu, budget, goal, field_time, tuple(rtu_index))


class ChangeLog:
    """The simulators' change log, indexed per point for joining arrivals to the change that produced them."""

    def __init__(self, log: np.ndarray) -> None:
        order = np.lexsort((log["time_ms"], log["point"]))
        self.log = log[order]
        pts = self.log["point"]
        self._starts = {int(p): (int(a), int(b)) for p, a, b in _runs(pts)}

    def changes(self, point: int) -> np.ndarray:
        a, b = self._starts.get(point, (0, 0))
        return self.log[a:b]

    def latency(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each arrival row: receipt minus the time of the latest logged change of its point to its value at or
        before the row's read time (``read_time``); NaN when there is none (a value not produced by the load). Also
        returns the index into ``self.log`` of the matched change (-1 none)."""
        lat = np.full(len(rows), np.nan)
        match = np.full(len(rows), -1, dtype=np.int64)
        for i, (p, v, ref, recv) in enumerate(zip(rows["point"], rows["value"], read_time(rows), rows["recv_time_ms"],
                                                  strict=True)):
            a, b = self._starts.get(int(p), (0, 0))
            if a == b:
                continue
            times = self.log["time_ms"][a:b]
            k = a + int(np.searchsorted(times, ref, side="right")) - 1
            while k >= a and self.log["value"][k] != v:
                k -= 1
            if k >= a:
                lat[i] = recv - self.log["time_ms"][k]
                match[i] = k
        return lat, match


def read_time(rows: np.ndarray) -> np.ndarray:
    """When a row's value was read from the device: its time tag when it has one (a polled protocol stamps the poll's
    response), else its receipt. Joining on it keeps a late delivery from being matched to a later change."""
    return np.where(rows["source_time_ms"] >= 0, rows["source_time_ms"], rows["recv_time_ms"])


def _runs(sorted_keys: np.ndarray) -> list[tuple[int, int, int]]:
    if not len(sorted_keys):
        return []
    edges = np.nonzero(np.diff(sorted_keys))[0] + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [len(sorted_keys)]))
    return [(int(sorted_keys[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def latencies(rows: np.ndarray, table: PointTable, clog: ChangeLog) -> np.ndarray:
    """Latency of each arrival row: from the field time tag when the protocol carries one, else (polled Modbus, or a
    row without a tag) from the logged change time of the value that arrived."""
    lat = np.full(len(rows), np.nan)
    tagged = (rows["source_time_ms"] >= 0) & table.field_time[rows["point"]]
    lat[tagged] = (rows["recv_time_ms"][tagged] - rows["source_time_ms"][tagged]).astype(float)
    untagged = np.nonzero(~tagged)[0]
    if len(untagged):
        lat[untagged] = clog.latency(rows[untagged])[0]
    return lat


def modbus_loss(rows: np.ndarray, clog: ChangeLog, table: PointTable, scan_ms: np.ndarray, initial: np.ndarray,
                end_ms: int) -> dict[str, int]:
    """Polled loss check. A logged Modbus change whose value stayed in the device for its scan period + 1 s (until
    the next change of the point, or ``end_ms`` for the last one) must have been read by a poll in that window: a row
    of that value with a read time inside it, or, when no row came (the RTDB already held the value: a status point
    flipped twice between two polls), the RTDB's value as of the window's end equals it. Read times are the polls',
    so a late delivery is late, not lost. ``initial``: the RTDB's values when the load started."""
    modbus = PROTOCOLS.index("modbus")
    mrows = rows[table.protocol[rows["point"]] == modbus]
    _, match = clog.latency(mrows)
    seen = np.zeros(len(clog.log), dtype=bool)
    seen[match[match >= 0]] = True
    log = clog.log
    is_modbus = table.protocol[log["point"]] == modbus
    next_time = np.full(len(log), end_ms, dtype=np.int64)
    same_point = log["point"][1:] == log["point"][:-1]
    next_time[:-1][same_point] = log["time_ms"][1:][same_point]
    held = next_time - log["time_ms"] >= scan_ms[log["point"]] + 1000.0
    read = read_time(mrows)
    order = np.lexsort((read, mrows["point"]))
    mrows, read = mrows[order], read[order]
    runs = {p: (a, b) for p, a, b in _runs(mrows["point"])}
    missed = 0
    for k in np.nonzero(is_modbus & held)[0]:
        p, v = int(log["point"][k]), log["value"][k]
        a, b = runs.get(p, (0, 0))
        lo = a + int(np.searchsorted(read[a:b], log["time_ms"][k], side="left"))
        hi = a + int(np.searchsorted(read[a:b], next_time[k], side="left"))
        if (mrows["value"][lo:hi] == v).any():
            continue
        rtdb_value = mrows["value"][hi - 1] if hi > a else initial[p]
        missed += int(rtdb_value != v)
    return {"changes": int(is_modbus.sum()), "changes_held_a_scan": int((is_modbus & held).sum()),
            "held_changes_missed": missed, "changes_seen": int((is_modbus & seen).sum()),
            "superseded_before_a_poll_unseen": int((is_modbus & ~held & ~seen).sum())}


# ================================================================================================ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for proto, default in zip(PROTOCOLS, (50, 50, 20, 10), strict=True):
        ap.add_argument(f"--{proto}", type=int, default=default, metavar="N",
                        help=f"{FLEET_ROLES[proto][0]} devices on {proto} (default {default}; 0 leaves it out)")
    ap.add_argument("--points", type=int, default=20000, help="points in the whole fleet (at least)")
    ap.add_argument("--changes-per-s", type=float, default=2000.0, help="field changes per second over the fleet")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window under load")
    ap.add_argument("--status-share", type=float, default=0.2, help="share of the changes on digital points")
    ap.add_argument("--modbus-scan-s", type=float, nargs=2, default=(0.0, 0.0), metavar=("DIGITAL", "ANALOG"),
                    help="meter scan periods; 0 derives them from the budgets")
    ap.add_argument("--dnp3-event-poll-s", type=float, default=0.0,
                    help="FRTU event poll period; 0 derives it from the budgets")
    ap.add_argument("--adapter-heartbeat-timeout-s", type=float, default=5.0,
                    help="server's adapter supervision time-out (the deployment default is 5 s)")
    ap.add_argument("--sim-processes", choices=("per-protocol", "one"), default="per-protocol")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default="benchmarks/results/fleet_budget.json")
    ap.add_argument("--png", default="benchmarks/results/fleet_budget.png", help="latency plot ('' for none)")
    ap.add_argument("--dump", default="", help="also save the raw rows and the change log here (.npz)")
    ap.add_argument("--subscriber", nargs=2, metavar=("ADDRESS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        return run_subscriber(*args.subscriber)
    # A terminated benchmark still stops its simulators, server and adapters (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = {p: getattr(args, p) for p in PROTOCOLS}
    if any(n < 0 for n in counts.values()) or not any(counts.values()):
        ap.error("device counts must be >= 0 and at least one must be > 0")
    result = run(args, {p: n for p, n in counts.items() if n > 0})
    samples = result.pop("_latency_samples")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_tables(result)
    print(f"written {out}")
    if args.png:
        plot(result, samples, Path(args.png))
        print(f"written {args.png}")
    return 0


def run(args: argparse.Namespace, counts: dict[str, int]) -> dict[str, Any]:
    from scada.server import ControlCenter

    tmp = Path(tempfile.mkdtemp(prefix="dscada-fleet-"))
    free = free_ports(sum(counts.values()))
    ports = {p: [free.pop() for _ in range(n)] for p, n in counts.items()}
    total_rate = args.changes_per_s
    cfg_path = tmp / "station.toml"
    text = mixed_fleet_station_toml(ports, args.points, status_share=POINT_STATUS_SHARE, data_dir=str(tmp / "data"),
                                    max_updates_per_s=2000.0, modbus_scan_s=tuple(args.modbus_scan_s),
                                    dnp3_event_poll_s=args.dnp3_event_poll_s,
                                    adapter_heartbeat_timeout_s=args.adapter_heartbeat_timeout_s)
    cfg_path.write_text(text)
    config = load_station_config(cfg_path)
    scan_ms = _scan_ms_function()
    table = PointTable.of(config, scan_ms)
    n_points = len(config.points)
    print(f"fleet: {', '.join(f'{n} {FLEET_ROLES[p][0]} ({p})' for p, n in counts.items())}; {n_points} points; "
          f"load {total_rate:g} changes/s for {args.seconds:g} s", flush=True)

    by_proto = {p: [r.name for r in config.rtus if r.protocol.value == p] for p in counts}
    groups = ({p: names for p, names in by_proto.items()} if args.sim_processes == "per-protocol"
              else {"all": [n for names in by_proto.values() for n in names]})
    points_of = {label: int(sum(len(config.points_of_rtu(n)) for n in names)) for label, names in groups.items()}
    sims: dict[str, SimProcess] = {}
    center = None
    sub = None
    try:
        for label, names in groups.items():
            sims[label] = SimProcess(label, cfg_path, names, args.seed)
        for s in sims.values():
            s.wait_ready(180)
        print(f"  simulators ready ({', '.join(f'{k}: pid {s.pid}' for k, s in sims.items())})", flush=True)
        center = ControlCenter(config, grpc_address="127.0.0.1:0")
        t0 = time.monotonic()
        center.start()
        rtdb = center.rtdb
        while True:
            q = rtdb.snapshot()["quality"]
            good = int((q == 0).sum())
            per = {p: f"{int((q[table.protocol == i] == 0).sum())}/{int((table.protocol == i).sum())}"
                   for i, p in enumerate(PROTOCOLS) if p in counts}
            progress(f"  initial interrogation: {good}/{n_points} points good {per}")
            if good == n_points:
                break
            if time.monotonic() - t0 > GI_TIMEOUT_S:
                restarts = {name: sup.restarts for name, sup in center.supervisors.items()}
                raise SystemExit(f"only {good}/{n_points} points good after {GI_TIMEOUT_S:g} s: {per}; adapter "
                                 f"restarts {restarts}")
            time.sleep(0.5)
        gi_s = time.monotonic() - t0
        progress(f"  initial interrogation: {n_points} points good after {gi_s:.1f} s", done=True)

        sub_out = tmp / "subscriber.npz"
        sub = subprocess.Popen([sys.executable, __file__, "--subscriber", f"127.0.0.1:{center.grpc_port}",
                                str(sub_out)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _wait_line(sub, "ready", 60, "gRPC subscriber snapshot")

        rtdb_sub = rtdb.subscribe("fleet-bench", max_pending=1_000_000)
        chunks: list[np.ndarray] = []
        stop = threading.Event()

        def collect() -> None:
            while not stop.is_set():
                cs = rtdb_sub.get(timeout_s=0.2)
                if cs is not None:
                    r = cs.rows[cs.rows["cause"] != Cause.SUPERVISION]
                    chunks.append(np.array(r[list(ROW_DTYPE.names)], dtype=ROW_DTYPE))

        collector = threading.Thread(target=collect, name="fleet-collector", daemon=True)
        collector.start()

        pids = {"server": os.getpid(), "grpc_subscriber": sub.pid}
        for name, sup in center.supervisors.items():
            pids[f"adapter:{name}"] = sup.pid or 0
        for label, s in sims.items():
            pids[f"simulator:{label}"] = s.pid
        before = {k: s.request("stats")[1] for k, s in sims.items()}
        cpu0 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
        initial_rtdb = rtdb.snapshot()
        link_events: list[LinkEvent] = []  # a lost link explains lost reports: keep them
        rtdb.add_link_listener(link_events.append)
        t_load = time.monotonic()
        load_start_ms = now_ms()
        for label, s in sims.items():
            s.request("load", total_rate * points_of[label] / n_points, args.status_share)
        while (left := args.seconds - (time.monotonic() - t_load)) > 0:
            progress(f"  under load: {left:5.1f} s left, RTDB changes {rtdb.stats().changes}")
            time.sleep(min(1.0, left))
        for s in sims.values():
            s.request("stop_load")
        load_s = time.monotonic() - t_load
        cpu1 = {k: proc_cpu_s(pid) for k, pid in pids.items()}
        load_end_ms = now_ms()

        # Drain: every event-protocol report sent must have reached the RTDB; Modbus needs a last scan of each group.
        progress("  load stopped; draining...", done=True)
        event_points = np.isin(table.protocol, [PROTOCOLS.index(p) for p in EVENT_PROTOCOLS])
        modbus_wait_s = (max(scan_ms(r, d) for r in config.rtus if r.protocol.value == "modbus"
                             for d in (True, False)) / 1000.0 + 2.0) if "modbus" in counts else 0.0
        t_drain = time.monotonic()
        after: dict[str, Any] = {}
        while True:
            after = {k: s.request("stats")[1] for k, s in sims.items()}
            sent = sum(a["rtus"][n]["sent"] - b["rtus"][n]["sent"] for k, a in after.items()
                       for b in [before[k]] for n in a["rtus"] if config.rtu(n).protocol.value in EVENT_PROTOCOLS)
            rows = _concat(chunks)
            got = int((event_points[rows["point"]] & (rows["cause"] == Cause.SPONTANEOUS)).sum())
            waited = time.monotonic() - t_drain
            if (got >= sent and waited >= modbus_wait_s) or waited > 60:
                break
            time.sleep(0.5)
        drain_s = time.monotonic() - t_drain
        window_links = tuple(link_events)  # not the ones of the shutdown below
        drain_end_ms = now_ms()
        rtdb.flush(5)
        time.sleep(0.5)
        stop.set()
        collector.join(2)
        final_rtdb = rtdb.snapshot()
        peak_rss = {k: proc_peak_rss_mb(pid) for k, pid in pids.items()}
        logs, finals = [], {}
        for s in sims.values():
            _, log, fin = s.request("result")
            logs.append(log)
            finals.update(fin)
        assert sub.stdin is not None
        sub.stdin.write("stop\n")
        sub.stdin.flush()
        sub.wait(60)
        got_sub = np.load(sub_out)
        restarts = {name: sup.restarts for name, sup in center.supervisors.items()}
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
            sub.wait(5)
        if center is not None:
            center.stop()
        for s in sims.values():
            s.close()

    rtdb_rows = _concat(chunks)
    grpc_rows = got_sub["rows"]
    clog = ChangeLog(np.concatenate(logs) if logs else np.zeros(0, dtype=LOG_DTYPE))
    if args.dump:
        np.savez_compressed(args.dump, rtdb=rtdb_rows, grpc=grpc_rows, log=clog.log, protocol=table.protocol,
                            digital=table.digital, rtu=table.rtu)
    m = Measurement(clog, rtdb_rows, grpc_rows, int(got_sub["dropped"]), initial_rtdb, final_rtdb, finals, before,
                    after, cpu0, cpu1, peak_rss, pids, load_s, gi_s, drain_s, load_start_ms, load_end_ms, drain_end_ms,
                    restarts, window_links)
    return analyse(args, counts, config, table, scan_ms, m)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all bound at once, so none is handed out twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _scan_ms_function() -> Callable[[Any, bool], float]:
    """Scan period (ms) of a Modbus device's digital or analog group, as its master computes it."""
    from frontend_protocols.modbus.register_map import ScanGroupKind, scan_periods

    def scan_ms(rtu: Any, digital: bool) -> float:
        periods = scan_periods(rtu)
        return 1000.0 * periods[ScanGroupKind.DIGITAL if digital else ScanGroupKind.ANALOG]

    return scan_ms


def _concat(chunks: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=ROW_DTYPE)


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one run gathered from the processes, before analysis."""

    clog: ChangeLog
    rtdb_rows: np.ndarray  # ROW_DTYPE, every RTDB change row after the initial interrogation
    grpc_rows: np.ndarray  # ROW_DTYPE, as the gRPC subscriber received them
    grpc_dropped: int  # rows coalesced away in the subscriber's queue
    initial_rtdb: np.ndarray  # RTDB snapshot when the load started
    final_rtdb: np.ndarray  # RTDB snapshot after the drain
    finals: dict[int, float]  # the simulators' final value of each point
    before: dict[str, Any]  # simulator stats (per simulator process) when the load started
    after: dict[str, Any]  # ... after the drain
    cpu0: dict[str, float]  # CPU seconds per process when the load started
    cpu1: dict[str, float]  # ... when it stopped
    peak_rss: dict[str, float]
    pids: dict[str, int]
    load_s: float
    gi_s: float
    drain_s: float
    load_start_ms: int
    load_end_ms: int
    drain_end_ms: int
    restarts: dict[str, int]
    link_events: tuple[LinkEvent, ...]  # link up/down seen by the RTDB during the load and the drain


def analyse(args: argparse.Namespace, counts: dict[str, int], config: StationConfig, table: PointTable,
            scan_ms: Callable[[Any, bool], float], m: Measurement) -> dict[str, Any]:
    clog, before, after, finals, pids = m.clog, m.before, m.after, m.finals, m.pids
    load_start_ms, load_s = m.load_start_ms, m.load_s

    # Only changes made by the load count (the initial interrogation happened before the subscription).
    def arrivals(rows: np.ndarray) -> np.ndarray:
        event = table.protocol[rows["point"]] != PROTOCOLS.index("modbus")
        keep = np.where(event, rows["cause"] == Cause.SPONTANEOUS, rows["recv_time_ms"] >= load_start_ms)
        return rows[keep]

    rtdb_rows, grpc_rows = arrivals(m.rtdb_rows), arrivals(m.grpc_rows)
    rtdb_lat, grpc_lat = latencies(rtdb_rows, table, clog), latencies(grpc_rows, table, clog)
    per_point_scan = np.array([scan_ms(config.rtu(p.source.rtu), p.kind.is_status)
                               if p.source.frontend == "modbus" else 0.0 for p in config.points])

    latency: dict[str, Any] = {}
    for i, proto in enumerate(PROTOCOLS):
        if proto not in counts:
            continue
        latency[proto] = {}
        for cls in CLASSES:
            dig = cls == "digital"
            sel = (table.protocol == i) & (table.digital == dig)
            if not sel.any():
                continue
            budget = float(table.budget_ms[sel][0])
            goal = float(table.goal_ms[sel].max())
            entry: dict[str, Any] = {"points": int(sel.sum())}
            for path, rows, lat in (("rtdb", rtdb_rows, rtdb_lat), ("grpc", grpc_rows, grpc_lat)):
                mask = sel[rows["point"]]
                a = lat[mask]
                entry[path] = stats_ms(a[np.isfinite(a)], budget, goal)
                entry[path]["unmatched"] = int((~np.isfinite(a)).sum())
            latency[proto][cls] = entry

    # Loss accounting per device.
    rtu_proto = {r.name: r.protocol.value for r in config.rtus}
    rx_per_rtu = np.bincount(table.rtu[rtdb_rows["point"]], minlength=len(table.rtu_names))
    loss: dict[str, Any] = {}
    for proto in counts:
        gen = sent = dropped = rx = 0
        per_rtu_lost = {}
        for k, a in after.items():
            for name, st in a["rtus"].items():
                if rtu_proto[name] != proto:
                    continue
                b = before[k]["rtus"][name]
                g = a["generated"].get(name, 0) - before[k]["generated"].get(name, 0)
                s = st["sent"] - b["sent"]
                gen += g
                sent += s
                dropped += st["dropped"] - b["dropped"]
                r = int(rx_per_rtu[table.rtu_names.index(name)])
                rx += r
                if proto != "modbus" and r != s:
                    per_rtu_lost[name] = s - r
        entry = {"changes_generated": gen, "reports_sent": sent, "send_queue_dropped": dropped,
                 "rtdb_received": rx}
        if proto == "modbus":
            entry.update(modbus_loss(rtdb_rows, clog, table, per_point_scan, m.initial_rtdb["value"], m.drain_end_ms))
            entry["lost"] = entry["held_changes_missed"]
        else:
            entry["lost"] = max(0, gen - rx)
            entry["devices_with_count_mismatch"] = per_rtu_lost
            entry["lost_examples"] = lost_examples(config, table, clog, rtdb_rows, PROTOCOLS.index(proto))
        entry["link_events"] = [{"rtu": ev.rtu, "up": ev.up, "time_ms": ev.time_ms, "reason": ev.reason}
                                for ev in m.link_events if rtu_proto.get(ev.rtu) == proto][:20]
        loss[proto] = entry
    # Final values: the RTDB must hold each changed point's last value.
    changed = np.unique(clog.log["point"])
    wrong = [int(p) for p in changed if m.final_rtdb["value"][p] != finals.get(int(p))]
    by_proto_wrong: dict[str, int] = {}
    for p in wrong:
        by_proto_wrong[PROTOCOLS[table.protocol[p]]] = by_proto_wrong.get(PROTOCOLS[table.protocol[p]], 0) + 1
    for proto in loss:
        loss[proto]["final_value_mismatches"] = by_proto_wrong.get(proto, 0)
        loss[proto]["lost"] += by_proto_wrong.get(proto, 0)

    processes = {k: {"pid": pids[k], "cpu_s": round(m.cpu1[k] - m.cpu0[k], 2),
                     "cpu_share_of_one_core": round((m.cpu1[k] - m.cpu0[k]) / load_s, 3),
                     "peak_rss_mb": round(m.peak_rss[k], 1)} for k in pids}
    inside = {f"{proto}/{cls}": v["rtdb"].get("inside_budget_pct") for proto, d in latency.items()
              for cls, v in d.items()}
    return {
        "benchmark": "fleet_budget",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "params": {"devices": counts, "points": len(config.points), "changes_per_s": args.changes_per_s,
                   "seconds": args.seconds, "status_share": args.status_share, "seed": args.seed,
                   "sim_processes": args.sim_processes, "dnp3_event_poll_s": args.dnp3_event_poll_s,
                   "adapter_heartbeat_timeout_s": args.adapter_heartbeat_timeout_s,
                   "points_per_protocol": {p: int((table.protocol == PROTOCOLS.index(p)).sum()) for p in counts},
                   "modbus_scan_ms": sorted({float(per_point_scan[p.id]) for p in config.points
                                             if p.source.frontend == "modbus"})},
        "initial_interrogation_s": round(m.gi_s, 2),
        "load_s": round(load_s, 2),
        "drain_s": round(m.drain_s, 2),
        "changes_generated": int(len(clog.log)),
        "changes_received_rtdb": int(len(rtdb_rows)),
        "throughput_rtdb_changes_per_s": round(len(rtdb_rows) / load_s, 1),
        "latency": latency,
        "loss": loss,
        "lost_total": int(sum(v["lost"] for v in loss.values())),
        "grpc_coalesced_drops": m.grpc_dropped,
        "processes": processes,
        "adapter_restarts": m.restarts,
        "goals": {
            "all_inside_budget": all(v == 100.0 for v in inside.values() if v is not None),
            "p99_goals_met": {f"{proto}/{cls}": v["rtdb"].get("p99_goal_met", False) for proto, d in latency.items()
                              for cls, v in d.items()},
            "zero_loss": sum(v["lost"] for v in loss.values()) == 0,
        },
        "latency_reference": {p: "field time tag" if TIME_SOURCE[p] is TimeSource.FIELD else "simulator change log"
                              for p in counts},
        "_latency_samples": _samples(rtdb_rows, rtdb_lat, table),
    }


def lost_examples(config: StationConfig, table: PointTable, clog: ChangeLog, rows: np.ndarray, proto: int,
                  limit: int = 10) -> list[dict[str, Any]]:
    """Logged changes of an event protocol that no RTDB row carries (same point, value and time tag)."""
    log = clog.log[table.protocol[clog.log["point"]] == proto]
    got = Counter(zip(rows["point"].tolist(), rows["value"].tolist(), rows["source_time_ms"].tolist(), strict=True))
    out = []
    for p, v, t in zip(log["point"].tolist(), log["value"].tolist(), log["time_ms"].tolist(), strict=True):
        if got[(p, v, t)] > 0:
            got[(p, v, t)] -= 1
        elif len(out) < limit:
            out.append({"point": config.points[p].name, "value": v, "time_ms": t})
    return out


def _samples(rows: np.ndarray, lat: np.ndarray, table: PointTable) -> dict[str, dict[str, list[float]]]:
    """Latency samples per protocol and class for the plot (not written to the JSON)."""
    out: dict[str, dict[str, list[float]]] = {}
    ok = np.isfinite(lat)
    for i, proto in enumerate(PROTOCOLS):
        for cls in CLASSES:
            m = ok & (table.protocol[rows["point"]] == i) & (table.digital[rows["point"]] == (cls == "digital"))
            if m.any():
                out.setdefault(proto, {})[cls] = lat[m].tolist()
    return out


# ================================================================================================ output
def print_tables(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    t = Table(title=f"Field change -> RTDB / gRPC subscriber latency ({r['params']['points']} points, "
                    f"{r['params']['changes_per_s']:g} changes/s, {r['load_s']:g} s)")
    for col in ("protocol", "class", "changes", "RTDB p50", "p99", "max", "gRPC p50", "p99", "max", "budget",
                "inside %", "p99 goal"):
        t.add_column(col, justify="left" if col in ("protocol", "class") else "right")
    for proto, d in r["latency"].items():
        for cls, v in d.items():
            a, g = v["rtdb"], v["grpc"]
            if not a.get("count"):
                t.add_row(proto, cls, "0", *[""] * 9)
                continue
            t.add_row(proto, cls, str(a["count"]), f"{a['p50_ms']:.0f}", f"{a['p99_ms']:.0f}", f"{a['max_ms']:.0f}",
                      *(f"{g[k]:.0f}" if g.get("count") else "-" for k in ("p50_ms", "p99_ms", "max_ms")),
                      f"{a['budget_ms'] / 1000:g} s", f"{a['inside_budget_pct']:.2f}",
                      f"{a['goal_p99_ms']:.0f} {'ok' if a['p99_goal_met'] else 'MISSED'}")
    console.print(t)
    t = Table(title="Lost updates")
    for col in ("protocol", "generated", "sent", "RTDB received", "final mismatches", "lost"):
        t.add_column(col, justify="left" if col == "protocol" else "right")
    for proto, v in r["loss"].items():
        t.add_row(proto, str(v["changes_generated"]), str(v["reports_sent"]), str(v["rtdb_received"]),
                  str(v["final_value_mismatches"]), str(v["lost"]))
    console.print(t)
    t = Table(title="Processes (CPU over the load window)")
    for col in ("process", "CPU s", "share of one core", "peak RSS MiB"):
        t.add_column(col, justify="left" if col == "process" else "right")
    for name, v in r["processes"].items():
        t.add_row(name, f"{v['cpu_s']:.1f}", f"{v['cpu_share_of_one_core']:.2f}", f"{v['peak_rss_mb']:.0f}")
    console.print(t)
    console.print(f"goals: {r['goals']}; gRPC coalesced drops {r['grpc_coalesced_drops']}; adapter restarts "
                  f"{r['adapter_restarts']}")


def plot(r: dict[str, Any], samples: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = [p for p in PROTOCOLS if p in r["latency"]]
    ncols = min(2, len(protos))
    nrows = -(-len(protos) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.6 * nrows), sharey=True, squeeze=False)
    for ax in axes.flat[len(protos):]:
        ax.set_visible(False)
    for ax, proto in zip(axes.flat, protos, strict=False):
        for cls, colour in (("digital", "tab:blue"), ("analog", "tab:green")):
            lat = np.sort(np.asarray(samples.get(proto, {}).get(cls, []), dtype=float))
            if not len(lat):
                continue
            v = r["latency"][proto][cls]["rtdb"]
            ax.plot(np.maximum(lat, 0.5), np.arange(1, len(lat) + 1) / len(lat), color=colour,
                    label=f"{cls} (p99 {v['p99_ms']:.0f} ms)")
            ax.axvline(v["budget_ms"], color=colour, linestyle="--", linewidth=1)
            ax.axvline(v["goal_p99_ms"], color=colour, linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(0.5, 20000)
        ax.set_title(f"{proto} ({r['params']['devices'][proto]} {FLEET_ROLES[proto][0]})")
        ax.set_xlabel("field change -> RTDB, ms")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_ylabel("share of changes (CDF)")
    fig.suptitle("Latency CDF per protocol; dashed: budget, dotted: p99 goal", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


_last_progress = [0.0]


def progress(text: str, *, done: bool = False) -> None:
    """A progress line: rewritten in place on a terminal, else printed every 10 s (and when ``done``)."""
    if sys.stdout.isatty():
        print(f"\r{text:<110}", end="\n" if done else "", flush=True)
    elif done or time.monotonic() - _last_progress[0] >= 10.0:
        _last_progress[0] = time.monotonic()
        print(text, flush=True)


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout_s: float, what: str) -> None:
    assert proc.stdout is not None
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            if needle in line:
                done.set()
                break

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(timeout_s):
        raise SystemExit(f"timed out after {timeout_s:g} s waiting for {what}")


if __name__ == "__main__":
    sys.exit(main())
