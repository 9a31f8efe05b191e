"""``dscada iccp-sim``: the transmission-SCADA simulator, serving TASE.2 to the distribution centre until SIGTERM.

The station file says who the simulator is (its ``[[iccp.remotes]]`` entry) and who may connect (the station's own
``[iccp]`` identity); see ``iccp.sim.server``. Exit codes: 0 after SIGINT/SIGTERM, 1 cannot start (port in use),
2 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from iccp.errors import IccpError
from models.errors import ModelError


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
    p.add_argument("--snapshots", metavar="DIR",
                   help="write DR snapshot files (iccp.recovery) into DIR (default: the remote's dr_directory)")
    p.add_argument("--snapshot-interval-s", type=float, default=60.0, metavar="S",
                   help="one snapshot file per S seconds (default 60)")
    p.add_argument("--no-import", action="store_true",
                   help="do not import the distribution centre's published points (by default the simulator "
                        "associates with the station's [iccp] listen address when the station publishes to it)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from iccp.sim.hosted import station_transmission_simulator
    from models.config import load_station_config

    try:
        station = load_station_config(args.config)
        sim = station_transmission_simulator(station, args.remote, listen=args.listen, seed=args.seed,
                                             period_s=args.period_s, snapshots_dir=args.snapshots,
                                             snapshot_interval_s=args.snapshot_interval_s,
                                             import_distribution=not args.no_import)
        remote_name = args.remote or station.iccp.remotes[0].name if station.iccp else ""
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
        table = sim.iccp_config.peers[0]
        settings = sim.settings
        print(f"dscada iccp-sim: '{remote_name}' AP title {sim.iccp_config.identity} listening on "
              f"{settings.host}:{sim.port} (seed {args.seed}, step {args.period_s:g} s)", flush=True)
        print(f"  peer {table.identity} bilateral table {table.table_id!r} domain {table.domain!r}: "
              f"{len(table.points)} points, {len(table.devices)} devices", flush=True)
        if settings.snapshots_dir is not None:
            print(f"  snapshots: {settings.snapshots_dir} every {settings.snapshot_interval_s:g} s", flush=True)
        if sim.importer is not None:
            print(f"  importing the distribution centre's published points from "
                  f"{sim.importer.client.remote.addresses[0]}", flush=True)
        stop.wait()
        print("dscada iccp-sim: stopping", flush=True)
        return 0
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
