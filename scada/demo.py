"""``dscada demo``: the whole spine on the embedded sample station, narrated.

Simulated RTUs (IEC 104 outstations) and the server run on free loopback ports; every step goes through the real
protocol stack and the gRPC API exactly as an operator's client would.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from models.config import load_station_config
from models.points import DoubleState
from models.samples import relocate_station_text, sample_station_path
from models.timebase import now_ms
from rtu_sim.simulator import RtuSimulator
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb
from scada.client_cli import format_quality, format_time, format_value, quality_style
from scada.server import ControlCenter

BREAKER = "SHN/F1/CB"
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


def _values_table(client: ScadaClient, kinds: dict[int, int], units: dict[int, str], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("point", "value", "units", "quality", "field time"):
        table.add_column(col)
    for v in client.read():
        style = quality_style(list(v.quality_names))
        table.add_row(v.name, format_value(kinds[v.point], v.value), units[v.point],
                      format_quality(list(v.quality_names)), format_time(v.source_time_ms), style=style)
    return table


def _alarm_table(alarms: list[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("id", "priority", "state", "point", "text", "raised"):
        table.add_column(col)
    colours = {pb.PRIORITY_CRITICAL: "bold red", pb.PRIORITY_HIGH: "red", pb.PRIORITY_MEDIUM: "yellow"}
    for a in alarms:
        table.add_row(str(a.id), pb.Priority.Name(a.priority).removeprefix("PRIORITY_").lower(),
                      pb.AlarmState.Name(a.state).removeprefix("ALARM_STATE_").lower(), a.point_name or "-",
                      a.text, format_time(a.raised_ms), style=colours.get(a.priority, ""))
    return table


@contextlib.contextmanager
def _running(data_dir: Path) -> Iterator[tuple[ControlCenter, RtuSimulator]]:
    text = relocate_station_text(sample_station_path().read_text(encoding="utf-8"), data_dir)
    cfg_path = data_dir / "station.toml"
    cfg_path.write_text(text, encoding="utf-8")
    config = load_station_config(cfg_path)
    sim = RtuSimulator(config, seed=7)
    center = ControlCenter(config)
    try:
        sim.start()
        center.start()
        yield center, sim
    finally:
        center.stop()
        sim.stop()


def run_demo(*, data_dir: str | None = None, fast: bool = False) -> int:
    pause = 0.5 if fast else 1.5
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="dscada-demo-"))
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            return _run(folder, pause, stack)
        except KeyboardInterrupt:
            console.print("\n[yellow]Interrupted: stopping the server and the simulated RTUs.[/]")
            return 130
        except (DemoError, ClientError) as exc:
            console.print(f"\n[bold red]demo failed:[/] {exc}")
            return 1


def _run(folder: Path, pause: float, stack: contextlib.ExitStack) -> int:
    t_start = time.monotonic()
    summary = _Summary()
    _step(1, "Start simulated RTUs and the control-centre server")
    center, sim = stack.enter_context(_running(folder))
    config = center.config
    console.print(f"Station [bold]{config.name}[/]: {len(config.points)} points on {len(config.rtus)} RTUs")
    for rtu in config.rtus:
        links = " + ".join(rtu.addresses)
        console.print(f"  {'FRTU' if rtu.frtu else 'RTU '} {rtu.name:<10} IEC 104 CA {rtu.common_address:<3} {links}")
    address = f"127.0.0.1:{center.grpc_port}"
    console.print(f"gRPC API on {address}; stores in {folder}")
    ops = {o.role.value: o.token for o in config.operators}
    operator = stack.enter_context(ScadaClient(address, ops["operator"]))
    viewer = stack.enter_context(ScadaClient(address, ops["viewer"]))
    operator.wait_ready(10)
    defs = operator.list_points()
    kinds = {d.id: d.kind for d in defs}
    units = {d.id: d.units for d in defs}
    monitored = [d.id for d in defs if d.kind != pb.POINT_KIND_COMMAND]

    def all_good() -> bool:
        return all(v.quality == 0 for v in operator.read(monitored))

    t0 = time.monotonic()
    _wait(all_good, 30, "every point to report good quality after general interrogation")
    summary.add("RTU links up, all points good after GI", f"{time.monotonic() - t0:.2f} s")

    _step(2, "Live values after general interrogation (gRPC ReadPoints)")
    console.print(_values_table(operator, kinds, units, "Real-time database"))
    with operator.subscribe() as stream:
        counted = [0]

        def count() -> None:
            for msg in stream:
                if not msg.snapshot:
                    counted[0] += len(msg.values)

        reader = threading.Thread(target=count, daemon=True)
        reader.start()
        time.sleep(3 * pause)
    reader.join(2)
    console.print(f"Subscription (gRPC SubscribePoints): {counted[0]} value changes in {3 * pause:.1f} s "
                  "as the simulated load curves move")
    summary.add("live updates streamed in the watch window", str(counted[0]))

    _step(3, f"A fault: the simulator trips breaker {BREAKER} (protection operates)")
    with operator.stream_alarms() as alarm_stream:
        raised: list[Any] = []
        got_alarm = threading.Event()

        def watch_alarms() -> None:
            for ev in alarm_stream:
                if ev.kind == pb.ALARM_EVENT_KIND_RAISED:
                    raised.append((ev, now_ms()))
                    if ev.alarm.point_name == BREAKER:
                        got_alarm.set()

        watcher = threading.Thread(target=watch_alarms, daemon=True)
        watcher.start()
        time.sleep(0.3)
        sim.trip(BREAKER)
        if not got_alarm.wait(10):
            raise DemoError(f"no alarm for {BREAKER} within 10 s")
        time.sleep(0.5)
    breaker_state = operator.read([BREAKER])[0]
    alarm_ev, seen_ms = next((e, t) for e, t in raised if e.alarm.point_name == BREAKER)
    latency_ms = seen_ms - breaker_state.source_time_ms
    console.print(f"{BREAKER} is now [bold red]{format_value(pb.POINT_KIND_DOUBLE, breaker_state.value)}[/]; "
                  f"the alarm reached the operator's stream {latency_ms} ms after the field time tag")
    summary.add("trip: field time tag -> alarm on the gRPC stream", f"{latency_ms} ms")
    console.print(_alarm_table(operator.alarms(), "Active alarms"))

    _step(4, "Sequence of events (gRPC QuerySoe), with the RTU's millisecond time tags")
    soe = operator.soe(start_ms=breaker_state.source_time_ms - 1, oldest_first=True)
    table = Table(title="SOE", title_justify="left")
    for col in ("field time", "point", "from", "to", "cause", "server receive"):
        table.add_column(col)
    for e in soe:
        table.add_row(format_time(e.source_time_ms), e.point_name, format_value(kinds[e.point], e.prev_value),
                      format_value(kinds[e.point], e.value), pb.Cause.Name(e.cause).removeprefix("CAUSE_").lower(),
                      format_time(e.recv_time_ms))
    console.print(table)
    summary.add("SOE entries for the trip", str(len(soe)))

    _step(5, "The operator acknowledges the trip alarms")
    acked = operator.acknowledge([e.alarm.id for e, _ in raised])
    for a in acked:
        console.print(f"  alarm {a.id} '{a.text}' on {a.point_name}: "
                      f"{pb.AlarmState.Name(a.state).removeprefix('ALARM_STATE_').lower()} by {a.acked_by}")
    time.sleep(pause)

    _step(6, "Server-side checks refuse unsafe or unauthorised commands before anything reaches the field")
    for who, client, action in (("viewer", viewer, "select"), ("operator", operator, "operate without select")):
        try:
            if action == "select":
                client.select(BREAKER, DoubleState.ON)
            else:
                client.operate(BREAKER, DoubleState.ON)
            raise DemoError(f"{who} {action} was not refused")
        except ClientError as exc:
            console.print(f"  {who} {action}: [yellow]{exc.code.name}[/] {exc.message}")
    tag = operator.place_tag(BREAKER, "hold", "line crew on F1 feeder: do not close")
    try:
        operator.select(BREAKER, DoubleState.ON)
        raise DemoError("a tagged breaker was selected")
    except ClientError as exc:
        console.print(f"  select while tagged: [yellow]{exc.code.name}[/] {exc.message}")
    operator.remove_tag(tag.id, "crew clear, feeder patrolled")
    console.print("  hold tag removed: crew clear, feeder patrolled")
    time.sleep(pause)

    _step(7, f"Reclose {BREAKER} by select-before-operate through gRPC")
    sel = operator.select(BREAKER, DoubleState.ON)
    console.print(f"  select:  {pb.ControlStatus.Name(sel.status).removeprefix('CONTROL_STATUS_').lower()}, "
                  f"{sel.field_detail} ({sel.elapsed_ms:.0f} ms)")
    op = operator.operate(BREAKER, DoubleState.ON)
    fb = pb.FeedbackStatus.Name(op.feedback).removeprefix("FEEDBACK_STATUS_").lower()
    console.print(f"  operate: {pb.ControlStatus.Name(op.status).removeprefix('CONTROL_STATUS_').lower()}, "
                  f"status feedback {fb} ({op.elapsed_ms:.0f} ms)")
    if op.status != pb.CONTROL_STATUS_SUCCESS or op.feedback != pb.FEEDBACK_STATUS_CONFIRMED:
        raise DemoError(f"reclose failed: {op}")
    summary.add("reclose: select + operate + status feedback", f"{sel.elapsed_ms + op.elapsed_ms:.0f} ms")
    _wait(lambda: not any(a.point_name == BREAKER for a in operator.alarms()), 10,
          "the breaker alarm to return to normal")
    console.print(f"{BREAKER} is {format_value(pb.POINT_KIND_DOUBLE, operator.read([BREAKER])[0].value)}; "
                  "its acknowledged alarm closed on return to normal")
    still_open = operator.alarms()
    if still_open:
        console.print(_alarm_table(still_open, "Open alarms after the reclose"))
    else:
        console.print("No alarm is open: the protection flag reset with the reclose.")
    audit = operator.audit(point=BREAKER, limit=20)
    summary.add("audit records for the breaker", str(len(audit)))

    _step(8, "Summary")
    stats = sim.stats()
    summary.add("IEC 104 reports sent by the simulated RTUs", str(stats.total_sent))
    summary.add("adapter restarts", str(sum(s.restarts for s in center.supervisors.values())))
    summary.add("demo duration", f"{time.monotonic() - t_start:.1f} s")
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("measured", justify="right")
    for what, value in summary.rows:
        table.add_row(what, value)
    console.print(table)
    console.print("[green]Demo complete.[/] Stopping the server and the simulated RTUs.")
    return 0
