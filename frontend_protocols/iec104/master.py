"""IEC 60870-5-104 master adapter: one c104.Client serving every configured IEC 104 RTU, run in its own process.

Data path: c104 calls a per-point callback on its receive thread; the callback only appends the raw information to a
buffer under a lock. The adapter's main loop converts the buffer to ``UPDATE_DTYPE`` rows and sends one
``UpdateBatch`` at most every ``FLUSH_PERIOD_S`` (or at ``FLUSH_MAX_ROWS``), keeping link events and
``InterrogationDone`` in order with the rows around them.

Links: every address of an RTU gets its own c104 connection, created muted (STOPDT). The adapter starts data
transfer (STARTDT) on exactly one of them, the active link; the others stay open as hot standby, as in an
IEC 60870-5-104 redundancy group. When the active link drops, an open standby is activated at once.

Blocking c104 calls (commands wait for ACT_CON/ACT_TERM, interrogations for ACT_TERM) run on short-lived worker
threads; their results come back through a queue the main loop drains, so the receive path never waits.
"""

# No ``from __future__ import annotations`` here: c104 validates a callback by comparing str(inspect.signature(cb))
# with its expected text, so the annotations must be the real c104 classes, not strings.

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import c104
import numpy as np

from frontend_protocols.channel import HEARTBEAT_PERIOD_S, AdapterChannel, Heartbeat, Shutdown
from frontend_protocols.dispatch import RequestRouter, select_rtus
from frontend_protocols.errors import FrontendError
from frontend_protocols.held_selections import HeldSelections
from frontend_protocols.iec104.apdu import (
    C_CI_NA_1,
    C_IC_NA_1,
    COT_ACTIVATION_TERM,
    ELEMENT_LENGTH,
    TYPE_ID,
    CommandAnswer,
    parse_command_answer,
)
from frontend_protocols.iec104.mapping import (
    COMMAND_TYPE,
    PointMap,
    asdu_size_ok,
    cause_from_cot,
    cp56_invalid,
    epoch_ms_now,
    quality_from_iec,
    raw_setpoint,
    time_tag_ms,
)
from models.commands import (
    ClockSyncRequest,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import Protocol, RtuConfig, StationConfig
from models.points import ControlType, DoubleState, PointDef, PointKind
from models.updates import UPDATE_DTYPE, Cause, InterrogationDone, LinkEvent, UpdateBatch

log = logging.getLogger(__name__)

FLUSH_PERIOD_S = 0.02  # longest time a received value waits in the adapter
FLUSH_MAX_ROWS = 1000  # a batch is sent early once it holds this many rows
TICK_RATE_MS = 50  # c104's minimum; reception is event driven and does not depend on it
GI_RETRY_S = 2.0  # a failed GI is repeated after this long, not only at the next gi_period_s
MIN_COMMAND_TIMEOUT_S = 15.0  # c104's own wait must outlast any request time-out so a late ACT_CON is not a refusal

_OPEN = c104.ConnectionState.OPEN
_KNOWN_TYPE_IDS = frozenset(int(t) for t in c104.Type.__members__.values())
_OPEN_MUTED = c104.ConnectionState.OPEN_MUTED
# c104 2.2.1 has no stand-alone select: the wire select goes out right before the execute, and the RTU's own select
# time-out then cannot expire between the two. The selection is held in the adapter.
_SELECTED = "selected (select sent to the field with the execute)"


class Iec104AdapterError(FrontendError):
    """The IEC 104 adapter cannot be built from the configuration it was given."""


@dataclass(slots=True)
class _Link:
    """One c104 connection to one address of an RTU."""

    address: str
    conn: c104.Connection
    station: c104.Station
    commands: dict[int, c104.Point] = field(default_factory=dict)  # control IOA -> client command point

    def state(self) -> c104.ConnectionState:
        return self.conn.state


@dataclass(slots=True)
class _Rtu:
    cfg: RtuConfig
    links: list[_Link]
    controls: dict[int, PointDef]  # control IOA -> point
    backoff_s: float
    active: int = 0
    up: bool = False
    activating_since: float | None = None  # STARTDT sent, waiting for its confirmation
    next_activation: float = 0.0
    next_gi: float = math.inf
    gi_running: bool = False
    ci_running: bool = False
    gi_generation: int = 0  # tells a late c104 result of an old interrogation from the current one
    gi_deadline: float = math.inf  # no ACT_TERM by then: the GI failed
    ci_deadline: float = math.inf
    has_counters: bool = False  # integrated totals are not part of a GI: a counter interrogation follows it
    selected: HeldSelections[int] = field(default_factory=lambda: HeldSelections(_SELECTED))  # by control IOA

    @property
    def link(self) -> _Link:
        return self.links[self.active]


@dataclass(frozen=True, slots=True)
class _PendingControl:
    request: ControlRequest
    rtu: _Rtu
    started: float  # monotonic
    deadline: float


@dataclass(frozen=True, slots=True)
class _WorkDone:
    """Result of a blocking c104 call made on a worker thread."""

    what: str  # "control", "gi", "ci", "clock"
    key: Any  # request id for controls, the _Rtu otherwise
    ok: bool
    error: str
    finished: float  # monotonic


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _command_info(ctype: ControlType, point: PointDef, value: float) -> c104.Information:
    """The c104 information object of a command; raises ValueError naming the point for a value it cannot take."""
    if ctype is ControlType.SINGLE:
        if value not in (0, 1):
            raise ValueError(f"single command {point.name}: value {value} is not 0 or 1")
        return c104.SingleCmd(on=bool(value))
    if ctype is ControlType.DOUBLE:
        if value not in (DoubleState.OFF, DoubleState.ON):
            raise ValueError(f"double command {point.name}: value {value} is not OFF (1) or ON (2)")
        return c104.DoubleCmd(state=c104.Double.ON if value == DoubleState.ON else c104.Double.OFF)
    raw = raw_setpoint(point, value)
    if ctype is ControlType.SETPOINT_FLOAT:
        return c104.ShortCmd(target=raw)
    scaled = round(raw)
    if not -32768 <= scaled <= 32767:
        raise ValueError(f"scaled set-point {point.name}: raw value {scaled} outside -32768..32767")
    return c104.ScaledCmd(target=c104.Int16(scaled))


class Iec104Master:
    """The adapter: build with the configuration, then ``run()`` until Shutdown or the channel closes."""

    def __init__(self, channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
        self._channel = channel
        self._adapter = adapter
        self._lock = threading.Lock()  # guards _rows, _events, _first_row_t and _counters (callback threads)
        self._rows: list[tuple[Any, ...]] = []
        self._events: list[tuple[int, Any]] = []  # (rows buffered before it, message): keeps the order of the wire
        self._first_row_t = 0.0
        self._counters: dict[str, float] = {}
        self._done: queue.SimpleQueue[_WorkDone] = queue.SimpleQueue()
        # Command confirmations read off the wire (connection "ip:port", answer): they decide each command.
        self._wire: queue.SimpleQueue[tuple[str, CommandAnswer]] = queue.SimpleQueue()
        self._wire_decided: dict[int, ControlStatus] = {}  # request id -> status, until c104's own result comes
        self._pending: dict[int, _PendingControl] = {}
        self._rtus: dict[str, _Rtu] = {}
        self._requests = RequestRouter(
            f"IEC 104 adapter {adapter}", log, control=self._on_control, interrogation=self._on_interrogation,
            clock_sync=self._on_clock_sync, count=self._count, answer=self._answer, in_progress=self._pending)

        max_ctl_s = max((p.control.timeout_s for p in config.points if p.control is not None), default=0.0)
        self._command_timeout_s = max(MIN_COMMAND_TIMEOUT_S, max_ctl_s + 5.0)
        self._client = c104.Client(tick_rate_ms=TICK_RATE_MS, command_timeout_ms=int(self._command_timeout_s * 1000))
        self._client.on_new_point(callable=self._on_new_point)
        self._client.on_new_station(callable=self._on_new_station)
        for name in rtus:
            cfg = config.rtu(name)
            if cfg.protocol is not Protocol.IEC104:
                raise Iec104AdapterError(f"RTU {name!r} speaks {cfg.protocol.value}, not iec104")
            self._rtus[name] = self._build_rtu(cfg, config.points_of_rtu(name))

    # ----------------------------------------------------------------------------------------------- building
    def _build_rtu(self, cfg: RtuConfig, points: tuple[PointDef, ...]) -> _Rtu:
        controls = {p.control.address: p for p in points if p.control is not None}
        links = []
        for address in cfg.addresses:
            host, port = _split_address(address)
            # MUTED: connected but no STARTDT, so a standby link carries no data until the adapter activates it.
            conn = self._client.add_connection(ip=host, port=port, init=c104.Init.MUTED)
            if conn is None:
                raise Iec104AdapterError(f"RTU {cfg.name!r}: c104 refused a second connection to {address}")
            params = conn.protocol_parameters
            params.connection_timeout = max(1, math.ceil(cfg.connect_timeout_s))  # t0
            # t2 (acknowledge interval) must stay below t1; c104's default is 10 s
            params.confirm_interval = max(1, min(params.confirm_interval, cfg.t1_s - 1))
            params.message_timeout = cfg.t1_s  # t1: a sent frame (or TESTFR) must be acknowledged within t1
            params.keep_alive_interval = cfg.t3_s  # t3: TESTFR after this long idle; lost after 3 unanswered
            conn.on_unexpected_message(callable=self._on_unexpected_message)
            conn.on_receive_raw(callable=self._on_raw)
            station = conn.add_station(common_address=cfg.common_address)
            link = _Link(address, conn, station)
            for p in points:
                if p.source.type_id:
                    self._add_monitor_point(cfg, station, p)
                if p.control is not None:
                    mode = (
                        c104.CommandMode.SELECT_AND_EXECUTE
                        if p.control.mode.selects
                        else c104.CommandMode.DIRECT
                    )
                    ctype = getattr(c104.Type, COMMAND_TYPE[p.control.type])
                    cmd = station.add_point(io_address=p.control.address, type=ctype, command_mode=mode)
                    if cmd is None:
                        raise Iec104AdapterError(f"RTU {cfg.name!r}: cannot add command IOA {p.control.address}")
                    link.commands[p.control.address] = cmd
            links.append(link)
        has_counters = any(p.kind is PointKind.COUNTER for p in points)
        return _Rtu(cfg=cfg, links=links, controls=controls, backoff_s=cfg.reconnect_backoff_s,
                    has_counters=has_counters)

    def _add_monitor_point(self, cfg: RtuConfig, station: c104.Station, p: PointDef) -> None:
        try:
            ctype = getattr(c104.Type, p.source.type_id)
        except AttributeError:
            raise Iec104AdapterError(f"point {p.name!r}: c104 has no type {p.source.type_id!r}") from None
        cp = station.add_point(io_address=p.source.address, type=ctype)
        if cp is None:
            raise Iec104AdapterError(f"point {p.name!r}: cannot add IOA {p.source.address} on RTU {cfg.name!r}")
        cp.on_receive(callable=self._make_on_receive(PointMap.of(p)))

    def _make_on_receive(self, pm: PointMap) -> Any:
        def on_receive(
            point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
        ) -> c104.ResponseState:
            # Runs on c104's receive thread: copy the raw parts only; scaling and mapping happen in the main loop.
            try:
                info = point.info
                raw = message.raw  # for the ASDU size check and the time tag's IV bit, which c104 drops
                item = (pm, info.value, info.quality, info.recorded_at, message.cot, raw)
                with self._lock:  # the buffer is swapped on flush: look it up through self each time
                    if not self._rows:
                        self._first_row_t = time.monotonic()
                    self._rows.append(item)
            except Exception:  # a raising callback is silently removed by c104: never let one escape
                self._count("callback_errors")
            return c104.ResponseState.NONE

        return on_receive

    # ----------------------------------------------------------------------------------------------- callbacks
    def _on_new_point(self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type) -> None:
        # Data for an IOA that is not configured. Adding a counting point keeps c104 from dropping the rest of the
        # ASDU (it aborts a message at the first unknown IOA) without the value ever reaching the RTDB.
        try:
            cp = station.add_point(io_address=io_address, type=point_type)
            if cp is None:
                self._count("unknown_ioa")
            else:
                cp.on_receive(callable=self._on_unknown_receive)
        except Exception:
            self._count("callback_errors")

    def _on_new_station(self, client: c104.Client, connection: c104.Connection, common_address: int) -> None:
        # Data for a common address that is not configured: c104 drops it; count it so a misaddressed RTU shows.
        self._count("unknown_common_address")

    def _on_unknown_receive(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        self._count("unknown_ioa")  # cannot raise: a dict update under a lock
        return c104.ResponseState.NONE

    def _on_unexpected_message(
        self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc
    ) -> None:
        try:
            self._count(f"unexpected_{cause.name.lower()}")
        except Exception:
            self._count("callback_errors")

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        try:
            if len(data) > 6 and not data[2] & 0x01 and data[6] not in _KNOWN_TYPE_IDS:
                self._count("unknown_type_id")  # lib60870 drops it silently
                return
            if len(data) > 6 and data[6] in ELEMENT_LENGTH:  # cheap test first: this runs for every frame
                answer = parse_command_answer(data)
                if answer is not None:
                    self._wire.put((f"{connection.ip}:{connection.port}", answer))
        except Exception:
            self._count("callback_errors")

    def _count(self, name: str, n: float = 1.0) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0.0) + n

    # ----------------------------------------------------------------------------------------------- main loop
    def run(self) -> None:
        self._client.start()  # opens every link; all stay muted until _supervise activates one per RTU
        next_beat = 0.0
        try:
            while True:
                now = time.monotonic()
                if now >= next_beat:
                    # Half the period: a loaded machine must not make the supervisor see silence.
                    self._heartbeat()
                    next_beat = now + HEARTBEAT_PERIOD_S / 2
                for rtu in self._rtus.values():
                    self._supervise(rtu, now)
                self._drain_wire()  # before c104's own results: the wire decides commands
                self._drain_work(now)
                self._expire_controls(now)
                self._flush()
                with self._lock:
                    waiting = bool(self._rows)
                msg = self._channel.recv(0.005 if waiting else 0.02)
                if msg is None:
                    continue
                if isinstance(msg, Shutdown) or self._channel.closed:
                    break
                self._requests.handle(msg)
        finally:
            self._client.stop()
            self._flush(force=True)

    def _heartbeat(self) -> None:
        with self._lock:
            counters = tuple(sorted(self._counters.items()))
        self._channel.send(Heartbeat(self._adapter, epoch_ms_now(), counters))

    def _on_interrogation(self, msg: InterrogationRequest) -> None:
        for rtu in select_rtus(self._rtus, msg.rtu, self._count):
            self._start_interrogation(rtu, counters=msg.counters)

    def _on_clock_sync(self, msg: ClockSyncRequest) -> None:
        for rtu in select_rtus(self._rtus, msg.rtu, self._count):
            self._start_clock_sync(rtu)

    # ----------------------------------------------------------------------------------------------- batching
    def _event(self, msg: Any) -> None:
        """Queue a message behind every row already buffered, so the RTDB sees it in wire order."""
        with self._lock:
            self._events.append((len(self._rows), msg))

    def _flush(self, *, force: bool = False) -> None:
        with self._lock:
            if not self._rows and not self._events:
                return
            due = (
                force
                or self._events
                or len(self._rows) >= FLUSH_MAX_ROWS
                or time.monotonic() - self._first_row_t >= FLUSH_PERIOD_S
            )
            if not due:
                return
            rows, events = self._rows, self._events
            self._rows, self._events = [], []
            if rows:  # how long the oldest value waited in the adapter: its share of the field->RTDB latency
                age_ms = (time.monotonic() - self._first_row_t) * 1000.0
                self._counters["flush_age_max_ms"] = max(self._counters.get("flush_age_max_ms", 0.0), age_ms)
        start = 0
        for index, msg in events:
            if index > start:
                self._send_rows(rows[start:index])
                start = index
            self._channel.send(msg)
        if start < len(rows):
            self._send_rows(rows[start:])

    def _send_rows(self, items: list[tuple[Any, ...]]) -> None:
        out = np.empty(len(items), dtype=UPDATE_DTYPE)
        bad = nonfinite = malformed = 0
        for i, (pm, value, quality, recorded_at, cot, raw) in enumerate(items):
            try:
                time_iv = pm.timed and cp56_invalid(raw, pm.ioa)
                q = quality_from_iec(int(quality), counter=pm.counter, time_invalid=time_iv)
                cause = cause_from_cot(cot.value)
                eng = pm.engineering(float(value))
                if not math.isfinite(eng):  # NaN/inf from a device (or a scale overflow) is not a measurement
                    q |= 0x0001  # Quality.INVALID
                    nonfinite += 1
                if not asdu_size_ok(raw):  # the VSQ announced more (or fewer) objects than the ASDU holds
                    q |= 0x0001
                    malformed += 1
                out[i] = (pm.point, eng, q, time_tag_ms(recorded_at), cause)
            except (TypeError, ValueError, OverflowError, AttributeError):
                out[i] = (pm.point, math.nan, 0x0001, -1, Cause.SPONTANEOUS)  # keep the row, flagged INVALID
                bad += 1
        received_ms = epoch_ms_now()
        for start in range(0, len(out), FLUSH_MAX_ROWS):
            self._channel.send(UpdateBatch(self._adapter, out[start : start + FLUSH_MAX_ROWS], received_ms))
        self._count("rx_points", len(items))
        self._count("batches", math.ceil(len(items) / FLUSH_MAX_ROWS))
        if bad:
            self._count("conversion_errors", bad)
        if nonfinite:
            self._count("invalid_values", nonfinite)
        if malformed:
            log.warning("IEC 104 adapter %s: %d values from ASDUs whose length disagrees with their VSQ",
                        self._adapter, malformed)
            self._count("malformed_asdu", malformed)

    # ----------------------------------------------------------------------------------------------- links
    def _supervise(self, rtu: _Rtu, now: float) -> None:
        for i, link in enumerate(rtu.links):
            if i != rtu.active and link.state() == _OPEN:
                link.conn.mute()  # a standby must not report: the RTDB would get every value twice
        if rtu.up:
            state = rtu.link.state()
            if state != _OPEN:
                self._link_lost(rtu, now, f"link {rtu.link.address} lost (state {state.name})")
            elif now >= rtu.next_gi and not rtu.gi_running:
                self._start_interrogation(rtu, counters=False)
            elif rtu.gi_running and now >= rtu.gi_deadline:
                log.warning("IEC 104 adapter %s: no ACT_TERM for the GI of %s", self._adapter, rtu.cfg.name)
                self._gi_finished(rtu, False)
            if rtu.ci_running and now >= rtu.ci_deadline:
                rtu.ci_running = False
                self._count("ci_failed")
            return
        if now < rtu.next_activation:
            return
        if rtu.activating_since is not None:
            state = rtu.link.state()
            if state == _OPEN:
                self._link_up(rtu, now)
            elif state != _OPEN_MUTED or now - rtu.activating_since > rtu.cfg.connect_timeout_s:
                self._count("activation_failures")
                rtu.activating_since = None
                rtu.active = (rtu.active + 1) % len(rtu.links)
            return
        # Down and idle: activate the current link if it is open, else any open standby.
        for i in [rtu.active] + [j for j in range(len(rtu.links)) if j != rtu.active]:
            state = rtu.links[i].state()
            if state in (_OPEN, _OPEN_MUTED):
                rtu.active = i
                rtu.activating_since = now
                if state == _OPEN_MUTED:
                    rtu.links[i].conn.unmute()  # STARTDT act; the state turns OPEN on STARTDT con
                return

    def _link_up(self, rtu: _Rtu, now: float) -> None:
        rtu.up = True
        rtu.activating_since = None
        self._count("link_up")
        self._event(LinkEvent(self._adapter, rtu.cfg.name, True, address=rtu.link.address, time_ms=epoch_ms_now()))
        self._start_interrogation(rtu, counters=False)

    def _link_lost(self, rtu: _Rtu, now: float, reason: str) -> None:
        rtu.up = False
        rtu.gi_running = rtu.ci_running = False  # their waits end by c104's time-out; a new link starts afresh
        rtu.selected.clear()
        rtu.next_gi = math.inf
        self._count("link_down")
        self._event(
            LinkEvent(self._adapter, rtu.cfg.name, False, address=rtu.link.address, reason=reason,
                      time_ms=epoch_ms_now())
        )
        for rid, pend in list(self._pending.items()):
            if pend.rtu is rtu:  # c104 would only give up at its own command time-out
                del self._pending[rid]
                self._answer(pend.request, ControlStatus.LINK_DOWN, reason, pend.started)
        standby = [i for i, link in enumerate(rtu.links) if i != rtu.active and link.state() in (_OPEN, _OPEN_MUTED)]
        if standby:
            rtu.active = standby[0]
            rtu.next_activation = now  # hot standby: switch at once
        else:
            # Nothing to switch to: wait before activating again, doubling while the link keeps failing.
            rtu.next_activation = now + rtu.backoff_s
            rtu.backoff_s = min(rtu.backoff_s * 2, rtu.cfg.reconnect_backoff_max_s)
            if len(rtu.links) > 1:
                rtu.active = (rtu.active + 1) % len(rtu.links)

    # ----------------------------------------------------------------------------------------------- workers
    def _spawn(self, what: str, key: Any, call: Any) -> None:
        def work() -> None:
            ok, error = False, ""
            try:
                ok = bool(call())
            except Exception as exc:  # c104 raises e.g. "command ... already running!"
                error = f"{type(exc).__name__}: {exc}"
            self._done.put(_WorkDone(what, key, ok, error, time.monotonic()))

        threading.Thread(target=work, name=f"iec104-{what}", daemon=True).start()

    def _start_interrogation(self, rtu: _Rtu, *, counters: bool) -> None:
        if not rtu.up:
            self._count("interrogations_skipped_link_down")
            return
        conn, ca = rtu.link.conn, rtu.cfg.common_address
        if counters:
            if rtu.ci_running:
                return
            rtu.ci_running = True
            rtu.ci_deadline = time.monotonic() + self._command_timeout_s
            self._spawn("ci", (rtu, rtu.gi_generation),
                        lambda: conn.counter_interrogation(common_address=ca, wait_for_response=False))
            return
        if rtu.gi_running:
            return
        rtu.gi_running = True
        rtu.gi_generation += 1
        now = time.monotonic()
        rtu.next_gi = now + rtu.cfg.gi_period_s
        rtu.gi_deadline = now + self._command_timeout_s
        # Sent without c104's wait: the ACT_CON/ACT_TERM read off the wire decide the GI. c104 2.2.1 misses an
        # answer that comes before its wait starts (seen ~1 % against a fast RTU); the missed wait then blocks every
        # further GI on that connection with "already running" until its command time-out.
        self._spawn("gi", (rtu, rtu.gi_generation),
                    lambda: conn.interrogation(common_address=ca, wait_for_response=False))

    def _start_clock_sync(self, rtu: _Rtu) -> None:
        if not rtu.up:
            self._count("clock_sync_skipped_link_down")
            return
        conn, ca = rtu.link.conn, rtu.cfg.common_address
        self._spawn("clock", rtu, lambda: conn.clock_sync(common_address=ca, wait_for_response=True))

    def _drain_work(self, now: float) -> None:
        while True:
            try:
                done = self._done.get_nowait()
            except queue.Empty:
                return
            if done.what == "control":
                self._control_done(done)
            elif done.what == "gi":
                rtu, generation = done.key
                # ok means sent: the wire decides the rest. Else: decided on the wire already, or link lost.
                if rtu.gi_running and generation == rtu.gi_generation and not done.ok:
                    log.warning("IEC 104 adapter %s: GI of %s not sent: %s", self._adapter, rtu.cfg.name,
                                done.error or "c104 refused it")
                    self._gi_finished(rtu, False)
            elif done.what == "ci":
                rtu, generation = done.key
                if rtu.ci_running and generation == rtu.gi_generation and not done.ok:
                    rtu.ci_running = False
                    self._count("ci_failed")
            else:
                self._count("clock_sync_done" if done.ok else "clock_sync_failed")

    # ----------------------------------------------------------------------------------------------- commands
    def _answer(self, req: ControlRequest, status: ControlStatus, detail: str, started: float) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000.0
        self._count(f"control_{status.value}")
        self._event(ControlResult(req.request_id, status, detail, elapsed_ms))

    def _on_control(self, req: ControlRequest) -> None:
        started = time.monotonic()
        rtu = self._rtus.get(req.rtu)
        point = rtu.controls.get(req.address) if rtu is not None else None
        if rtu is None or point is None or req.common_address != rtu.cfg.common_address:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS,
                         f"no command object CA {req.common_address} IOA {req.address} on RTU {req.rtu!r}", started)
            return
        control = point.control
        assert control is not None
        if control.type is not req.type:
            self._answer(req, ControlStatus.UNKNOWN_ADDRESS,
                         f"IOA {req.address} on {req.rtu} is a {control.type.value} command, not {req.type.value}",
                         started)
            return
        if req.request_id in self._pending:
            self._answer(req, ControlStatus.ERROR, f"request id {req.request_id} is already in progress", started)
            return
        if not rtu.up:
            self._answer(req, ControlStatus.LINK_DOWN, f"RTU {req.rtu} is not connected", started)
            return
        verdict = rtu.selected.decide(req, req.address, point, started)
        if verdict is not None:
            self._answer(req, *verdict, started)
            return
        try:
            info = _command_info(control.type, point, req.value)
        except ValueError as exc:
            self._answer(req, ControlStatus.ERROR, str(exc), started)
            return
        cmd = rtu.link.commands[req.address]
        cmd.info = info
        self._pending[req.request_id] = _PendingControl(req, rtu, started, started + req.timeout_s)
        self._spawn("control", req.request_id, lambda: cmd.transmit(cause=c104.Cot.ACTIVATION))

    def _gi_finished(self, rtu: _Rtu, ok: bool) -> None:
        rtu.gi_running = False
        if not ok:
            self._count("gi_failed")
            rtu.next_gi = min(rtu.next_gi, time.monotonic() + GI_RETRY_S)  # points stay unconfirmed until one succeeds
            return
        rtu.backoff_s = rtu.cfg.reconnect_backoff_s  # a full GI proves the link healthy
        self._count("gi_done")
        self._event(InterrogationDone(self._adapter, rtu.cfg.name, epoch_ms_now()))
        if rtu.has_counters:
            self._start_interrogation(rtu, counters=True)

    def _interrogation_answer(self, address: str, ans: CommandAnswer) -> None:
        """ACT_TERM ends an interrogation; a negative ACT_CON or COT 44..47 fails it."""
        for rtu in self._rtus.values():
            if not rtu.up or rtu.link.address != address or rtu.cfg.common_address != ans.common_address:
                continue
            failed = bool(ans.refusal)
            if ans.cot != COT_ACTIVATION_TERM and not failed:
                return  # positive ACT_CON: the data and the ACT_TERM follow
            if ans.type_id == C_IC_NA_1 and rtu.gi_running:
                self._gi_finished(rtu, not failed)
            elif ans.type_id == C_CI_NA_1 and rtu.ci_running:
                rtu.ci_running = False
                self._count("ci_failed" if failed else "ci_done")
            return

    def _drain_wire(self) -> None:
        while True:
            try:
                address, ans = self._wire.get_nowait()
            except queue.Empty:
                return
            if ans.type_id in (C_IC_NA_1, C_CI_NA_1):
                self._interrogation_answer(address, ans)
                continue
            if ans.cot == COT_ACTIVATION_TERM:
                continue  # the ACT_CON decided already; a late ACT_TERM must never flip a refusal
            for rid, pend in list(self._pending.items()):
                req = pend.request
                if (pend.rtu.link.address != address or req.address != ans.ioa
                        or req.common_address != ans.common_address or TYPE_ID[COMMAND_TYPE[req.type]] != ans.type_id):
                    continue
                refusal = ans.refusal
                if refusal:
                    status = ControlStatus.REFUSED_BY_FIELD
                elif ans.select:
                    break  # select confirmed: the execute follows, and its ACT_CON decides
                else:
                    status = ControlStatus.SUCCESS
                del self._pending[rid]
                self._wire_decided[rid] = status
                self._answer(req, status, refusal or "positive confirmation", pend.started)
                break
            else:
                self._count("unmatched_confirmations")

    def _control_done(self, done: _WorkDone) -> None:
        if done.key in self._pending:
            self._drain_wire()  # an ACT_CON queued just before c104's own result decides first
        pend = self._pending.pop(done.key, None)
        if pend is None:
            wire = self._wire_decided.pop(done.key, None)
            if wire is None:
                self._count("late_control_results")  # already answered TIMEOUT or LINK_DOWN
            elif (wire is ControlStatus.SUCCESS) != done.ok:
                self._count("c104_result_disagreements")  # c104 missed or flipped what the wire said
            return
        # No confirmation on the wire: c104's own result says why (time-out, link lost, error).
        elapsed_s = done.finished - pend.started
        if done.ok:
            status, detail = ControlStatus.SUCCESS, "positive confirmation"
        elif done.error:
            status, detail = ControlStatus.ERROR, done.error
        elif not pend.rtu.up or pend.rtu.link.state() != _OPEN:
            status, detail = ControlStatus.LINK_DOWN, f"link to {pend.rtu.cfg.name} lost during the command"
        elif elapsed_s >= self._command_timeout_s - 0.5:
            status, detail = ControlStatus.TIMEOUT, f"no confirmation within {self._command_timeout_s:.0f} s"
        else:
            status, detail = ControlStatus.REFUSED_BY_FIELD, "negative confirmation from the RTU"
        self._answer(pend.request, status, detail, pend.started)

    def _expire_controls(self, now: float) -> None:
        for rid, pend in list(self._pending.items()):
            if now >= pend.deadline:
                del self._pending[rid]
                self._answer(pend.request, ControlStatus.TIMEOUT,
                             f"no confirmation from {pend.rtu.cfg.name} within {pend.request.timeout_s:.1f} s",
                             pend.started)


def run_adapter(channel: AdapterChannel, config: StationConfig, adapter: str, rtus: tuple[str, ...]) -> None:
    """Adapter process entry point (``frontend_protocols.channel.AdapterMain``): returns on Shutdown or pipe close."""
    Iec104Master(channel, config, adapter, rtus).run()


__all__ = ["FLUSH_MAX_ROWS", "FLUSH_PERIOD_S", "Iec104AdapterError", "Iec104Master", "run_adapter"]
