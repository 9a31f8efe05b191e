"""``dscada iccp-sim``: the transmission-SCADA simulator, serving TASE.2 to the distribution centre until SIGTERM.

The station file says who the simulator is (its ``[[iccp.remotes]]`` entry) and who may connect (the station's own
``[iccp]`` identity); see ``iccp.sim.server``. Exit codes: 0 after SIGINT/SIGTERM, 1 cannot start (port in use),
2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from pathlib import Path

from iccp.errors import IccpError
from models.errors import ModelError

_LISTEN_RE = re.compile(r"([A-Za-z0-9_.\-]+):(\d{1,5})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dscada iccp-sim", description="Transmission-SCADA simulator: grid frequency, "
                                "tie flows, breakers and MWh counters served over ICCP/TASE.2 to the station's "
                                "distribution centre, with DR snapshot files.")
    p.add_argument("--config", required=True, metavar="STATION.toml",
                   help="station configuration with an [iccp] block and the [[iccp.remotes]] this simulator plays")
    p.add_argument("--remote", metavar="NAME", help="which [[iccp.remotes]] entry to play (needed if several)")
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="listen address (default: the remote's primary address; port 0: a free port)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--period-s", type=float, default=1.0, metavar="S", help="step period in seconds (default 1)")
    p.add_argument("--snapshots", metavar="DIR", help="write DR snapshot files (iccp.recovery) into DIR")
    p.add_argument("--snapshot-interval-s", type=float, default=60.0, metavar="S",
                   help="one snapshot file per S seconds (default 60)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from iccp.sim.server import SimSettings, TransmissionSimulator, choose_remote, sim_iccp_config
    from iccp.sim.transmission import TransmissionSystem
    from models.config import load_station_config
    from models.protocols.iccp import point_type_name

    try:
        station = load_station_config(args.config)
        if station.iccp is None:
            raise IccpError(f"{args.config}: the station has no [iccp] block")
        probe = TransmissionSystem(seed=args.seed)  # the point list the bilateral table publishes
        remote = choose_remote(station.iccp, args.remote)
        types = {p.source.reference: point_type_name(p) for p in station.points_of_rtu(remote.name)}
        sim_cfg = sim_iccp_config(station.iccp, probe, remote=remote.name, listen=args.listen, imported_types=types)
        listen = sim_cfg.listen or ""
        m = _LISTEN_RE.fullmatch(listen)
        if m is None or not 0 <= int(m.group(2)) <= 65535:
            raise IccpError(f"--listen {listen!r} is not HOST:PORT")
        settings = SimSettings(host=m.group(1), port=int(m.group(2)), seed=args.seed, period_s=args.period_s,
                               snapshots_dir=Path(args.snapshots) if args.snapshots else None,
                               snapshot_interval_s=args.snapshot_interval_s)
        sim = TransmissionSimulator(sim_cfg, settings, source_name=re.sub(r"[^A-Za-z0-9_-]", "_", remote.name))
    except (ModelError, IccpError, OSError) as exc:
        print(f"dscada iccp-sim: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught on the main thread
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.start()
        except (IccpError, OSError) as exc:
            print(f"dscada iccp-sim: cannot start: {exc}", file=sys.stderr)
            return 1
        table = sim_cfg.peers[0]
        print(f"dscada iccp-sim: '{remote.name}' AP title {sim_cfg.identity} listening on {settings.host}:{sim.port}"
              f" (seed {args.seed}, step {args.period_s:g} s)", flush=True)
        print(f"  peer {table.identity} bilateral table {table.table_id!r} domain {table.domain!r}: "
              f"{len(table.points)} points, {len(table.devices)} devices", flush=True)
        if settings.snapshots_dir is not None:
            print(f"  snapshots: {settings.snapshots_dir} every {settings.snapshot_interval_s:g} s", flush=True)
        stop.wait()
        print("dscada iccp-sim: stopping", flush=True)
        return 0
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
