"""``dscada rtu-sim``: serve simulated IEC 104 RTUs until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING

from models.errors import ModelError
from rtu_sim.errors import SimulatorError

if TYPE_CHECKING:
    from rtu_sim.ami_service import AmiHeadEndService
    from rtu_sim.simulator import RtuSimulator


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dscada rtu-sim", description="Simulated IEC 60870-5-104 RTUs driven by load "
                                "curves, built from the station configuration.")
    p.add_argument("--config", help="station configuration TOML (default: the embedded sample)")
    p.add_argument("--rtu", action="append", metavar="NAME", help="simulate only this RTU (repeatable; default all)")
    p.add_argument("--control-port", type=int, metavar="N",
                   help="serve scripted events as JSON lines on 127.0.0.1:N (0: a free port; default: none)")
    p.add_argument("--control-host", default="127.0.0.1", help="address of the control socket (default 127.0.0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tick", type=float, default=0.1, metavar="S", help="load-curve tick in seconds (default 0.1)")
    p.add_argument("--load", type=float, default=0.0, metavar="CHANGES_PER_S",
                   help="also run the change-load generator at this total rate")
    p.add_argument("--status-share", type=float, default=0.1, help="share of load changes that flip a status point")
    p.add_argument("--fault", action="append", default=[], metavar="LINE[@S]",
                   help="place a fault on this line (name or mRID) S seconds after start (default 0; repeatable; "
                        "needs a station with a [network] model; also the control socket's op 'fault')")
    p.add_argument("--fault-kind", default="three_phase", choices=["three_phase", "line_to_ground"],
                   help="kind of the --fault faults (default three_phase)")
    p.add_argument("--physics-period", type=float, default=5.0, metavar="S",
                   help="rerun the grid power flow every S seconds (default 5; also after every switching)")
    p.add_argument("--flow", default="balanced", choices=["balanced", "three_phase"],
                   help="grid physics power flow: balanced (pandapower) or three_phase (unbalanced, per-phase values)")
    p.add_argument("--instant-operate", action="store_true",
                   help="switches move at once (no breaker 0.08 s / load-break 1.5 s / disconnector 3 s travel)")
    p.add_argument("--no-physics", action="store_true",
                   help="do not drive measurement points from a power flow of the [network] model")
    ami = p.add_argument_group("AMI head-end", "simulated smart meters on the grid physics (rtu_sim.ami_service)")
    ami.add_argument("--ami-grpc", metavar="ADDRESS",
                     help="send the meters' power off/on events (IEC 61968-9 EndDeviceEvents) to the control "
                          "centre's OutageService.SubmitMeterEvents at ADDRESS (host:port)")
    ami.add_argument("--ami-token", default=os.environ.get("DSCADA_AMI_TOKEN", ""), metavar="T",
                     help="bearer token of an operator for --ami-grpc (default: $DSCADA_AMI_TOKEN)")
    ami.add_argument("--ami-http", type=int, metavar="PORT",
                     help="serve instantaneous meter reads: POST http://127.0.0.1:PORT/meter-readings (0: free port)")
    ami.add_argument("--ami-time-scale", type=float, default=1.0, metavar="X",
                     help="multiply the meters' delays (30 s last gasp, 10 s power on) by X (default 1)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def _parse_fault(text: str) -> tuple[str, float]:
    """``LINE`` or ``LINE@SECONDS`` -> (line, seconds after start)."""
    line, _, at = text.partition("@")
    at_s = float(at) if at else 0.0
    if not line or at_s < 0:
        raise ValueError(f"--fault {text!r}: expected LINE or LINE@SECONDS (seconds >= 0)")
    return line, at_s


def _build_ami(args: argparse.Namespace, sim: RtuSimulator) -> AmiHeadEndService | None:
    """The AMI head-end service the options ask for (None when neither --ami-grpc nor --ami-http is given)."""
    if args.ami_grpc is None and args.ami_http is None:
        return None
    from rtu_sim.ami_headend import AmiOptions
    from rtu_sim.ami_service import AmiHeadEndService

    physics = sim.physics
    if physics is None:
        raise SimulatorError("--ami-grpc/--ami-http need grid physics: a station with a [network] model")
    return AmiHeadEndService(physics.model, physics, grpc_address=args.ami_grpc, token=args.ami_token,
                             http_port=args.ami_http, seed=args.seed,
                             options=AmiOptions(time_scale=args.ami_time_scale),
                             sink=None if args.ami_grpc else (lambda _message: None))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from models.config import load_station_config
    from models.samples import sample_station_path
    from rtu_sim.control_socket import ControlSocketServer
    from rtu_sim.grid_driver import INSTANT_OPERATE, OperateTimes, PhysicsSettings
    from rtu_sim.physics import FlowMethod
    from rtu_sim.simulator import RtuSimulator

    sim: RtuSimulator | None = None
    try:
        if args.ami_grpc is not None and not args.ami_token:
            raise SimulatorError("--ami-grpc needs an operator's bearer token: --ami-token or $DSCADA_AMI_TOKEN")
        config = load_station_config(args.config or sample_station_path())
        faults = [_parse_fault(f) for f in args.fault]
        physics: PhysicsSettings | bool = False if args.no_physics else PhysicsSettings(
            period_s=args.physics_period, flow=FlowMethod(args.flow),
            operate_times=INSTANT_OPERATE if args.instant_operate else OperateTimes())
        sim = RtuSimulator(config, args.rtu, seed=args.seed, tick_s=args.tick, physics=physics)
        if faults and sim.physics is None:
            raise SimulatorError("--fault needs grid physics: a station with a [network] model and RTUs with "
                                 "equipment")
        ami = _build_ami(args, sim)
    except (ModelError, SimulatorError, ValueError) as exc:
        if sim is not None:
            sim.stop()  # it holds its servers' registrations from construction on
        print(f"dscada rtu-sim: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals can only be caught on the main thread
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    control: ControlSocketServer | None = None
    try:
        try:
            sim.start()
            if ami is not None:
                ami.start()
            if args.control_port is not None:
                control = ControlSocketServer(sim, args.control_host, args.control_port)
            if args.load > 0:
                sim.start_change_load(args.load, status_share=args.status_share)
        except (SimulatorError, OSError) as exc:
            print(f"dscada rtu-sim: cannot start: {exc}", file=sys.stderr)
            return 1
        print(f"dscada rtu-sim: '{config.name}' (seed {args.seed})", flush=True)
        for name in sim.rtu_names:
            o = sim.outstation(name)
            print(f"  {name}: common address {o.rtu.common_address}, {len(o.point_names)} points, "
                  f"{o.rtu.max_updates_per_s:g} updates/s max, on {', '.join(o.rtu.addresses)}", flush=True)
        for name in sim.transmission_names:
            t = sim.transmission(name)
            print(f"  {name}: ICCP/TASE.2 transmission simulator, {len(t.point_defs)} points on "
                  f"{t.settings.host}:{t.port}" + (", importing the centre's published points"
                                                   if t.importer is not None else ""), flush=True)
        if control is not None:
            print(f"  control socket: {control.host}:{control.port} (JSON lines)", flush=True)
        if args.load > 0:
            print(f"  change load: {args.load:g}/s, status share {args.status_share:g}", flush=True)
        if ami is not None:
            s = ami.stats().headend
            print(f"  AMI head-end: {s.meters} meters ({s.silent_meters} never report)"
                  + (f", events to {args.ami_grpc}" if args.ami_grpc else "")
                  + (f", meter reads on {ami.read_url}" if args.ami_http is not None else ""), flush=True)
        if sim.physics is not None:
            print(f"  grid physics: {sim.physics.model.name!r}, {args.flow} flow every {args.physics_period:g} s",
                  flush=True)
        started = time.monotonic()
        for line, at_s in sorted(faults, key=lambda f: f[1]):
            if stop.wait(max(0.0, started + at_s - time.monotonic())):
                break
            try:
                result = sim.place_fault(line, args.fault_kind)
                print(f"  fault on {result.line_name} ({result.kind.value}): tripped {', '.join(result.tripped)}"
                      f"; FPIs {', '.join(result.fpis) or 'none'}", flush=True)
            except SimulatorError as exc:
                print(f"dscada rtu-sim: fault on {line!r} not placed: {exc}", file=sys.stderr, flush=True)
        stop.wait()
        print("dscada rtu-sim: stopping", flush=True)
        return 0
    finally:
        if control is not None:
            control.stop()
        if ami is not None:
            ami.stop()
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
