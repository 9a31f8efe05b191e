"""``dscada client``: the operator's command line over the gRPC API.

Tables are drawn with rich; colours follow quality (comm-lost grey, invalid red, not topical yellow) and alarm
priority. Exit codes: 0 done, 1 the command reached the field but did not succeed (e.g. the field did not answer),
2 the request failed (unknown point, refused, not allowed, server unreachable) with one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import grpc
from rich.console import Console
from rich.live import Live
from rich.table import Table

from models.timebase import now_ms
from scada.api.client import ClientError, ScadaClient
from scada.api.protos import scada_pb2 as pb

DEFAULT_ADDRESS = "127.0.0.1:50151"  # the embedded sample station's grpc_address
_PROG = "dscada client"

_DOUBLE_TEXT = {0: "INTERMEDIATE", 1: "OPEN", 2: "CLOSED", 3: "BAD"}
_SINGLE_TEXT = {0: "OFF", 1: "ON"}
#: Words accepted as command values, per point kind (double: DoubleState 1 = OFF = open, 2 = ON = closed).
_DOUBLE_WORDS = {"open": 1.0, "off": 1.0, "trip": 1.0, "close": 2.0, "closed": 2.0, "on": 2.0}
_SINGLE_WORDS = {"off": 0.0, "open": 0.0, "on": 1.0, "close": 1.0, "closed": 1.0}

_QUALITY_STYLES = (("COMM_LOST", "grey50"), ("INVALID", "red"), ("NOT_TOPICAL", "yellow"))
_PRIORITY_STYLES = {pb.PRIORITY_CRITICAL: "bold red", pb.PRIORITY_HIGH: "red", pb.PRIORITY_MEDIUM: "yellow",
                    pb.PRIORITY_LOW: "cyan"}
_STATUS_OK = pb.CONTROL_STATUS_SUCCESS


class _Fail(Exception):
    """A CLI-side failure with the one line to print."""


# ------------------------------------------------------------------------------------------------ formatting


def format_value(kind: int, value: float) -> str:
    if math.isnan(value):
        return "-"
    if kind == pb.POINT_KIND_DOUBLE:
        return _DOUBLE_TEXT.get(int(value), f"? {value:g}")
    if kind == pb.POINT_KIND_SINGLE:
        return _SINGLE_TEXT.get(int(value), f"? {value:g}")
    if kind == pb.POINT_KIND_COUNTER:
        return f"{value:.0f}"
    return f"{value:.3f}"


def format_time(ms: int) -> str:
    if ms < 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000.0).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def format_age(recv_ms: int, now_ms: int) -> str:
    if recv_ms < 0:
        return "never"
    age_s = max(0.0, (now_ms - recv_ms) / 1000.0)
    if age_s < 60:
        return f"{age_s:.1f} s"
    if age_s < 3600:
        return f"{age_s / 60:.0f} min"
    return f"{age_s / 3600:.1f} h"


def format_quality(names: Sequence[str]) -> str:
    return ",".join(names) if names else "GOOD"


def quality_style(names: Sequence[str]) -> str:
    for name, style in _QUALITY_STYLES:
        if name in names:
            return style
    return ""



def _enum_text(enum: object, number: int, prefix: str) -> str:
    name = enum.Name(number) if number in enum.values() else str(number)  # type: ignore[attr-defined]
    return name.removeprefix(prefix).lower().replace("_", " ")


# ------------------------------------------------------------------------------------------------ commands


class _Cli:
    def __init__(self, client: ScadaClient, out: Console) -> None:
        self.c = client
        self.out = out
        self._kinds: dict[int, int] | None = None

    def kinds(self) -> dict[int, int]:
        if self._kinds is None:
            self._kinds = {d.id: d.kind for d in self.c.list_points()}
        return self._kinds

    def definition(self, name: str) -> pb.PointDefinition:
        for d in self.c.list_points(name):
            if d.name == name:
                return d
        raise ClientError(grpc.StatusCode.NOT_FOUND, f"unknown point {name!r}")

    # -------------------------------------------------------------------------------------- points
    def _points_table(self, defs: Sequence[pb.PointDefinition], values: dict[int, pb.PointValue],
                      title: str) -> Table:
        now = now_ms()
        t = Table(title=title, title_justify="left")
        for col, justify in (("Name", "left"), ("Value", "right"), ("Units", "left"), ("Quality", "left"),
                             ("Source time", "left"), ("Age", "right")):
            t.add_column(col, justify=justify)  # type: ignore[arg-type]
        for d in defs:
            v = values.get(d.id)
            if v is None:
                t.add_row(d.name, "-", d.units, "-", "-", "-")
                continue
            t.add_row(d.name, format_value(d.kind, v.value), d.units, format_quality(v.quality_names),
                      format_time(v.source_time_ms), format_age(v.recv_time_ms, now),
                      style=quality_style(v.quality_names))
        return t

    def rtus(self, args: argparse.Namespace) -> int:
        t = Table(title="RTUs", title_justify="left")
        for col in ("Name", "Kind", "Protocol", "Address", "Link", "Active link", "Since", "Last GI", "Points",
                    "Reason"):
            t.add_column(col)
        for r in self.c.rtus():
            link = "UP" if r.link_up else "DOWN"
            t.add_row(r.name, "FRTU" if r.frtu else "RTU", r.protocol, str(r.common_address), link,
                      r.active_address or "-",
                      format_time(r.since_ms), format_time(r.last_gi_ms), str(r.points), r.reason,
                      style="" if r.link_up else "red")
        self.out.print(t)
        return 0

    def status(self, args: argparse.Namespace) -> int:
        st = self.c.server_status()
        self.out.print(f"[bold]{st.station}[/]: {st.points} points, {st.batches} batches, {st.rows} values received, "
                       f"{st.changes} changes, {st.soe_events} SOE events, {st.stale_marked} marked stale, "
                       f"RTDB inbox {st.inbox_depth}")
        t = Table(title="Subscribers", title_justify="left")
        for col in ("Name", "Pending", "Dropped"):
            t.add_column(col)
        for sub in st.subscribers:
            t.add_row(sub.name, str(sub.pending), str(sub.dropped), style="yellow" if sub.dropped else "")
        self.out.print(t)
        t = Table(title="Protocol adapters", title_justify="left")
        for col in ("Name", "State", "Restarts", "PID", "Last heartbeat", "Counters"):
            t.add_column(col)
        for a in st.adapters:
            counters = ", ".join(f"{k}={v:g}" for k, v in sorted(a.counters.items()))
            t.add_row(a.name, "running" if a.running else "DOWN", str(a.restarts), str(a.pid or "-"),
                      format_time(a.last_heartbeat_ms), counters, style="" if a.running else "red")
        self.out.print(t)
        return 0

    def gi(self, args: argparse.Namespace) -> int:
        sent = self.c.interrogate(args.rtu or "", counters=args.counters)
        what = "counter interrogation" if args.counters else "general interrogation"
        self.out.print(f"{what} sent to: {', '.join(sent) or 'no RTU (adapters down)'}")
        return 0 if sent else 1

    def clock_sync(self, args: argparse.Namespace) -> int:
        sent = self.c.sync_clock(args.rtu or "")
        self.out.print(f"clock synchronisation sent to: {', '.join(sent) or 'no RTU (adapters down)'}")
        return 0 if sent else 1

    def points(self, args: argparse.Namespace) -> int:
        defs = self.c.list_points(args.filter or "")
        values = {v.point: v for v in self.c.read([d.id for d in defs])} if defs else {}
        self.out.print(self._points_table(defs, values, f"{len(defs)} point(s)"))
        return 0

    def watch(self, args: argparse.Namespace) -> int:
        all_defs = {d.name: d for d in self.c.list_points()}
        missing = [n for n in args.names if n not in all_defs]
        if missing:
            raise ClientError(grpc.StatusCode.NOT_FOUND, f"unknown point {missing[0]!r}")
        defs = [all_defs[n] for n in args.names] if args.names else list(all_defs.values())
        values: dict[int, pb.PointValue] = {}
        stream = self.c.subscribe([d.id for d in defs])
        timer = threading.Timer(args.seconds, stream.cancel) if args.seconds else None
        title = "watching {n} point(s), {u} update(s), {d} coalesced"
        updates = dropped = 0
        try:
            if timer is not None:
                timer.start()
            with Live(self._points_table(defs, values, title.format(n=len(defs), u=0, d=0)), console=self.out,
                      refresh_per_second=4, auto_refresh=True) as live:
                last_draw = 0.0
                for msg in stream:
                    values.update((v.point, v) for v in msg.values)
                    updates += 0 if msg.snapshot else len(msg.values)
                    dropped = msg.dropped
                    if time.monotonic() - last_draw >= 0.25 or msg.end_of_snapshot:  # redraw at most 4x/s
                        live.update(self._points_table(defs, values, title.format(n=len(defs), u=updates, d=dropped)))
                        last_draw = time.monotonic()
                live.update(self._points_table(defs, values, title.format(n=len(defs), u=updates, d=dropped)))
        except KeyboardInterrupt:
            pass
        finally:
            if timer is not None:
                timer.cancel()
            stream.cancel()
        return 0

    # -------------------------------------------------------------------------------------- controls
    def _value(self, name: str, text: str) -> tuple[pb.PointDefinition, float]:
        d = self.definition(name)
        words = _DOUBLE_WORDS if d.kind == pb.POINT_KIND_DOUBLE else _SINGLE_WORDS
        word = text.strip().lower()
        if word in words and d.kind in (pb.POINT_KIND_DOUBLE, pb.POINT_KIND_SINGLE, pb.POINT_KIND_COMMAND):
            return d, words[word]
        try:
            return d, float(text)
        except ValueError:
            raise _Fail(f"{name}: value {text!r} is neither a number nor one of {', '.join(sorted(words))}") from None

    def _result(self, res: pb.ControlResult, kind: int) -> int:
        ok = res.status == _STATUS_OK
        status = _enum_text(pb.ControlStatus, res.status, "CONTROL_STATUS_")
        feedback = _enum_text(pb.FeedbackStatus, res.feedback, "FEEDBACK_STATUS_")
        value = "" if res.action == "cancel" else f" {format_value(kind, res.value)}"
        line = (f"{res.action} {res.point_name}{value}: [{'green' if ok else 'bold red'}]{status.upper()}[/]"
                f", feedback {feedback}, {res.elapsed_ms:.0f} ms (request {res.request_id})")
        if res.field_detail:
            line += f" - {res.field_detail}"
        if ok and res.feedback == pb.FEEDBACK_STATUS_NOT_CONFIRMED:
            line += " [yellow](status did not follow)[/]"
        self.out.print(line, highlight=False)
        return 0 if ok else 1

    def select(self, args: argparse.Namespace) -> int:
        d, value = self._value(args.name, args.value)
        return self._result(self.c.select(d.id, value), d.kind)

    def operate(self, args: argparse.Namespace) -> int:
        d, value = self._value(args.name, args.value)
        return self._result(self.c.operate(d.id, value), d.kind)

    def cancel(self, args: argparse.Namespace) -> int:
        d = self.definition(args.name)
        return self._result(self.c.cancel(d.id), d.kind)

    # -------------------------------------------------------------------------------------- alarms
    def alarms(self, args: argparse.Namespace) -> int:
        alarms = self.c.alarms(include_shelved=args.all, include_closed=args.all)
        t = Table(title=f"{len(alarms)} alarm(s)", title_justify="left")
        for col in ("ID", "Priority", "State", "Raised", "Point", "Condition", "Text", "Ack by"):
            t.add_column(col)
        kinds = self.kinds()
        for a in alarms:
            state = _enum_text(pb.AlarmState, a.state, "ALARM_STATE_")
            if a.shelved:
                state += f" (shelved until {format_time(a.shelved_until_ms)[11:19]})"
            point = a.point_name or "(system)"
            if a.point >= 0 and not math.isnan(a.value):
                point += f" = {format_value(kinds.get(a.point, 0), a.value)}"
            t.add_row(str(a.id), _enum_text(pb.Priority, a.priority, "PRIORITY_").upper(), state,
                      format_time(a.raised_ms), point, a.condition, a.text, a.acked_by or "-",
                      style=_PRIORITY_STYLES.get(a.priority, ""))
        self.out.print(t)
        return 0

    def ack(self, args: argparse.Namespace) -> int:
        if args.all == bool(args.ids):
            raise _Fail("ack: give alarm IDs or --all")
        done = self.c.acknowledge(None if args.all else args.ids)
        self.out.print(f"acknowledged {len(done)} alarm(s)" + (f": {', '.join(str(a.id) for a in done)}" if done
                                                                else ""))
        return 0

    def shelve(self, args: argparse.Namespace) -> int:
        a = self.c.shelve(args.id, args.minutes * 60.0, args.reason)
        self.out.print(f"alarm {a.id} ({a.point_name or a.condition}) shelved until {format_time(a.shelved_until_ms)}")
        return 0

    def unshelve(self, args: argparse.Namespace) -> int:
        a = self.c.unshelve(args.id)
        self.out.print(f"alarm {a.id} ({a.point_name or a.condition}) unshelved")
        return 0

    # -------------------------------------------------------------------------------------- history
    def soe(self, args: argparse.Namespace) -> int:
        entries = self.c.soe(limit=args.last)
        kinds = self.kinds()
        t = Table(title=f"last {len(entries)} event(s), newest first", title_justify="left")
        for col in ("Seq", "Event time", "Point", "Value", "Was", "Quality", "Cause"):
            t.add_column(col)
        for e in entries:
            kind = kinds.get(e.point, 0)
            t.add_row(str(e.seq), format_time(e.source_time_ms if e.source_time_ms >= 0 else e.recv_time_ms),
                      e.point_name, format_value(kind, e.value), format_value(kind, e.prev_value),
                      format_quality(e.quality_names), _enum_text(pb.Cause, e.cause, "CAUSE_"),
                      style=quality_style(e.quality_names))
        self.out.print(t)
        return 0

    def history(self, args: argparse.Namespace) -> int:
        d = self.definition(args.name)
        end_ms = now_ms() + 1
        res = self.c.history(d.id, start_ms=end_ms - int(args.minutes * 60_000), end_ms=end_ms,
                             max_points=args.buckets or 0)
        units = f" [{res.units}]" if res.units else ""
        if res.bucket_s > 0:
            t = Table(title=f"{d.name}{units}: {len(res.buckets)} bucket(s) of {res.bucket_s:g} s",
                      title_justify="left")
            for col in ("Start", "Min", "Mean", "Max", "Last", "Count", "Quality"):
                t.add_column(col)
            for b in res.buckets:
                t.add_row(format_time(b.start_ms), format_value(d.kind, b.min), format_value(d.kind, b.mean)
                          if d.kind not in (pb.POINT_KIND_DOUBLE, pb.POINT_KIND_SINGLE) else "-",
                          format_value(d.kind, b.max), format_value(d.kind, b.last), str(b.count),
                          format_quality(_quality_names(b.quality)))
        else:
            t = Table(title=f"{d.name}{units}: {len(res.samples)} sample(s)", title_justify="left")
            for col in ("Time", "Value", "Quality"):
                t.add_column(col)
            for s in res.samples:
                names = _quality_names(s.quality)
                t.add_row(format_time(s.time_ms), format_value(d.kind, s.value), format_quality(names),
                          style=quality_style(names))
        self.out.print(t)
        return 0

    # -------------------------------------------------------------------------------------- tags
    def tags(self, args: argparse.Namespace) -> int:
        tags = self.c.tags()
        t = Table(title=f"{len(tags)} active tag(s)", title_justify="left")
        for col in ("ID", "Target", "Kind", "Operator", "Reason", "Placed"):
            t.add_column(col)
        for tag in tags:
            t.add_row(str(tag.id), tag.target, tag.kind.upper(), tag.operator, tag.reason, format_time(tag.placed_ms),
                      style="yellow" if tag.kind != "info" else "")
        self.out.print(t)
        return 0

    def tag(self, args: argparse.Namespace) -> int:
        tag = self.c.place_tag(args.name, args.kind, args.reason)
        self.out.print(f"tag {tag.id} placed: {tag.kind} on {tag.target} by {tag.operator} ({tag.reason})")
        return 0

    def untag(self, args: argparse.Namespace) -> int:
        tag = self.c.remove_tag(args.id, args.reason)
        self.out.print(f"tag {tag.id} removed: {tag.kind} on {tag.target}")
        return 0

    # -------------------------------------------------------------------------------------- topology
    def colouring(self, args: argparse.Namespace) -> int:
        c = self.c.colouring()
        t = Table(title=f"{c.network}: {len(c.islands)} island(s), colouring version {c.version}",
                  title_justify="left")
        for col in ("Island", "State", "Source", "Feeder", "Buses", "Loads", "Customers"):
            t.add_column(col)
        for x in c.islands:
            state = "ENERGIZED" if x.energized else "DE-ENERGIZED"
            if len(x.source_mrids) > 1:
                state += " (sources in parallel)"
            if x.state_uncertain:
                state += " ?"
            feeders = x.feeder_name or ", ".join(x.feeder_names) or "-"
            t.add_row(str(x.id), state, ", ".join(x.source_names) or "-", feeders, str(x.buses),
                      str(x.loads), str(x.customers), style="" if x.energized else "red")
        self.out.print(t)
        dead = [x.name for x in c.loads if not x.energized]
        if dead:
            shown = ", ".join(dead[:args.max_loads]) + (f", ... ({len(dead) - args.max_loads} more)"
                                                        if len(dead) > args.max_loads else "")
            self.out.print(f"[red]{len(dead)} de-energized load(s), {c.deenergized_customers} customer(s):[/] {shown}")
        else:
            self.out.print("every load is energized")
        doubtful = [f"{s.name} ({'closed' if s.closed else 'open'}, {s.source})" for s in c.switches
                    if s.state_uncertain]
        if doubtful:
            self.out.print(f"[yellow]switch state uncertain:[/] {', '.join(doubtful)}")
        for m in c.markings:
            self.out.print(f"[yellow]marked {m.kind}[/]: {m.element_name or m.element} by {m.operator} "
                           f"(tag {m.tag_id}: {m.reason})")
        return 0

    def trace(self, args: argparse.Namespace) -> int:
        r = self.c.trace(args.element)
        head = f"{r.element.kind} {r.element.name}"
        if not r.energized:
            self.out.print(f"{head}: [red]DE-ENERGIZED[/] (no source reachable over closed switches)")
        else:
            dt = f", distribution transformer {r.distribution_transformer.name}" if r.distribution_transformer.name \
                else ""
            self.out.print(f"{head}: fed by source {r.source.name}, feeder {r.feeder_name or '-'}{dt}")
            path = " -> ".join(f"{s.kind} {s.name}" for s in r.steps)
            self.out.print(f"path to source: {path}")
        if r.downstream_loads:
            loads = ", ".join(x.name for x in r.downstream_loads[:args.max_loads])
            more = f", ... ({len(r.downstream_loads) - args.max_loads} more)" if len(r.downstream_loads) > \
                args.max_loads else ""
            self.out.print(f"supplies {len(r.downstream_loads)} load(s), {r.customer_count} customer(s): "
                           f"{loads}{more}")
        return 0

    def mark(self, args: argparse.Namespace) -> int:
        m = self.c.mark(args.element, args.kind, args.reason)
        self.out.print(f"marking {m.tag_id} placed: {m.element_name or m.element} {m.kind} by {m.operator} "
                       f"({m.reason})")
        return 0

    def unmark(self, args: argparse.Namespace) -> int:
        m = self.c.unmark(args.id, args.reason)
        self.out.print(f"marking {m.tag_id} removed: {m.element_name or m.element} {m.kind}")
        return 0

    def model_info(self, args: argparse.Namespace) -> int:
        m = self.c.model_info()
        self.out.print(f"{m.name}: version {m.version}, {m.buses} buses, {m.lines} lines, {m.transformers} "
                       f"transformers, {m.switches} switches, {m.loads} loads, {m.feeders} feeders")
        self.out.print(f"source {m.source}" + (f", current model kept in {m.persisted_file}" if m.persisted_file
                                               else ""))
        if m.updated_ms:
            self.out.print(f"last updated {format_time(m.updated_ms)} by {m.updated_by}")
        return 0

    def switch_state(self, args: argparse.Namespace) -> int:
        s = self.c.set_manual_switch_state(args.switch, args.state == "closed", args.reason)
        self.out.print(f"switch {s.name} set {'closed' if s.closed else 'open'} ({s.source})")
        return 0

    # -------------------------------------------------------------------------------------- network model
    def model_diff(self, args: argparse.Namespace) -> int:
        try:
            with open(args.file, "rb") as f:
                document = f.read()
        except OSError as exc:
            raise _Fail(f"cannot read {args.file}: {exc.strerror or exc}") from None
        r = self.c.apply_difference(document, dry_run=args.dry_run, source=os.path.basename(args.file))
        verdict = "valid (dry run, not applied)" if not r.applied else f"applied: model version {r.model_version}"
        self.out.print(f"{args.file}: {verdict} — {r.description or 'no description'} ({r.created})")
        t = Table(title=f"{r.model_name}: changes by class", title_justify="left")
        for col in ("Class", "Added", "Removed", "Changed"):
            t.add_column(col)
        for c in r.by_class:
            t.add_row(c.cim_class, str(c.added), str(c.removed), str(c.changed))
        self.out.print(t)
        for label, items in (("added", r.added), ("removed", r.removed), ("changed", r.changed)):
            for o in items:
                props = ", ".join(f"{p.prop} {p.old if p.has_old else '-'} -> {p.new if p.has_new else '-'}"
                                  for p in o.changes)
                self.out.print(f"  {label} {o.cim_class} {o.name or o.mrid}" + (f": {props}" if props else ""))
        return 0

    def export_changes(self, args: argparse.Namespace) -> int:
        r = self.c.export_reconfiguration(permanent=args.permanent, since_normal=args.since_normal,
                                          reason=args.reason)
        if args.output:
            try:
                with open(args.output, "wb") as f:
                    f.write(r.document)
            except OSError as exc:
                raise _Fail(f"cannot write {args.output}: {exc.strerror or exc}") from None
        else:
            sys.stdout.write(r.document.decode("utf-8"))
        show = self.out if args.output else Console(stderr=True, highlight=False, width=200)
        show.print(r.table, markup=False)
        if r.uncertain_switches:
            show.print(f"switch state uncertain, left at the model's state: {', '.join(r.uncertain_switches)}",
                       markup=False)
        if args.output:
            show.print(f"CIM difference written to {args.output} ({len(r.document)} bytes, "
                       f"{len(r.transformers)} DT(s) changed feeder)", markup=False)
        return 0


def _quality_names(quality: int) -> list[str]:
    from models.points import Quality

    return Quality(quality).names()


# ------------------------------------------------------------------------------------------------ entry point


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=_PROG, description="Operator client of a dscada server (gRPC).")
    p.add_argument("--address", default=os.environ.get("DSCADA_ADDRESS", DEFAULT_ADDRESS),
                   help=f"server host:port (default: env DSCADA_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("--token", help="operator token (default: env DSCADA_TOKEN)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer (default 10)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("rtus", help="RTU link states")
    sub.add_parser("status", help="server status: RTDB counters, subscribers and their drops, adapters")
    c = sub.add_parser("gi", help="general (or counter) interrogation of an RTU, or of all")
    c.add_argument("rtu", nargs="?", metavar="RTU")
    c.add_argument("--counters", action="store_true", help="counter interrogation instead")
    c = sub.add_parser("clock-sync", help="synchronise the clock of an RTU, or of all")
    c.add_argument("rtu", nargs="?", metavar="RTU")
    c = sub.add_parser("points", help="table of points with current values")
    c.add_argument("--filter", help="only names containing this text (case-insensitive)")
    c = sub.add_parser("watch", help="live table of points")
    c.add_argument("names", nargs="*", metavar="NAME", help="points to watch (default: all)")
    c.add_argument("--seconds", type=float, default=0.0, help="stop after this many seconds (default: Ctrl-C)")
    c = sub.add_parser("alarms", help="alarm list")
    c.add_argument("--all", action="store_true", help="include shelved alarms and closed history")
    c = sub.add_parser("ack", help="acknowledge alarms")
    c.add_argument("ids", nargs="*", type=int, metavar="ID")
    c.add_argument("--all", action="store_true", help="acknowledge every visible alarm")
    c = sub.add_parser("shelve", help="shelve an alarm for a while")
    c.add_argument("id", type=int, metavar="ID")
    c.add_argument("--minutes", type=float, required=True)
    c.add_argument("--reason", required=True)
    c = sub.add_parser("unshelve", help="unshelve an alarm")
    c.add_argument("id", type=int, metavar="ID")
    for name, text in (("select", "select a point before operate"), ("operate", "operate (execute) a point")):
        c = sub.add_parser(name, help=text)
        c.add_argument("name", metavar="NAME")
        c.add_argument("value", metavar="VALUE", help="number, or open/close (double), on/off (single)")
    c = sub.add_parser("cancel", help="cancel a selection")
    c.add_argument("name", metavar="NAME")
    c = sub.add_parser("soe", help="sequence of events, newest first")
    c.add_argument("--last", type=int, default=50, help="number of events (default 50)")
    c = sub.add_parser("history", help="history of one point")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--minutes", type=float, default=60.0, help="window up to now (default 60)")
    c.add_argument("--buckets", type=int, default=0, help="aggregate into at most this many buckets")
    sub.add_parser("tags", help="active tags")
    c = sub.add_parser("tag", help="place a tag on a point or network element")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--kind", default="hold", choices=("hold", "clearance", "info", "faulted", "parallel_allowed"))
    c.add_argument("--reason", required=True)
    c = sub.add_parser("untag", help="remove a tag")
    c.add_argument("id", type=int, metavar="ID")
    c.add_argument("--reason", default="", help="why the tag is removed")
    c = sub.add_parser("colouring", help="network colouring: islands with source and feeder, de-energized loads")
    c.add_argument("--max-loads", type=int, default=20, help="de-energized loads listed by name (default 20)")
    c = sub.add_parser("trace", help="trace a network element to its source, with the customers it supplies")
    c.add_argument("element", metavar="ELEMENT", help="name or mRID of a bus, line, transformer, switch or load")
    c.add_argument("--max-loads", type=int, default=20, help="supplied loads listed by name (default 20)")
    c = sub.add_parser("mark", help="mark a network element faulted or earthed, or a switch parallel_allowed")
    c.add_argument("element", metavar="ELEMENT")
    c.add_argument("--kind", required=True, choices=("faulted", "earthed", "parallel_allowed"))
    c.add_argument("--reason", required=True)
    c = sub.add_parser("unmark", help="remove a marking")
    c.add_argument("id", type=int, metavar="ID", help="the marking's tag id")
    c.add_argument("--reason", default="", help="why the marking is removed")
    c = sub.add_parser("switch-state", help="set the state of a switch without usable telemetry (audited)")
    c.add_argument("switch", metavar="SWITCH")
    c.add_argument("state", choices=("open", "closed"))
    c.add_argument("--reason", default="")
    c = sub.add_parser("model-info", help="the live network model: name, version, element counts, source file")
    c = sub.add_parser("model-diff", help="apply a CIM difference (GIS update) to the live network model")
    c.add_argument("file", metavar="FILE", help="dm:DifferenceModel RDF/XML")
    c.add_argument("--dry-run", action="store_true", help="validate only; nothing changes")
    c = sub.add_parser("export-changes", help="the reconfiguration (switching, DT feeder changes) as a CIM difference")
    c.add_argument("--since-normal", action="store_true",
                   help="against the normal switch states (default: the states the model holds)")
    c.add_argument("--permanent", action="store_true", help="make the live states the normal ones (new NOPs)")
    c.add_argument("--output", metavar="FILE", help="write the document here (default: stdout, table on stderr)")
    c.add_argument("--reason", default="", help="written into the difference's description")
    return p


def _error_line(exc: ClientError, address: str) -> str:
    if exc.refusal:
        return f"refused ({exc.refusal}): {exc.message.removeprefix(exc.refusal + ': ')}"
    if exc.code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the dscada server at {address}: {exc.message}"
    if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from the dscada server at {address} in time"
    return f"{exc.code.name.lower().replace('_', ' ')}: {exc.message}"


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0)
    err = Console(stderr=True, highlight=False, soft_wrap=True)  # one line, however long
    token = args.token or os.environ.get("DSCADA_TOKEN", "")
    if not token:
        err.print(f"{_PROG}: no token: pass --token or set DSCADA_TOKEN", markup=False)
        return 2
    out = Console(highlight=False)
    if not out.is_terminal:  # piped or captured: wide enough that table rows stay on one line
        out = Console(highlight=False, width=200)
    client = ScadaClient(args.address, token, timeout_s=args.timeout)
    run: Callable[[argparse.Namespace], int] = getattr(_Cli(client, out), args.command.replace("-", "_"))
    try:
        return run(args)
    except ClientError as exc:
        err.print(f"{_PROG}: {_error_line(exc, args.address)}", markup=False)
        return 2
    except _Fail as exc:
        err.print(f"{_PROG}: {exc}", markup=False)
        return 2
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
