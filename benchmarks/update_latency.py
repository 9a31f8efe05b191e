"""Field change -> RTDB -> gRPC subscriber latency and sustained throughput over IEC 104 on loopback.

    python benchmarks/update_latency.py --rtus 10 --points-per-rtu 2000 --changes-per-s 2000 --seconds 30 \
        --json benchmarks/results/update_latency.json

Processes, as in a deployment: the simulated RTUs (c104 outstations, one process), the server (this process: RTDB,
SOE, alarms, historian, gRPC), its supervised IEC 104 adapter (child process), and a gRPC subscriber (child process).
Latency is measured from the RTU's CP56Time2a time tag of each change (taken at the moment of the change) to the
RTDB commit and to the subscriber's receipt; all processes share the machine's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from models.config import load_station_config  # noqa: E402
from models.samples import free_tcp_port, free_tcp_ports  # noqa: E402
from models.synthetic import synthetic_station_toml  # noqa: E402
from models.updates import Cause  # noqa: E402

TOKEN = "bench-operator-token"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process (Linux /proc), 0 if unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _pct(a: np.ndarray) -> dict[str, float | int]:
    if not len(a):
        return {"count": 0}
    return {"count": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max()), "mean_ms": float(a.mean())}


# ------------------------------------------------------------------------------------------------ subscriber child
def run_subscriber(address: str, out: str, seconds: float) -> int:
    from scada.api.client import ScadaClient

    lat: list[np.ndarray] = []
    status: list[np.ndarray] = []
    with ScadaClient(address, TOKEN) as client:
        client.wait_ready(10)
        kinds = {d.id: d.kind for d in client.list_points()}
        is_status = np.zeros(max(kinds) + 1, dtype=bool)
        for pid, kind in kinds.items():
            is_status[pid] = kind in (1, 2)
        stream = client.subscribe(max_pending=100_000)
        deadline = time.monotonic() + seconds
        timer = threading.Timer(seconds, stream.cancel)
        timer.start()
        dropped = 0
        for msg in stream:
            if msg.snapshot:
                if msg.end_of_snapshot:
                    print("ready", flush=True)
                continue
            now = _now_ms()
            rows = [(v.point, v.source_time_ms) for v in msg.values if v.cause == Cause.SPONTANEOUS]
            if rows:
                arr = np.array(rows, dtype=np.int64)
                lat.append(now - arr[:, 1])
                status.append(is_status[arr[:, 0]])
            dropped = msg.dropped
            if time.monotonic() > deadline:
                break
        timer.cancel()
    np.savez(out, latency=np.concatenate(lat) if lat else np.zeros(0), status=np.concatenate(status) if status
             else np.zeros(0, dtype=bool), dropped=dropped)
    return 0


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rtus", type=int, default=10)
    ap.add_argument("--points-per-rtu", type=int, default=2000)
    ap.add_argument("--changes-per-s", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window under load")
    ap.add_argument("--status-share", type=float, default=0.1, help="share of changes that are breaker flips")
    ap.add_argument("--json", default="benchmarks/results/update_latency.json")
    ap.add_argument("--subscriber", nargs=3, metavar=("ADDRESS", "OUT", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.subscriber:
        return run_subscriber(args.subscriber[0], args.subscriber[1], float(args.subscriber[2]))

    from rtu_sim.control_socket import send_request
    from scada.server import ControlCenter

    n_points = args.rtus * args.points_per_rtu
    tmp = Path(tempfile.mkdtemp(prefix="dscada-bench-"))
    ports = free_tcp_ports(args.rtus)
    per_rtu_rate = max(2000.0, 3 * args.changes_per_s / args.rtus)
    cfg_path = tmp / "station.toml"
    cfg_path.write_text(synthetic_station_toml(ports, args.points_per_rtu, status_share=args.status_share,
                                               data_dir=str(tmp / "data"), max_updates_per_s=per_rtu_rate))
    config = load_station_config(cfg_path)
    print(f"station: {args.rtus} RTUs x {args.points_per_rtu} points = {n_points} points; "
          f"load {args.changes_per_s:g} changes/s for {args.seconds:g} s", flush=True)
    control_port = free_tcp_port()
    sim = subprocess.Popen([sys.executable, "-m", "rtu_sim.cli", "--config", str(cfg_path), "--control-port",
                            str(control_port)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sub = None
    try:
        _wait_line(sim, "control socket", 60, "simulator start")
        t0 = time.monotonic()
        center.start()
        rtdb = center.rtdb
        while True:
            good = int((rtdb.snapshot()["quality"] == 0).sum())
            print(f"\r  general interrogation: {good}/{n_points} points good", end="", flush=True)
            if good == n_points:
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"\nonly {good}/{n_points} points good after 120 s")
            time.sleep(0.5)
        gi_s = time.monotonic() - t0
        print(f" ({gi_s:.1f} s)")
        address = f"127.0.0.1:{center.grpc_port}"
        sub_out = tmp / "subscriber.npz"
        sub = subprocess.Popen([sys.executable, __file__, "--subscriber", address, str(sub_out),
                                str(args.seconds + 10)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        _wait_line(sub, "ready", 60, "gRPC subscriber snapshot")

        rtdb_sub = rtdb.subscribe("bench", max_pending=100_000)
        lat_rows: list[np.ndarray] = []
        stop = threading.Event()

        def collect() -> None:
            while not stop.is_set():
                cs = rtdb_sub.get(timeout_s=0.2)
                if cs is not None:
                    r = cs.rows[cs.rows["cause"] == Cause.SPONTANEOUS]
                    lat_rows.append(r[["point", "source_time_ms", "recv_time_ms"]].copy())

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        before = send_request("127.0.0.1", control_port, {"op": "stats"})["stats"]
        cpu0 = {"server": _cpu_s(os.getpid()), "simulator": _cpu_s(sim.pid),
                "adapter": sum(_cpu_s(s.pid or 0) for s in center.supervisors.values())}
        t_load = time.monotonic()
        send_request("127.0.0.1", control_port, {"op": "load_start", "changes_per_s": args.changes_per_s,
                                                 "status_share": args.status_share})
        while (left := args.seconds - (time.monotonic() - t_load)) > 0:
            print(f"\r  under load: {left:5.1f} s left, RTDB changes {rtdb.stats().changes}", end="", flush=True)
            time.sleep(min(1.0, left))
        send_request("127.0.0.1", control_port, {"op": "load_stop"})
        load_s = time.monotonic() - t_load
        cpu1 = {"server": _cpu_s(os.getpid()), "simulator": _cpu_s(sim.pid),
                "adapter": sum(_cpu_s(s.pid or 0) for s in center.supervisors.values())}
        print("\n  draining...", flush=True)
        time.sleep(3.0)
        after = send_request("127.0.0.1", control_port, {"op": "stats"})["stats"]
        stop.set()
        collector.join(2)
        sub.wait(args.seconds + 30)
        got = np.load(sub_out)

        rows = np.concatenate(lat_rows) if lat_rows else np.zeros(0, dtype=[("point", "<i4"),
                                                                           ("source_time_ms", "<i8"),
                                                                           ("recv_time_ms", "<i8")])
        rtdb_lat = (rows["recv_time_ms"] - rows["source_time_ms"]).astype(float)
        rtdb_status = rtdb.is_status[rows["point"]]
        grpc_lat = got["latency"].astype(float)
        grpc_status = got["status"].astype(bool)
        generated = after["changes_generated"] - before["changes_generated"]
        sent = after["total_sent"] - before["total_sent"]
        result = {
            "benchmark": "update_latency",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "params": {"rtus": args.rtus, "points_per_rtu": args.points_per_rtu, "points": n_points,
                       "changes_per_s": args.changes_per_s, "seconds": args.seconds,
                       "status_share": args.status_share},
            "gi_all_points_good_s": round(gi_s, 2),
            "changes_generated": int(generated),
            "reports_sent_by_rtus": int(sent),
            "changes_received_rtdb": int(len(rows)),
            "lost": int(max(0, generated - len(rows))),
            "throughput_changes_per_s": round(len(rows) / load_s, 1),
            "rtdb": {"all": _pct(rtdb_lat), "digital": _pct(rtdb_lat[rtdb_status]),
                     "analog": _pct(rtdb_lat[~rtdb_status])},
            "grpc_subscriber": {"all": _pct(grpc_lat), "digital": _pct(grpc_lat[grpc_status]),
                                "analog": _pct(grpc_lat[~grpc_status]), "coalesced_drops": int(got["dropped"])},
            "cpu_share_of_one_core": {k: round((cpu1[k] - cpu0[k]) / load_s, 3) for k in cpu0},
            "adapter_restarts": sum(s.restarts for s in center.supervisors.values()),
        }
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
        center.stop()
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    _print_table(result)
    print(f"written {out}")
    return 0


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


def _print_table(r: dict) -> None:
    print(f"\n{'path':<22}{'kind':<9}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for path in ("rtdb", "grpc_subscriber"):
        for kind in ("digital", "analog", "all"):
            s = r[path][kind]
            if s.get("count"):
                print(f"{path:<22}{kind:<9}{s['count']:>8}{s['p50_ms']:>9.1f}{s['p99_ms']:>9.1f}{s['max_ms']:>9.1f}")
    print(f"throughput {r['throughput_changes_per_s']} changes/s, lost {r['lost']}, "
          f"CPU (share of one core) {r['cpu_share_of_one_core']}")


if __name__ == "__main__":
    sys.exit(main())
