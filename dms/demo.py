"""``dscada demo``: the control centre on the embedded CIM sample network, narrated.

The sample network (a 33/11 kV substation with six 11 kV cable feeders, ring main units, normally-open ties,
distribution transformers and customers) is loaded from its CIM file; the same file gives the point list and the
simulated field devices, whose analogs come from a power flow of the model. The devices speak the protocols of their
roles side by side: the substation RTU IEC 60870-5-104, the transformer meters Modbus TCP, the feeder protection
IEDs IEC 61850 and the ring-main-unit FRTUs DNP3. Every step goes through those real protocol stacks and the gRPC API
exactly as an operator's client would. Tables go to the terminal, PNG figures to the report folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
from rich.console import Console
from rich.table import Table

from dms.api.client import DmsClient
from dms.api.protos import flisr_pb2 as flisr_pb
from dms.api.protos import oms_pb2 as oms_pb
from dms.api.protos import oms_planned_pb2 as pl_pb
from dms.api.protos import oms_reliability_pb2 as rel_pb
from dms.api.protos import se_pb2 as se_pb
from dms.api.protos import study_pb2 as study_pb
from dms.api.protos import voltvar_pb2 as vv_pb
from dms.flisr.plan import FlisrMode
from dms.server import DmsApplications
from iccp.service import IccpServices
from models.config import Role, StationConfig, load_station_config
from models.gis_exchange import analyse_reconfiguration, reconfiguration_document
from models.network import NetworkModel
from models.pandapower_net import run_balanced_powerflow
from models.phase_model import build_phase_model
from models.points import DoubleState, PointKind
from models.sample_network import F_HZ
from models.samples import free_tcp_port, relocate_station_text, sample_network_station_path
from models.three_phase_flow import run_three_phase_powerflow
from models.timebase import now_ms
from oms.connectivity import build_connectivity
from oms.events import format_time_ms
from rtu_sim.ami_headend import AmiOptions
from rtu_sim.ami_service import AmiHeadEndService
from rtu_sim.native_output import divert_native_stderr
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.client_cli import format_time, format_value
from scada.demo_report import network_map_png, voltage_profile_png
from scada.server import ControlCenter

FAULT_LINE = "F2-C04"  # cable F2-RMU03 -> F2-RMU04
FEEDER_CB = "F2-CB"
ISOLATE = ("F2-RMU03-LBS2", "F2-RMU06-LBS1")  # automated ring switches either side of the faulted stretch
FOREIGN_TIE = "F3-RMU08-LBS2"  # normally-open point F3-F4: closing it parallels the two grid infeeds
FUSE = "F4-RMU02-TEE"  # a distribution transformer's fuse, not telemetered: only the meters tell
ICCP_SNAPSHOT_S = 5.0  # the simulated TSO's DR snapshot period in the demo (production: a minute)
# the head-end's delays at a tenth (a last gasp 3 s after the loss instead of 30 s) so the demo stays short
AMI_OPTIONS = AmiOptions(time_scale=0.1, poll_s=0.2, late_share=0.0)
# A pipe or CI log gets a readable fixed width instead of rich's 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class DemoError(Exception):
    pass


@dataclass
class _Summary:
    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, value: str) -> None:
        self.rows.append((what, value))


def _step(n: int, text: str) -> None:
    console.print(f"\n[bold cyan]{n}. {text}[/]")


def _wait(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise DemoError(f"timed out after {timeout_s:g} s waiting for {what}")


def _status(code: int) -> str:
    return pb.ControlStatus.Name(code).removeprefix("CONTROL_STATUS_").lower()


@dataclass(frozen=True)
class _Running:
    center: ControlCenter
    sim: RtuSimulator
    ami: AmiHeadEndService
    iccp: IccpServices


@contextlib.contextmanager
def _running(data_dir: Path) -> Iterator[_Running]:
    source = sample_network_station_path()
    text = relocate_station_text(source.read_text(encoding="utf-8"), data_dir, source.parent)
    # the AMI head-end's meter-read endpoint, so the OMS can ping meters
    ami_port = free_tcp_port()
    text = re.sub(r"(?m)^(utc_offset = .*)$", rf'\1\nheadend_url = "http://127.0.0.1:{ami_port}"', text, count=1)
    cfg_path = data_dir / "station.toml"
    cfg_path.write_text(text, encoding="utf-8")
    config = load_station_config(cfg_path)
    # the TSO's DR snapshot files every 5 s (not 60 s) so the link outage of the ICCP step is recovered in seconds
    sim = RtuSimulator(config, seed=7, iccp_snapshot_interval_s=ICCP_SNAPSHOT_S)
    center = ControlCenter(config)
    iccp = IccpServices.for_center(center, recovery_retry_s=1.0)
    if iccp is None:
        raise DemoError(f"{source}: the sample station has no [iccp] block")
    dms = DmsApplications(center, flisr_mode=FlisrMode.AUTOMATIC)
    ami: AmiHeadEndService | None = None
    try:
        sim.start()
        center.start()
        iccp.start()
        dms.start()
        assert sim.physics is not None
        token = next(o.token for o in config.operators if o.role is Role.OPERATOR)
        ami = AmiHeadEndService(sim.physics.model, sim.physics, grpc_address=f"127.0.0.1:{center.grpc_port}",
                                token=token, http_port=ami_port, seed=7, options=AMI_OPTIONS)
        ami.start()
        yield _Running(center, sim, ami, iccp)
    finally:
        if ami is not None:
            ami.stop()
        dms.stop()
        iccp.stop()
        center.stop()
        sim.stop()


@contextlib.contextmanager
def _server_log(path: Path) -> Iterator[Path]:
    """The in-process server's and simulators' warnings go to ``path``, not between the demo's tables (e.g. a state
    estimate that does not converge on the fault currents of step 5, or the simulated TSO's client retrying while
    the link is cut); errors still show."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    consoles = [(h, h.level) for h in root.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]
    for h, _level in consoles:
        h.setLevel(max(h.level, logging.ERROR))
    root.addHandler(handler)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        handler.close()
        for h, level in consoles:
            h.setLevel(level)


def run_demo(*, data_dir: str | None = None, fast: bool = False, report_dir: str | None = None) -> int:
    pause = 0.5 if fast else 1.5
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dscada-demo-"))
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        report = Path(report_dir or "var/demo-report")
        report.mkdir(parents=True, exist_ok=True)
        stack.enter_context(divert_native_stderr(folder / "native-libraries.log"))
        stack.enter_context(_server_log(folder / "server.log"))
        try:
            return _run(folder, report, pause, stack)
        except KeyboardInterrupt:
            console.print("\n[yellow]Interrupted: stopping the server and the simulated field devices.[/]")
            return 130
        except (DemoError, ClientError) as exc:
            console.print(f"\n[bold red]demo failed:[/] {exc}")
            return 1


# ------------------------------------------------------------------------------------------------ model steps


def _network_table(model: NetworkModel) -> Table:
    table = Table(title=f"Network model {model.name} (from CIM)", title_justify="left")
    for col in ("feeder", "cable km", "RMUs", "DTs", "DT kVA", "load kW", "customers", "normally open"):
        table.add_column(col, justify="right" if col not in ("feeder", "normally open") else "left")
    for feeder in model.feeders:
        lines = [ln for ln in model.lines if ln.feeder_mrid == feeder.mrid]
        trafos = [t for t in model.transformers if t.feeder_mrid == feeder.mrid]
        loads = [ld for ld in model.loads if ld.feeder_mrid == feeder.mrid]
        load_mrids = {ld.mrid for ld in loads}
        rmus = {s.name.split("-")[1] for s in model.switches if s.feeder_mrid == feeder.mrid and "-RMU" in s.name}
        nops = [s.name for s in model.switches if s.feeder_mrid == feeder.mrid and s.normal_open]
        table.add_row(feeder.name, f"{sum(ln.length_m for ln in lines) / 1000:.2f}", str(len(rmus)),
                      str(len(trafos)), f"{sum(t.windings[0].rated_s_va for t in trafos) / 1000:.0f}",
                      f"{sum(ld.p_w for ld in loads) / 1000:.0f}",
                      str(sum(1 for c in model.customers if c.load_mrid in load_mrids)), ", ".join(nops) or "-")
    return table


_ROLE = {"iec104": "substation RTU", "dnp3": "ring-main-unit FRTUs", "modbus": "transformer meters (polled)",
         "iec61850": "feeder protection IEDs"}


def _devices_table(config: StationConfig) -> Table:
    table = Table(title="Field devices", title_justify="left")
    for col in ("protocol", "role", "devices", "points", "controls"):
        table.add_column(col, justify="right" if col in ("devices", "points", "controls") else "left")
    for proto in ("iec104", "modbus", "iec61850", "dnp3"):
        rtus = [r for r in config.rtus if r.protocol.value == proto]
        if not rtus:
            continue
        pts = [p for p in config.points if p.source.frontend == proto]
        table.add_row(proto, _ROLE[proto], str(len(rtus)), str(len(pts)), str(sum(p.control is not None for p in pts)))
    return table


def _meters_table(operator: ScadaClient) -> Table:
    table = Table(title="Transformer meters (Modbus, polled)", title_justify="left")
    for col in ("transformer", "P kW through", "Q kvar through", "tap", "polled at"):
        table.add_column(col, justify="left" if col == "transformer" else "right")
    for tr in ("SS-TR1", "SS-TR2"):
        names = [f"{tr}.{q}.ph_{p}" for q in ("P", "Q") for p in "ABC"] + [f"{tr}-OLTC.Pos"]
        v = {x.name: x for x in operator.read(names)}
        # the meters measure at the 11 kV terminal, power counted into the transformer: the load is its opposite
        table.add_row(tr, f"{-sum(v[f'{tr}.P.ph_{p}'].value for p in 'ABC'):.0f}",
                      f"{-sum(v[f'{tr}.Q.ph_{p}'].value for p in 'ABC'):.0f}", f"{v[f'{tr}-OLTC.Pos'].value:.0f}",
                      format_time(v[f"{tr}.P.ph_A"].source_time_ms))
    return table


def _voltage_profiles(model: NetworkModel, three: Any, balanced: Any) -> dict[str, list[tuple[float, float, float]]]:
    """Per feeder: cable distance from its breaker, min three-phase |V| and balanced |V| of each 11 kV bus."""
    graph = nx.Graph()
    for ln in model.lines:
        graph.add_edge(ln.from_bus, ln.to_bus, weight=ln.length_m)
    for sw in model.switches:
        if not sw.open and not sw.name.endswith("-CB"):  # each feeder walked from its own breaker only
            graph.add_edge(sw.from_bus, sw.to_bus, weight=0.0)
    vmin: dict[str, float] = {}
    for row in three.nodes:
        if row["energised"]:
            vmin[str(row["bus"])] = min(vmin.get(str(row["bus"]), 9.0), float(row["v_pu"]))
    vbal = {b.name: b.vm_pu for b in balanced.buses}
    names = {f.mrid: f.name for f in model.feeders}
    profiles: dict[str, list[tuple[float, float, float]]] = {}
    for sw in model.switches:
        if sw.name.endswith("-CB") and sw.name[:-3] in names.values():
            dist = nx.single_source_dijkstra_path_length(graph, sw.to_bus, weight="weight")
            for bus, metres in dist.items():
                b = model.buses[bus]
                if b.feeder_mrid and names.get(b.feeder_mrid) == sw.name[:-3] and b.nominal_v > 10e3 \
                        and b.name in vmin and b.name in vbal:
                    profiles.setdefault(sw.name[:-3], []).append((metres / 1000, vmin[b.name], vbal[b.name]))
    return profiles


def _colouring_maps(model: NetworkModel, colouring: pb.Colouring) -> tuple[dict[int, str | None], dict[str, bool]]:
    names = {f.mrid: f.name for f in model.feeders}
    bus_feeder = {c.index: names.get(c.feeder, "substation") if c.energized else None for c in colouring.buses}
    closed = {s.name: s.closed for s in colouring.switches}
    return bus_feeder, closed


def _supply_table(model: NetworkModel, colouring: pb.Colouring, title: str) -> Table:
    """Per feeding feeder: DTs and customers supplied, then what is off supply; sources from the islands."""
    feeder_names = {f.mrid: f.name for f in model.feeders}
    customers: dict[str, int] = {}
    for c in model.customers:
        customers[c.load_mrid] = customers.get(c.load_mrid, 0) + 1
    sources = {isl.id: ", ".join(isl.source_names) for isl in colouring.islands}
    rows: dict[str, list[Any]] = {}
    for load in colouring.loads:
        key = feeder_names.get(load.feeder, load.feeder or "?") if load.energized else "off supply"
        row = rows.setdefault(key, [sources.get(load.island, "-") if load.energized else "-", 0, 0, []])
        row[1] += 1
        row[2] += customers.get(load.mrid, 0)
        if not load.energized:
            row[3].append(load.name.removesuffix("-LOAD"))
    table = Table(title=title, title_justify="left")
    for col in ("fed by feeder", "source", "DTs", "customers", "DTs off supply"):
        table.add_column(col)
    for key in sorted(rows, key=lambda k: (k == "off supply", k)):
        source, dts, custs, dead = rows[key]
        table.add_row(key, source, str(dts), str(custs), ", ".join(dead) or "-",
                      style="bold red" if key == "off supply" else "")
    return table


def protocol_of_point(config: StationConfig, name: str) -> str:
    return next((p.source.frontend for p in config.points if p.name == name), "?")


def _estimate_table(operator: ScadaClient, est: Any) -> Table:
    """Estimated against measured busbar voltages (every measured bus, phase A)."""
    by_node = {(n.bus, n.phase): n for n in est.nodes}
    table = Table(title="State estimate at the measured busbars (phase A)", title_justify="left")
    for col in ("bus", "measured kV", "estimated kV", "sigma kV"):
        table.add_column(col, justify="left" if col == "bus" else "right")
    names = [d.name for d in operator.list_points(".PNV.ph_A")]
    for v in operator.read(names):
        bus = v.name.split(".PNV")[0]
        node = by_node.get((bus.upper(), "A")) or by_node.get((bus, "A"))
        if node is None:
            continue
        table.add_row(bus, f"{v.value:.3f}", f"{node.v_kv:.3f}", f"{node.v_sigma_pu * node.v_kv / node.v_pu:.3f}"
                      if node.v_pu else "-")
    return table


def _flisr_table(run: Any, protocol_of: dict[str, str]) -> Table:
    plan = run.plan
    fault = plan.fault
    table = Table(title=f"FLISR run {run.id}: {fault.description}", title_justify="left")
    for col in ("#", "switch", "action", "purpose", "protocol", "result", "s after trip"):
        table.add_column(col, justify="right" if col in ("#", "s after trip") else "left")
    for step in run.steps:
        status = flisr_pb.FlisrStepStatus.Name(step.status).removeprefix("FLISR_STEP_STATUS_").lower()
        after = f"{(step.finished_ms - run.trip_ms) / 1000:.1f}" if step.finished_ms > 0 else "-"
        table.add_row(str(step.number), step.switch_name, step.action, step.purpose.replace("_", " "),
                      protocol_of.get(step.point, "crew"), status, after)
    return table


# ------------------------------------------------------------------------------------------------ the run


def _run(folder: Path, report: Path, pause: float, stack: contextlib.ExitStack) -> int:
    t_start = time.monotonic()
    summary = _Summary()
    pngs: list[Path] = []

    _step(1, "Start the physics-driven simulated field devices and the control-centre server on the CIM sample network")
    running = stack.enter_context(_running(folder))
    center, sim, ami = running.center, running.sim, running.ami
    config = center.config
    model = config.network
    if model is None:
        raise DemoError("the sample station has no network model")
    console.print(_network_table(model))
    counts = model.counts()
    console.print(f"{counts['topological_nodes']} nodes, {counts['line_segments']} cable sections, "
                  f"{counts['switches']} switches, {counts['transformers']} transformers, {len(model.customers)} "
                  f"customers; {counts['analog_measurements']} analog and {counts['discrete_measurements']} discrete "
                  f"CIM measurements became {len(config.points)} points on {len(config.rtus)} field devices "
                  f"({sum(r.frtu for r in config.rtus)} FRTUs in ring main units)")
    address = f"127.0.0.1:{center.grpc_port}"
    console.print(_devices_table(config))
    console.print(f"gRPC API on {address}; stores in {folder}; warnings of the server and simulators in "
                  f"{folder / 'server.log'}")
    t_up = time.monotonic()

    _step(2, "Power flow of the model: three-phase (unbalanced) beside balanced (pandapower)")
    three = run_three_phase_powerflow(model, phase_model=build_phase_model(model, frequency_hz=F_HZ))
    balanced = run_balanced_powerflow(model, f_hz=F_HZ)
    profiles = _voltage_profiles(model, three, balanced)
    table = Table(title="Feeder voltages", title_justify="left")
    for col in ("feeder", "lowest |V| three-phase pu", "lowest |V| balanced pu", "difference %"):
        table.add_column(col, justify="right" if col != "feeder" else "left")
    for feeder, rows in sorted(profiles.items()):
        lo3, lob = min(r[1] for r in rows), min(r[2] for r in rows)
        table.add_row(feeder, f"{lo3:.4f}", f"{lob:.4f}", f"{100 * (lo3 - lob) / lob:+.2f}")
    console.print(table)
    console.print(f"three-phase: {three.iterations} iterations, {three.solve_s * 1000:.1f} ms, losses "
                  f"{three.loss_p_w / 1000:.0f} kW; balanced: {balanced.iterations} iterations, losses "
                  f"{balanced.loss_p_mw * 1000:.0f} kW. The three-phase flow keeps the grid infeeds' "
                  "Thevenin impedance from the CIM (the balanced one holds 33 kV at 1 pu): its 11 kV level is lower")
    pngs.append(voltage_profile_png(profiles, report / "voltage_profile.png",
                                    f"{model.name}: 11 kV voltage profiles (three-phase vs balanced)"))

    ops = {o.role.value: o.token for o in config.operators}
    operator = stack.enter_context(ScadaClient(address, ops["operator"]))
    operator.wait_ready(10)
    definitions = operator.list_points()
    # field points: the estimator's calculated points (source DMS-SE) follow its first run
    monitored = [d.id for d in definitions if d.kind != pb.POINT_KIND_COMMAND and d.protocol != "calculated"]
    calculated = sum(1 for d in definitions if d.protocol == "calculated")
    try:
        _wait(lambda: all(v.quality == 0 for v in operator.read(monitored)), 60,
              "every point to report good quality after general interrogation")
    except DemoError:
        bad = [f"{v.name} ({'|'.join(v.quality_names)})" for v in operator.read(monitored) if v.quality]
        raise DemoError(f"{len(bad)} point(s) not good 60 s after start: {', '.join(bad[:8])}"
                        f"{' ...' if len(bad) > 8 else ''}") from None
    devices = sum(1 for r in config.rtus if r.protocol.value != "calculated")
    summary.add(f"{devices} device links up, {len(monitored)} field points good after GI (from server start)",
                f"{time.monotonic() - t_up:.1f} s")

    _step(3, "Live feeder-head telemetry (from the simulators' power flow) and the topology colouring")
    table = Table(title="Feeder breakers", title_justify="left")
    for col in ("feeder", "breaker", "I A (A/B/C)", "P kW", "Q kvar"):
        table.add_column(col, justify="right" if col not in ("feeder", "breaker") else "left")
    for feeder in model.feeders:
        cb = f"{feeder.name}-CB"
        names = [f"{cb}.Pos"] + [f"{cb}.{q}.ph_{p}" for q in ("A", "P", "Q") for p in "ABC"]
        v = {x.name: x.value for x in operator.read(names)}
        table.add_row(feeder.name, format_value(pb.POINT_KIND_DOUBLE, v[f"{cb}.Pos"]),
                      " / ".join(f"{v[f'{cb}.A.ph_{p}']:.0f}" for p in "ABC"),
                      f"{sum(v[f'{cb}.P.ph_{p}'] for p in 'ABC'):.0f}",
                      f"{sum(v[f'{cb}.Q.ph_{p}'] for p in 'ABC'):.0f}")
    console.print(table)
    console.print(_meters_table(operator))
    colouring = operator.colouring()
    console.print(_supply_table(model, colouring, f"Supply (topology colouring version {colouring.version})"))
    pngs.append(network_map_png(model, *_colouring_maps(model, colouring), report / "network_normal.png",
                                f"{model.name}: normal state"))
    time.sleep(pause)

    _step(4, "Real-time state estimation: three-phase WLS on the live measurements, bad data caught")
    dms_client = stack.enter_context(DmsClient(address, ops["operator"]))
    est = dms_client.se.RunEstimate(se_pb.SeRunEstimateRequest())
    if not est.converged:
        raise DemoError(f"the state estimate did not converge: {est.error}")
    console.print(_estimate_table(operator, est))
    console.print(f"the estimate is also written back as {calculated} calculated points (source DMS-SE, e.g. "
                  "SS-BUS1.SE.V.ph_A) for displays, alarms and the historian")
    console.print(f"{est.telemetered} telemetered of {est.measurements} measurements (the rest load pseudo-"
                  f"measurements scaled to the feeder meters and zero injections); losses {est.loss_p_w / 1e3:.0f} "
                  f"kW; chi-square {est.objective:.0f} (threshold {est.chi2_threshold:.0f}): "
                  f"{'passed' if est.chi2_passed else 'FAILED'}; {est.solve_ms:.0f} ms")
    summary.add("state estimate: nodes, solve time", f"{len(est.nodes)} nodes, {est.solve_ms:.0f} ms")
    wrong = "F3-CB.A.ph_B"
    true_a = operator.read([wrong])[0].value
    sim.set_value(wrong, round(true_a * 2.5, 1))
    _wait(lambda: abs(operator.read([wrong])[0].value - true_a * 2.5) < 1, 15, f"the corrupted {wrong}")
    est = dms_client.se.RunEstimate(se_pb.SeRunEstimateRequest())
    for bad in est.bad_data:
        console.print(f"  bad data: [yellow]{bad.measurement}[/] reads {bad.value:.0f}, estimate {bad.estimate:.0f} "
                      f"(normalised residual {bad.normalized_residual:.0f}): flagged "
                      f"{'|'.join(operator.read([bad.measurement])[0].quality_names)} and alarmed")
    if wrong not in {b.measurement for b in est.bad_data}:
        raise DemoError(f"the estimator did not identify the corrupted {wrong}")
    sim.release(wrong)
    time.sleep(pause)

    _step(5, f"A cable fault on {FAULT_LINE}: protection trips {FEEDER_CB}, fault passage indicators pick up, "
             "FLISR (automatic mode) locates, isolates and restores")
    with operator.watch_colouring() as topo_stream, operator.stream_alarms() as alarm_stream:
        raised: list[Any] = []
        updates: list[tuple[Any, int]] = []
        runs: dict[int, Any] = {}
        run_stream = dms_client.flisr.WatchRuns(flisr_pb.WatchFlisrRunsRequest(recent=0))

        def watch_alarms() -> None:
            for ev in alarm_stream:
                if ev.kind == pb.ALARM_EVENT_KIND_RAISED:
                    raised.append(ev)

        def watch_topology() -> None:
            for upd in topo_stream:
                updates.append((upd, now_ms()))

        def watch_runs() -> None:
            with contextlib.suppress(Exception):  # the stream ends with a cancel at the end of the step
                for run in run_stream:
                    runs[run.id] = run

        for target in (watch_alarms, watch_topology, watch_runs):
            threading.Thread(target=target, daemon=True).start()
        time.sleep(0.3)
        fault = sim.place_fault(FAULT_LINE)
        console.print(f"simulator: fault on {fault.line_name}; tripped {', '.join(fault.tripped)}; fault current "
                      f"through {', '.join(fault.fpis)}")
        _wait(lambda: any(u.deenergized_loads for u, _ in updates), 15, "the topology update for the trip")
        trip = next((u, t) for u, t in updates if u.deenergized_loads)
        cb_state = operator.read([f"{FEEDER_CB}.Pos"])[0]
        latency_ms = trip[1] - cb_state.source_time_ms
        console.print(f"{FEEDER_CB} is [bold red]{format_value(pb.POINT_KIND_DOUBLE, cb_state.value)}[/]; "
                      f"{len(trip[0].deenergized_loads)} DT loads lost supply; the colouring update reached the "
                      f"operator {latency_ms} ms after the field time tag")
        summary.add("trip: field time tag -> de-energized colouring on the gRPC stream", f"{latency_ms} ms")
        console.print(_supply_table(model, operator.colouring(), "Supply after the trip"))
        pngs.append(network_map_png(model, *_colouring_maps(model, operator.colouring()), report / "network_fault.png",
                                    f"{model.name}: {FEEDER_CB} tripped for a fault on {FAULT_LINE}"))
        done = (flisr_pb.FLISR_RUN_STATE_COMPLETED, flisr_pb.FLISR_RUN_STATE_FAILED, flisr_pb.FLISR_RUN_STATE_REJECTED)
        run = _wait(lambda: next((r for r in runs.values() if r.state in done), None), 60, "the FLISR run to finish")
        run_stream.cancel()
    soe = operator.soe(start_ms=cb_state.source_time_ms - 1, oldest_first=True)
    table = Table(title="Sequence of events", title_justify="left")
    for col in ("field time", "point", "to", "cause"):
        table.add_column(col)
    kinds = {d.name: d.kind for d in operator.list_points()}
    for e in soe:
        table.add_row(format_time(e.source_time_ms), e.point_name, format_value(kinds[e.point_name], e.value),
                      pb.Cause.Name(e.cause).removeprefix("CAUSE_").lower())
    console.print(table)
    console.print(_flisr_table(run, {p.name: p.source.frontend for p in config.points}))
    for opt in run.plan.options:
        console.print(f"  option {'+'.join(opt.closes) or '-'} for {opt.area}: "
                      f"{'accepted' if opt.accepted else 'rejected'} ({opt.check})")
    if run.state != flisr_pb.FLISR_RUN_STATE_COMPLETED:
        raise DemoError(f"FLISR run {run.id} ended {flisr_pb.FlisrRunState.Name(run.state)}: {run.error}")
    summary.add("FLISR: plan computed (after the 3 s FPI settle window)", f"{run.plan.plan_ms:.0f} ms")
    summary.add("FLISR: trip -> customers restored (realistic switch operate times)", f"{run.trip_to_restored_s:.1f} s")
    summary.add("customers interrupted / restored by FLISR / still off (faulted section)",
                f"{run.customers_interrupted} / {run.customers_restored} / {run.customers_still_off}")
    console.print(f"OMS outage record {run.outage_record_id} opened: {run.customers_interrupted} customers "
                  f"interrupted, {run.customers_restored} restored, {run.customers_still_off} off until repair")
    operator.acknowledge([e.alarm.id for e in raised])
    colouring = operator.colouring()
    console.print(_supply_table(model, colouring, "Supply after FLISR"))
    trace = operator.trace("F2-RMU07-DT")
    console.print(f"trace F2-RMU07-DT: fed by {trace.source.name} via feeder {trace.feeder_name} "
                  f"({len(trace.steps)} steps), {trace.customer_count} customers")
    pngs.append(network_map_png(model, *_colouring_maps(model, colouring), report / "network_restored.png",
                                f"{model.name}: {FAULT_LINE} isolated by FLISR, F2 tail fed from F1"))
    values = {v.name: v.value for v in operator.read([f"F1-CB.A.ph_{p}" for p in "ABC"])}
    console.print(f"F1 now carries F2's tail: F1-CB currents {' / '.join(f'{x:.0f}' for x in values.values())} A")
    time.sleep(pause)

    _oms_step(dms_client, sim, ami, model, summary, pause)

    _step(7, "Topology interlocks refuse unsafe switching before anything reaches the field")
    for what, point in ((f"close the F3-F4 tie {FOREIGN_TIE}", f"{FOREIGN_TIE}.Pos"),
                        (f"close {ISOLATE[0]} onto the faulted section FLISR marked", f"{ISOLATE[0]}.Pos")):
        try:
            operator.select(point, DoubleState.ON)
            raise DemoError(f"{what} was not refused")
        except ClientError as exc:
            console.print(f"  {what}: [yellow]{exc.code.name}[/] {exc.message}")

    _step(8, "Planning: an engineer studies the restored network; Volt/VAR lowers demand in real time")
    engineer = stack.enter_context(DmsClient(address, ops["engineer"]))
    case = engineer.study.OpenStudy(study_pb.OpenStudyRequest(name="F2 repair: best open points meanwhile"))
    run = engineer.study.RunStudy(study_pb.RunStudyRequest(id=case.id, kind=study_pb.RUN_KIND_RECONFIGURATION,
                                                           objective="losses"))
    console.print(f"study {case.id} ({case.name}), reconfiguration: {run.summary}")
    for line in run.details[:8]:
        console.print(f"  {line}")
    summary.add("study: reconfiguration of the restored network (MILP + AC polish)", f"{run.elapsed_ms / 1e3:.1f} s")
    proposal = dms_client.voltvar.Propose(vv_pb.VoltVarProposeRequest(objective=vv_pb.VOLTVAR_OBJECTIVE_CVR))
    console.print(f"Volt/VAR (conservation voltage reduction) on the real-time state: {proposal.message}")
    console.print(f"  before: demand {proposal.before.demand_kw:.0f} kW, |V| {proposal.before.v_min_pu:.3f}-"
                  f"{proposal.before.v_max_pu:.3f} pu; after: demand {proposal.after.demand_kw:.0f} kW, |V| "
                  f"{proposal.after.v_min_pu:.3f}-{proposal.after.v_max_pu:.3f} pu")
    if proposal.actions and proposal.verified:
        done = dms_client.voltvar.Execute(vv_pb.VoltVarExecuteRequest(proposal_id=proposal.id))
        for r in done.results:
            status = vv_pb.VoltVarActionStatus.Name(r.status).removeprefix("VOLTVAR_ACTION_STATUS_").lower()
            console.print(f"  {r.action.element}: step {r.action.before:g} -> {r.action.after:g} via {r.point} "
                          f"({protocol_of_point(config, r.point)}): {status} in {r.elapsed_ms:.0f} ms")
        if not done.completed:
            raise DemoError(f"Volt/VAR execution did not complete: {done.message}")
        summary.add("Volt/VAR CVR: demand before -> after (OLTC set-points over Modbus)",
                    f"{proposal.before.demand_kw:.0f} -> {proposal.after.demand_kw:.0f} kW")
        console.print(_meters_table(operator))
    time.sleep(pause)

    _step(9, "Export the reconfiguration to GIS / energy accounting as a CIM difference")
    after = {s.name: s.closed for s in colouring.switches}
    before = {s.name: not s.open for s in model.switches}
    reconfig = analyse_reconfiguration(model, before, after, _now_local(), operator="operator",
                                       reason=f"fault on {FAULT_LINE}")
    diff_path = report / "reconfiguration_difference.xml"
    diff_path.write_bytes(reconfiguration_document(reconfig))
    console.print(reconfig.table())
    console.print(f"CIM difference written to {diff_path}")

    _iccp_step(operator, running, summary, pause)

    _step(11, "Summary")
    stats = sim.stats()
    sent: dict[str, int] = {}
    for r in stats.rtus.values():
        sent[r.protocol] = sent.get(r.protocol, 0) + r.sent
    summary.add("reports sent by the simulated devices", ", ".join(f"{p} {n}" for p, n in sorted(sent.items())))
    summary.add("adapter restarts", str(sum(s.restarts for s in center.supervisors.values())))
    summary.add("demo duration", f"{time.monotonic() - t_start:.1f} s")
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("measured", justify="right")
    for what, value in summary.rows:
        table.add_row(what, value)
    console.print(table)
    console.print("Figures: " + ", ".join(str(p) for p in pngs))
    console.print("[green]Demo complete.[/] Stopping the server and the simulated field devices.")
    return 0


def _point_text(kind: PointKind, value: float) -> str:
    """A value as the operator reads it: states by name, measurements and MWh registers to three decimals."""
    if kind in (PointKind.DOUBLE, PointKind.SINGLE):
        return format_value(pb.PointKind.Value(f"POINT_KIND_{kind.name}"), value)
    return "-" if math.isnan(value) else f"{value:.3f}"


def _iccp_step(operator: ScadaClient, running: _Running, summary: _Summary, pause: float) -> None:
    """Both directions of the bilateral agreement with the transmission centre, then a link outage and its recovery."""
    config = running.center.config
    assert config.iccp is not None
    remote = config.iccp.remotes[0]
    tso = running.sim.transmission(remote.name)
    _step(10, f"ICCP/TASE.2 with the transmission control centre {remote.name}: grid frequency and tie flows in, "
              "substation values out, a link outage recovered from the DR snapshot files")
    imported = config.points_of_rtu(remote.name)
    names = [p.name for p in imported]
    table = Table(title=f"Imported by this centre's TASE.2 client (bilateral table {remote.bilateral_table_id!r}, "
                        f"ICC domain {remote.domain!r}), read over gRPC", title_justify="left")
    for col in ("point", "TASE.2 name", "value", "quality", "time tag"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for p, v in zip(imported, operator.read(names), strict=True):
        table.add_row(p.name, p.source.reference, f"{_point_text(p.kind, v.value)} {p.units}".strip(),
                      "|".join(v.quality_names) or "good", format_time(v.source_time_ms))
    console.print(table)

    importer = tso.importer
    if importer is None:
        raise DemoError(f"the simulated {remote.name} imports nothing from this centre: no [[iccp.peers]] entry")
    peer = config.iccp.peer(remote.identity)
    assert peer is not None
    def all_received() -> bool:
        got = importer.values()
        return len(got) == len(peer.points) and all(v.quality == 0 for v in got.values())

    _wait(all_received, 30, f"{remote.name} to receive every point of table {peer.table_id!r} in good quality")
    received = importer.values()
    ours = {v.name: v for v in operator.read([bp.point for bp in peer.points])}
    table = Table(title=f"Received by {remote.name} from this centre's TASE.2 server (peer {peer.peer!r}, "
                        f"{len(peer.points)} points)", title_justify="left")
    for col in ("point", "TASE.2 name", f"at {remote.name}", "in our RTDB", "quality"):
        table.add_column(col, justify="left" if col in ("point", "TASE.2 name", "quality") else "right")
    for bp in peer.points[:9]:
        r = received[bp.name]
        kind = config.point(bp.point).kind
        table.add_row(bp.point, bp.name, _point_text(kind, r.value), _point_text(kind, ours[bp.point].value),
                      str(r.quality.name or "good").lower())
    console.print(table)
    console.print(f"... and {len(peer.points) - 9} more; RBE reports keep both sides within one transfer-set "
                  "interval (values move between the two reads)")
    time.sleep(pause)

    console.print(f"[yellow]The link to {remote.name} fails[/] (both directions); the transmission system runs on and "
                  "keeps writing its DR snapshot files.")
    t_cut = time.monotonic()
    tso.cut_link()
    _wait(lambda: all("COMM_LOST" in v.quality_names for v in operator.read(names)), 30,
          f"the points of {remote.name} to turn COMM_LOST")
    console.print(f"  {len(names)} imported points COMM_LOST after {time.monotonic() - t_cut:.1f} s")
    time.sleep(max(2 * ICCP_SNAPSHOT_S, 4 * pause))
    t_restore = time.monotonic()
    tso.restore_link()
    _wait(lambda: all(v.quality == 0 for v in operator.read(names)), 40,
          f"the points of {remote.name} to be good again after the link came back")
    back_s = time.monotonic() - t_restore
    console.print(f"  link restored after {t_restore - t_cut:.1f} s of outage: every point good again {back_s:.1f} s "
                  "later (the client reassociated, redefined its data sets and restarted its transfer sets)")
    recovery = running.iccp.recovery
    assert recovery is not None
    done = _wait(lambda: next((r for r in reversed(recovery.results) if r[1].complete), None), 40,
                 f"the gap to be recovered from {remote.dr_directory}")
    job, result = done
    freq = next(p.name for p in imported if p.source.reference == "FREQ_SYS")
    samples = [x for x in operator.history(freq, start_ms=job.start_ms, end_ms=job.end_ms).samples
               if x.quality == 0]
    table = Table(title="Gap recovery from the DR snapshot files (iccp.recovery)", title_justify="left")
    for col in ("outage", "duration", "snapshot files read", "samples backfilled", f"{freq} samples in the gap"):
        table.add_column(col, justify="left" if col == "outage" else "right")
    table.add_row(f"{format_time(job.start_ms)[11:]} .. {format_time(job.end_ms)[11:]}",
                  f"{(job.end_ms - job.start_ms) / 1000:.1f} s", str(result.files_read), str(result.inserted),
                  str(len(samples)))
    console.print(table)
    if not samples:
        raise DemoError(f"the historian has no good sample of {freq} inside the recovered outage")
    summary.add(f"ICCP: link back -> {len(names)} imported points good", f"{back_s:.1f} s")
    summary.add("ICCP: link outage backfilled from DR files (samples)", f"{result.inserted}")


def _oms_step(client: DmsClient, sim: RtuSimulator, ami: AmiHeadEndService, model: NetworkModel, summary: _Summary,
              pause: float) -> None:
    """One unplanned outage from the blown fuse to the indices, all through the OMS's gRPC services."""
    _step(6, f"Outage management: the fuse {FUSE} blows (not telemetered): smart meters' last gasps, meter pings, a "
             "crew, restoration, the record and the reliability indices")
    oms = client.oms
    sw = next(s for s in model.switches if s.name == FUSE)
    bus = model.buses[sw.from_bus]
    now = now_ms()
    for cid, name, dx, skill in (("UG-1", "cable jointers", 0.012, "underground"),
                                 ("OH-1", "line crew", -0.008, "overhead"), ("SS-1", "substation team", 0.02,
                                                                            "substation")):
        oms.AddCrew(oms_pb.Crew(id=cid, name=name, x=bus.x + dx, y=bus.y + 0.004, shift_start_ms=now - 3_600_000,
                                shift_end_ms=now + 8 * 3_600_000, skills=[skill]))
    assert sim.physics is not None
    t_fault = now_ms()
    sim.physics.set_switch(FUSE, False)
    sim.solve_now()
    console.print(f"simulator: {FUSE} blew at {format_time(t_fault)}; the meters behind it lose supply (last gasps "
                  f"come {AMI_OPTIONS.last_gasp_delay_s * AMI_OPTIONS.time_scale:.0f} s later at this demo's time "
                  "scale; some meters never report)")

    def active() -> Any:
        return next((o for o in oms.ListOutages(oms_pb.ListOutagesRequest(active_only=True)).outages
                     if o.device == FUSE), None)

    outage = _wait(active, 30, f"the OMS to predict the outage at {FUSE}")
    t_predicted = now_ms()
    console.print(f"OMS: outage {outage.id} predicted at {outage.device} ({outage.device_kind}) from {outage.pons} "
                  f"last gasps: {outage.customers_affected} customers (the EndDeviceEvents came over gRPC from the "
                  "head-end)")
    outage = _wait(lambda: (o := active()) is not None and o.state == "confirmed" and o, 15,
                   "the meter pings to confirm the outage")
    console.print(f"OMS: {next(line for line in outage.timeline if 'ping' in line).split(' ', 2)[2]}")
    console.print(f"operators' summary: {oms.OutageSummary(oms_pb.OutageSummaryRequest()).text}")
    rid = outage.record_id
    crew = _wait(lambda: (r := oms.GetRecord(oms_pb.RecordRequest(record_id=rid))).crew and r, 10,
                 "a crew to be assigned")
    conn = build_connectivity(model)  # the OMS's own trace of what the fuse feeds
    behind = {conn.load_names[i] for i in conn.downstream_loads(conn.device(FUSE).index)}
    customer = next(c.consumer_number for c in model.customers if c.load is not None
                    and model.loads[c.load].name in behind)
    status = oms.CustomerStatus(oms_pb.CustomerStatusRequest(customers=[customer])).customers[0]
    console.print(f"crew {crew.crew} assigned (stage {crew.stage}); customer care for {customer}: {status.text}")
    for stage in ("en_route", "on_site"):
        oms.ReportCrewStatus(oms_pb.CrewStatusReport(crew_id=crew.crew, status=stage))
        time.sleep(pause / 2)
    oms.UpdateRecord(oms_pb.UpdateRecordRequest(record_id=rid, cause="fuse blown: DT bushing flashover",
                                                note=f"crew {crew.crew}: fuse replaced after the bushing was cleaned"))
    sim.physics.set_switch(FUSE, True)
    sim.solve_now()
    t_back = now_ms()
    _wait(lambda: (o := next((o for o in oms.ListOutages(oms_pb.ListOutagesRequest()).outages if o.id == outage.id),
                             None)) is not None and o.state == "restored" and o.customers_off == 0, 30,
          "the restoration notifications (PRNs) and the checking pings to give every customer back")
    oms.ReportCrewStatus(oms_pb.CrewStatusReport(crew_id=crew.crew, status="available"))
    rec = _wait(lambda: (r := oms.GetRecord(oms_pb.RecordRequest(record_id=rid))).status == "closed" and r, 10,
                "the record to close on the crew's report")
    table = Table(title=f"Outage record {rec.id} ({rec.source}, {rec.device}): its timeline", title_justify="left")
    table.add_column("time (UTC)")
    table.add_column("entry")
    # the OMS's evidence entries and the lifecycle log interleaved by time, the fault as the simulator placed it
    lines = sorted([f"{format_time_ms(t_fault)} fault: {FUSE} blew (simulator)", *rec.notes],
                   key=lambda line: line.split(" ", 1)[0])  # stable: evidence before the log at one time
    for line in lines:
        when, _, text = line.partition(" ")
        table.add_row(when.replace("T", " ").removesuffix("Z"), text)
    console.print(table)
    steps = ", ".join(f"{s.customers} at {format_time(s.time_ms)}" for s in rec.steps)
    console.print(f"cause: {rec.cause}; restoration steps: {steps}; closed {format_time(rec.closed_ms)}")
    summary.add("OMS: fuse blown -> outage predicted from live last gasps (demo time scale 0.1)",
                f"{(t_predicted - t_fault) / 1000:.1f} s")
    summary.add("OMS: supply back -> record restored", f"{(rec.steps[-1].time_ms - t_back) / 1000:.1f} s"
                if rec.steps else "-")
    start = now_ms() - 3_600_000
    idx = client.reliability.Indices(rel_pb.IndicesRequest(start_ms=start, end_ms=now_ms() + 60_000))
    i = idx.indices
    table = Table(title="IEEE 1366 indices of the last hour, from the outage records (unplanned)",
                  title_justify="left")
    for col in ("records", "customers served", "SAIFI", "SAIDI min", "CAIDI min", "MAIFIe", "ASAI"):
        table.add_column(col, justify="right")
    table.add_row(str(idx.records_total), str(i.customers_served), f"{i.saifi:.5f}", f"{i.saidi_min:.4f}",
                  f"{i.caidi_min:.2f}" if i.saifi else "-", f"{i.maifie:.4f}", f"{i.asai:.7f}")
    console.print(table)
    if not i.saifi:
        console.print(f"every interruption of this demo lasted seconds, under the {idx.momentary_threshold_s / 60:.0f}-"
                      "minute momentary threshold: they count in MAIFIe, not in SAIFI and SAIDI (FLISR's faulted "
                      "section counts once its record is closed after the repair)")
    records = oms.ListRecords(oms_pb.ListRecordsRequest(since_ms=start)).records
    table = Table(title="Outage records since the demo began (FLISR and the OMS saw the F2 trip: one record)",
                  title_justify="left")
    for col in ("id", "source", "device", "status", "stage", "customers", "merged into"):
        table.add_column(col)
    for r in sorted(records, key=lambda r: r.id):
        table.add_row(str(r.id), r.source, r.device, r.status, r.stage, str(r.customers_interrupted),
                      str(r.merged_into or ""))
    console.print(table)
    summary.add("IEEE 1366 over the last hour: SAIFI / SAIDI / MAIFIe", f"{i.saifi:.4f} / {i.saidi_min:.3f} min / "
                f"{i.maifie:.4f}")
    plan = client.planned.Schedule(pl_pb.ScheduleRequest(
        title="F5 RMU04 annual maintenance", reason="ring main unit maintenance", switches=["F5-RMU04-LBS2"],
        origin=pl_pb.PLANNED_ORIGIN_ASSET_MANAGEMENT, start_ms=now_ms() + 86_400_000,
        end_ms=now_ms() + 86_400_000 + 4 * 3_600_000))
    notes = client.planned.Notifications(pl_pb.NotificationsRequest(since_seq=0)).notifications
    console.print(f"planned outage {plan.ref} scheduled for tomorrow: {plan.customer_count} customers on "
                  f"{plan.feeder}, {len(notes)} notifications in the customer-care feed")
    stats = ami.stats()
    console.print(f"AMI head-end: {stats.events_sent} meter events in {stats.sent} EndDeviceEvents messages over gRPC")
    time.sleep(pause)


def _now_local() -> Any:
    import datetime

    return datetime.datetime.now().astimezone()
