"""ICCP / TASE.2 exchange on loopback: reads/s and reports/s per association, and the latency of a change in the
transmission simulator to its arrival at the distribution centre's TASE.2 client, at 5,000 exchanged points.

    python benchmarks/iccp_exchange.py --points 5000 --seconds 20 --json benchmarks/results/iccp_exchange.json

Set-up (one process, fixed seed): the transmission simulator (``iccp.sim.server.TransmissionSimulator``: a
``TransmissionSystem`` grown to ``--points`` points by adding ties, stepped every ``--period-s`` to the wall clock,
published by ``iccp.tase2.server.Tase2Server``), and our MMS/TASE.2 client on 127.0.0.1.

1. reads: one association reads every point of the bilateral table by name, ``--batch`` variables per Read request,
   for ``--read-seconds`` (requests/s and point values/s), plus single-variable reads (requests/s).
2. reports: ``iccp.tase2.client.Tase2Client`` (as the distribution centre runs it) defines data sets of at most
   ``--max-data-set-size`` members, starts one RBE transfer set per data set (BufferTime ``--buffer-time-s``,
   Interval and IntegrityCheck long enough not to interfere) and counts information reports and values per second.
   Latency: from the moment the simulator's step published a change (monotonic clock, same process) to the moment
   the client handed the decoded row to its sink (the point the adapter passes the row to the RTDB). Only RBE
   (spontaneous) rows whose value matches the change published last for that point are counted.

3. end to end: a ``scada.server.ControlCenter`` whose station imports every simulator point over ICCP (its
   supervised ICCP adapter runs the same client), an RTDB subscriber in this process and a gRPC subscriber in a child
   process (``benchmarks/update_latency.py --subscriber``). Latency: from the change's source time (the simulator
   stamps each change with the wall-clock millisecond of its step; the points are exchanged as
   ``Data_*QTimeTagExtended`` so the millisecond survives) to the RTDB commit and to the gRPC subscriber's receipt.
   All processes share the machine's clock.

Every point is published as ``Data_RealQTimeTagExtended`` / ``Data_StateQTimeTagExtended`` (millisecond time stamps).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from iccp.mms.client import AeTitle, MmsAssociation, MmsClientConfig, MmsEndpoint  # noqa: E402
from iccp.mms.codec import DataAccessCode, ObjectName  # noqa: E402
from iccp.sim.server import SimSettings, TransmissionSimulator, sim_iccp_config  # noqa: E402
from iccp.sim.transmission import (  # noqa: E402
    PointValue,
    SimPointDef,
    TieSpec,
    TransmissionConfig,
    TransmissionSystem,
)
from iccp.tase2.bilateral import ApTitle, PeerIdentity  # noqa: E402
from iccp.tase2.client import ImportRow, Tase2Client  # noqa: E402
from models.iccp_config import IccpConfig, RemoteCentre  # noqa: E402
from models.points import PointDef, PointKind, PointSource  # noqa: E402
from models.updates import Cause  # noqa: E402

DSO = PeerIdentity(ApTitle.parse("1.3.9999.10"), 10)
TSO = PeerIdentity(ApTitle.parse("1.3.9999.20"), 20)
DOMAIN = "DSO1"
TABLE_ID = "BLT_BENCH_1"
REMOTE = "TSO-ICCP"


def _pct(a: np.ndarray) -> dict[str, float | int]:
    if not len(a):
        return {"count": 0}
    return {"count": int(len(a)), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2),
            "mean_ms": round(float(a.mean()), 2)}


def transmission_config(points: int) -> TransmissionConfig:
    """Enough ties (6 points each, plus FREQ_SYS) for at least ``points`` points; sized like the sample's ties."""
    n_ties = max(1, math.ceil((points - 1) / 6))
    return TransmissionConfig(ties=tuple(TieSpec(k, f"SS-T{k}", 5.0 + (k % 7)) for k in range(1, n_ties + 1)))


def _kind_and_type(d: SimPointDef) -> tuple[PointKind, str]:
    if d.type.value.startswith("Data_State"):
        return PointKind.DOUBLE, "Data_StateQTimeTagExtended"
    return (PointKind.COUNTER if d.units == "MWh" else PointKind.ANALOG), "Data_RealQTimeTagExtended"


def imported_points(system: TransmissionSystem) -> tuple[PointDef, ...]:
    """The distribution centre's RTDB points fed from the simulator: every published point, by its TASE.2 name."""
    out = []
    for j, d in enumerate(system.points):
        kind, type_name = _kind_and_type(d)
        out.append(PointDef(j, f"TSO.{d.name}", kind, PointSource("iccp", REMOTE, 0, 0, type_name, d.name),
                            units=d.units))
    return tuple(out)


def station_toml(system: TransmissionSystem, port: int, data_dir: Path, buffer_time_s: int, max_ds: int) -> str:
    out = [
        '[station]\nname = "iccp-bench"\n',
        f'[server]\ngrpc_address = "127.0.0.1:0"\ndata_dir = "{data_dir}"\ngrpc_workers = 16\n',
        '[[operators]]\nname = "bench"\nrole = "operator"\ntoken = "bench-operator-token"\n',
        f'[iccp]\nap_title = "{DSO.ap_title}"\nae_qualifier = {DSO.ae_qualifier}\n',
        f'[[iccp.remotes]]\nname = "{REMOTE}"\naddresses = ["127.0.0.1:{port}"]\nap_title = "{TSO.ap_title}"\n'
        f'ae_qualifier = {TSO.ae_qualifier}\ndomain = "{DOMAIN}"\nbilateral_table_id = "{TABLE_ID}"\n'
        f"interval_s = 3600\nintegrity_s = 3600\nbuffer_time_s = {buffer_time_s}\nmax_data_set_size = {max_ds}\n"
        "request_timeout_s = 30\n",
    ]
    for d in system.points:
        kind, type_name = _kind_and_type(d)
        out.append(f'[[points]]\nname = "TSO.{d.name}"\nkind = "{kind.value}"\nrtu = "{REMOTE}"\n'
                   f'reference = "{d.name}"\ntype = "{type_name}"\n')
    return "\n".join(out)


class _Sink:
    """The client's sink: counts, and matches spontaneous rows against the simulator's last published changes."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = names
        self.lock = threading.Lock()
        self.published: dict[int, tuple[float, float]] = {}  # point index -> (value, published monotonic s)
        self.latencies_ms: list[float] = []
        self.counts: dict[str, float] = {}
        self.rows = 0
        self.spontaneous_rows = 0
        self.measuring = False
        self.interrogated = threading.Event()
        self.up = threading.Event()
        self.index = {n: j for j, n in enumerate(names)}

    def on_changes(self, changes: Sequence[PointValue], t: float) -> None:
        with self.lock:
            for c in changes:
                self.published[self.index[c.name]] = (c.value, t)

    def on_rows(self, remote: str, rows: Sequence[ImportRow]) -> None:
        t = time.monotonic()
        with self.lock:
            if not self.measuring:
                return
            self.rows += len(rows)
            for r in rows:
                if r.cause is not Cause.SPONTANEOUS:
                    continue
                self.spontaneous_rows += 1
                pub = self.published.get(r.point)
                if pub is not None and abs(pub[0] - r.value) <= 1e-4 * max(1.0, abs(pub[0])):  # Float32 on the wire
                    self.latencies_ms.append((t - pub[1]) * 1000.0)
                    del self.published[r.point]  # a later integrity/interval copy is not a new change

    def on_link(self, remote: str, up: bool, address: str, reason: str, time_ms: int) -> None:
        (self.up.set if up else self.up.clear)()

    def on_interrogated(self, remote: str, time_ms: int) -> None:
        self.interrogated.set()

    def count(self, name: str, n: float = 1.0) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0.0) + n


def bench_reads(port: int, names: Sequence[str], batch: int, seconds: float) -> dict[str, object]:
    cfg = MmsClientConfig(endpoints=(MmsEndpoint("127.0.0.1", port),), calling=AeTitle(DSO.ap_title.arcs, 10),
                          called=AeTitle(TSO.ap_title.arcs, 20), request_timeout_s=30.0)
    out: dict[str, object] = {"batch": batch}
    with MmsAssociation.connect(cfg) as assoc:
        specs = [ObjectName.in_domain(DOMAIN, n) for n in names]
        chunks = [specs[i:i + batch] for i in range(0, len(specs), batch)]
        requests = values = errors = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for chunk in chunks:
                results = assoc.read(chunk)
                requests += 1
                values += len(results)
                errors += sum(1 for r in results if isinstance(r, DataAccessCode))
        dt = time.monotonic() - t0
        out.update({"requests_per_s": round(requests / dt, 1), "values_per_s": round(values / dt, 1),
                    "access_errors": errors})
        n = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < min(5.0, seconds):
            assoc.read_one(specs[n % len(specs)])
            n += 1
        out["single_reads_per_s"] = round(n / (time.monotonic() - t0), 1)
        assoc.release()
    return out


def bench_end_to_end(sim: TransmissionSimulator, system: TransmissionSystem, args: argparse.Namespace
                     ) -> dict[str, object]:
    """Simulator -> supervised ICCP adapter -> RTDB -> gRPC subscriber (child process)."""
    from models.config import load_station_config
    from models.updates import Cause as C
    from scada.server import ControlCenter

    tmp = Path(tempfile.mkdtemp(prefix="dscada-iccp-bench-"))
    cfg_path = tmp / "station.toml"
    cfg_path.write_text(station_toml(system, sim.port, tmp / "data", args.buffer_time_s, args.max_data_set_size),
                        encoding="utf-8")
    config = load_station_config(cfg_path)
    n = len(config.points)
    center = ControlCenter(config, grpc_address="127.0.0.1:0")
    sub = None
    out: dict[str, object] = {}
    try:
        t0 = time.monotonic()
        center.start()
        rtdb = center.rtdb
        while (good := int((rtdb.snapshot()["quality"] == 0).sum())) < n:
            if time.monotonic() - t0 > 180:
                raise SystemExit(f"only {good}/{n} points good after 180 s")
            time.sleep(0.5)
        out["all_points_good_s"] = round(time.monotonic() - t0, 2)
        print(f"e2e: {n} points good in the RTDB after {out['all_points_good_s']} s", flush=True)
        sub_out = tmp / "subscriber.npz"
        sub = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "update_latency.py"), "--subscriber",
                                f"127.0.0.1:{center.grpc_port}", str(sub_out), str(args.seconds + 10)],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert sub.stdout is not None
        deadline = time.monotonic() + 60
        while "ready" not in (sub.stdout.readline() or "ready?"):
            if time.monotonic() > deadline:
                raise SystemExit("gRPC subscriber did not get its snapshot in 60 s")
        rtdb_sub = rtdb.subscribe("iccp-bench", max_pending=100_000)
        parts: list[np.ndarray] = []
        stop = threading.Event()

        def collect() -> None:
            while not stop.is_set():
                cs = rtdb_sub.get(timeout_s=0.2)
                if cs is not None:
                    r = cs.rows[cs.rows["cause"] == C.SPONTANEOUS]
                    parts.append((r["recv_time_ms"] - r["source_time_ms"]).astype(float))

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        published0 = sim.changes_published
        t_run = time.monotonic()
        time.sleep(args.seconds)
        changes = sim.changes_published - published0
        run_s = time.monotonic() - t_run
        stop.set()
        collector.join(2)
        sub.wait(args.seconds + 40)
        got = np.load(sub_out)
        rtdb_lat = np.concatenate(parts) if parts else np.zeros(0)
        grpc_lat = got["latency"].astype(float)
        out.update({
            "changes_published_per_s": round(changes / run_s, 1),
            "rtdb_spontaneous_per_s": round(len(rtdb_lat) / run_s, 1),
            "latency_source_to_rtdb": _pct(rtdb_lat),
            "latency_source_to_grpc": _pct(grpc_lat),
            "grpc_within_1s_pct": round(float((grpc_lat <= 1000.0).mean() * 100.0), 2) if len(grpc_lat) else None,
            "grpc_dropped": int(got["dropped"]),
        })
    finally:
        if sub is not None and sub.poll() is None:
            sub.kill()
        center.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured window of the report and e2e phases")
    ap.add_argument("--read-seconds", type=float, default=8.0)
    ap.add_argument("--batch", type=int, default=100, help="variables per Read request")
    ap.add_argument("--period-s", type=float, default=1.0, help="simulator step period")
    ap.add_argument("--buffer-time-s", type=int, default=0)
    ap.add_argument("--max-data-set-size", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-e2e", action="store_true", help="skip the ControlCenter -> gRPC phase")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    tcfg = transmission_config(args.points)
    probe = TransmissionSystem(tcfg, seed=args.seed)
    names = [d.name for d in probe.points]
    types = {p.source.reference: p.source.type_id for p in imported_points(probe)}
    placeholder = RemoteCentre(REMOTE, ("127.0.0.1:1",), TSO, DOMAIN, TABLE_ID)
    sim_cfg = sim_iccp_config(IccpConfig(DSO, None, (), (placeholder,)), probe, listen="127.0.0.1:0",
                              imported_types=types)
    sim = TransmissionSimulator(sim_cfg, SimSettings(port=0, seed=args.seed, period_s=args.period_s),
                                transmission=tcfg)
    sink = _Sink(names)
    sim.add_listener(sink.on_changes)
    result: dict[str, object] = {
        "benchmark": "iccp_exchange",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "points": len(names), "seed": args.seed, "period_s": args.period_s, "buffer_time_s": args.buffer_time_s,
        "max_data_set_size": args.max_data_set_size,
    }
    sim.start()
    client = None
    try:
        port = sim.port
        result["reads"] = bench_reads(port, names, args.batch, args.read_seconds)
        print("reads:", result["reads"], flush=True)
        remote = RemoteCentre(REMOTE, (f"127.0.0.1:{port}",), TSO, DOMAIN, TABLE_ID, interval_s=3600,
                              integrity_s=3600, buffer_time_s=args.buffer_time_s,
                              max_data_set_size=args.max_data_set_size, request_timeout_s=30.0)
        client = Tase2Client(remote, DSO, imported_points(probe), sink)
        t_setup = time.monotonic()
        client.start()
        if not sink.interrogated.wait(120.0):
            raise SystemExit(f"client did not finish its set-up in 120 s: {sink.counts}")
        setup_s = time.monotonic() - t_setup
        with sink.lock:
            sink.measuring = True
            sink.counts.pop("reports", None)
            published0 = sim.changes_published
        t0 = time.monotonic()
        time.sleep(args.seconds)
        with sink.lock:
            sink.measuring = False
            dt = time.monotonic() - t0
            lat = np.array(sink.latencies_ms)
            reports = sink.counts.get("reports", 0.0)
            rows, spont = sink.rows, sink.spontaneous_rows
        changes = sim.changes_published - published0
        result["reports"] = {
            "data_sets": int(sink.counts.get("data_sets_defined", 0)),
            "transfer_sets": int(sink.counts.get("transfer_sets_enabled", 0)),
            "setup_s": round(setup_s, 2),
            "reports_per_s": round(reports / dt, 1), "values_per_s": round(rows / dt, 1),
            "spontaneous_values_per_s": round(spont / dt, 1),
            "changes_published_per_s": round(changes / dt, 1),
            "latency_change_to_client": _pct(lat),
            "within_1s_pct": round(float((lat <= 1000.0).mean() * 100.0), 2) if len(lat) else None,
            "client_counts": {k: v for k, v in sorted(sink.counts.items())},
        }
        print("reports:", result["reports"], flush=True)
        client.stop()
        client = None
        if not args.no_e2e:
            result["end_to_end"] = bench_end_to_end(sim, probe, args)
            print("end to end:", result["end_to_end"], flush=True)
    finally:
        if client is not None:
            client.stop()
        sim.stop()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
