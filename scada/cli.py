"""The ``dscada`` command: serve, rtu-sim, client, demo."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from models.errors import ModelError


def _serve(args: argparse.Namespace) -> int:
    from dms.server import DmsApplications  # the entry point composes every layer
    from models.config import load_station_config
    from models.samples import sample_station_path
    from scada.server import ControlCenter

    config = load_station_config(args.config or sample_station_path())
    center = ControlCenter(config, data_dir=args.data_dir, grpc_address=args.address)
    dms = DmsApplications(center)
    iccp = None
    if config.iccp is not None:
        from iccp.service import IccpServices  # only stations with [iccp]; composed before start (link listener)

        iccp = IccpServices.for_center(center)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    center.start()
    dms.start()
    try:
        if iccp is not None:
            from iccp.errors import IccpError

            try:
                iccp.start()  # inside the outer try: a refused listen address still stops the centre
            except (IccpError, OSError) as exc:
                print(f"dscada: cannot start the ICCP services: {exc}", file=sys.stderr, flush=True)
                return 1
        print(f"dscada: serving '{config.name}' ({len(config.points)} points, {len(config.rtus)} RTUs) "
              f"on {center.grpc_address.rsplit(':', 1)[0]}:{center.grpc_port}; data in {center.data_dir}", flush=True)
        if iccp is not None and iccp.server is not None:
            print(f"dscada: ICCP/TASE.2 server on port {iccp.port} for "
                  f"{', '.join(t.peer for t in iccp.config.peers)}", flush=True)
        stop.wait()
    finally:
        print("dscada: stopping", flush=True)
        if iccp is not None:
            iccp.stop()
        dms.stop()
        center.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="dscada", description="Distribution control centre: SCADA, DMS, OMS")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the control-centre server")
    p.add_argument("--config", help="station configuration TOML (default: the embedded sample)")
    p.add_argument("--data-dir", help="where the SQLite stores live (default: from the configuration)")
    p.add_argument("--address", help="gRPC listen address host:port (default: from the configuration)")
    p.set_defaults(func=_serve)

    sub.add_parser("rtu-sim", help="run simulated IEC 104 RTUs (see 'dscada rtu-sim --help')", add_help=False)
    sub.add_parser("client", help="operator client (see 'dscada client --help')", add_help=False)
    sub.add_parser("model", add_help=False,
                   help="model tools: summary, export-sample, export-scl, apply-diff, make-diff, export-changes")
    sub.add_parser("powerflow", add_help=False,
                   help="power flow of a CIM feeder: 'dscada powerflow FILE [--three-phase|--balanced] [--der off]'")
    sub.add_parser("se", add_help=False, help="state estimation: 'dscada se gridappsd-testset DIR [--json]', "
                   "'dscada se FILE --measurements CSV [--json]'")
    sub.add_parser("flisr", add_help=False, help="FLISR plan for a fault: 'dscada flisr FILE --fault SECTION [--json]'")
    sub.add_parser("reconfigure", add_help=False,
                   help="feeder reconfiguration: 'dscada reconfigure FILE [--objective losses|balance] [--json]'")
    sub.add_parser("reliability", add_help=False,
                   help="IEEE 1366 indices: 'dscada reliability OUTAGES.csv --customers N [--history CSV] [--json]'")
    sub.add_parser("oms", add_help=False, help="outage management tools: 'dscada oms replay EVENTS.csv --model FILE'")
    sub.add_parser("voltvar", add_help=False, help="Volt/VAR proposal: 'dscada voltvar FILE [--json]'")
    sub.add_parser("iccp-sim", add_help=False,
                   help="transmission-SCADA simulator over ICCP/TASE.2: 'dscada iccp-sim --config STATION.toml'")

    p = sub.add_parser("demo", help="end-to-end demonstration on the embedded sample network")
    p.add_argument("--data-dir", help="keep the demo's databases here (default: a temporary folder)")
    p.add_argument("--report-dir", default="var/demo-report", help="where the PNG figures and the CIM difference go")
    p.add_argument("--fast", action="store_true", help="shorter pauses between steps")

    # Sub-programs with their own parsers get the rest of the command line untouched.
    programs = {
        "rtu-sim": "rtu_sim.cli", "model": "models.model_cli", "powerflow": "models.powerflow_cli",
        "se": "dms.se.cli", "flisr": "dms.flisr.cli", "reconfigure": "dms.reconfig.cli", "voltvar": "dms.voltvar.cli",
        "client": "scada.client_cli", "reliability": "oms.reliability_cli", "oms": "oms.cli",
        "iccp-sim": "iccp.sim.cli",
    }
    if argv and argv[0] in programs:
        import importlib

        return int(importlib.import_module(programs[argv[0]]).main(argv[1:]))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "demo":
            from dms.demo import run_demo  # the demo shows every layer, so it lives at the top one

            return run_demo(data_dir=args.data_dir, fast=args.fast, report_dir=args.report_dir)
        return int(args.func(args))
    except ModelError as exc:
        print(f"dscada: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
