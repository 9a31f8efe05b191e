"""The IEC 104 master adapter in a real spawned process against plain c104 outstations on loopback ports."""

from __future__ import annotations

import datetime as dt
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import c104
import numpy as np
import pytest
from adapter_process import AdapterProcess, adapter_factory
from raw_server import RawServer
from support import free_port, wait_for

from frontend_protocols.channel import Heartbeat
from models.commands import (
    ClockSyncRequest,
    ControlAction,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import StationConfig, parse_station_config
from models.points import ControlType, Quality
from models.updates import Cause, InterrogationDone, LinkEvent, UpdateBatch

RTU = "RTU-T"
CA = 7


def station_toml(addresses: list[str], *, gi_period_s: float = 600) -> str:
    addr = ", ".join(f'"{a}"' for a in addresses)
    return f"""
[station]
name = "iec104 adapter test"

[[rtus]]
name = "{RTU}"
common_address = {CA}
addresses = [{addr}]
gi_period_s = {gi_period_s}
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1.0
connect_timeout_s = 1.0

[[points]]
name = "CB"
kind = "double"
rtu = "{RTU}"
address = 1001
type = "M_DP_TB_1"
control = {{ type = "double", address = 6001, mode = "sbo" }}

[[points]]
name = "TRIP"
kind = "single"
rtu = "{RTU}"
address = 1011
type = "M_SP_TB_1"

[[points]]
name = "V"
kind = "analog"
rtu = "{RTU}"
address = 2001
type = "M_ME_TF_1"
units = "kV"

[[points]]
name = "I"
kind = "analog"
rtu = "{RTU}"
address = 2002
type = "M_ME_NB_1"
units = "A"
scale = 0.1
offset = 5.0

[[points]]
name = "E"
kind = "counter"
rtu = "{RTU}"
address = 3001
type = "M_IT_NA_1"
scale = 0.5

[[points]]
name = "FAN"
kind = "command"
rtu = "{RTU}"
control = {{ type = "single", address = 6002, mode = "direct" }}
"""


# ------------------------------------------------------------------------------------------------ outstation


class Outstation:
    """A plain c104 server holding the test RTU's points; ``answer``/``delay_s`` drive its command callback."""

    def __init__(self, port: int, *, v_kv: float = 11.2) -> None:
        self.port = port
        self.answer = c104.ResponseState.SUCCESS
        self.delay_s = 0.0
        self.commands: list[tuple[int, float]] = []
        self.server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50, select_timeout_ms=5000)
        st = self.server.add_station(common_address=CA)
        self.cb = st.add_point(io_address=1001, type=c104.Type.M_DP_TB_1)
        self.cb.value = c104.Double.ON
        self.trip = st.add_point(io_address=1011, type=c104.Type.M_SP_TB_1)
        self.trip.value = False
        self.v = st.add_point(io_address=2001, type=c104.Type.M_ME_TF_1)
        self.v.value = v_kv
        self.i = st.add_point(io_address=2002, type=c104.Type.M_ME_NB_1)
        self.i.value = c104.Int16(1234)
        self.i.quality = c104.Quality.Substituted
        self.e = st.add_point(io_address=3001, type=c104.Type.M_IT_NA_1)
        self.e.value = 400
        self.unknown = st.add_point(io_address=9999, type=c104.Type.M_SP_NA_1)  # not in the configuration
        self.unknown.value = True
        cmd = st.add_point(io_address=6001, type=c104.Type.C_DC_NA_1,
                           command_mode=c104.CommandMode.SELECT_AND_EXECUTE)
        cmd.on_receive(callable=self._on_command)
        fan = st.add_point(io_address=6002, type=c104.Type.C_SC_NA_1)
        fan.on_receive(callable=self._on_command)

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        self.commands.append((point.io_address, float(point.value)))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.answer

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


# the Outstation callback method needs real annotations for c104's signature check
Outstation._on_command.__annotations__.update(
    point=c104.Point, previous_info=c104.Information, message=c104.IncomingMessage, **{"return": c104.ResponseState}
)


@pytest.fixture
def outstations() -> Iterator[Callable[..., Outstation]]:
    made: list[Outstation] = []

    def make(port: int | None = None, **kw: Any) -> Outstation:
        o = Outstation(port or free_port(), **kw)
        o.start()
        made.append(o)
        return o

    try:
        yield make
    finally:
        for o in made:
            o.stop()


# ------------------------------------------------------------------------------------------------ adapter process


@pytest.fixture
def adapters() -> Iterator[Callable[[StationConfig], AdapterProcess]]:
    with adapter_factory("iec104", (RTU,)) as make:
        yield make


def ctl(rid: int, action: ControlAction, value: float, *, address: int = 6001, ctype: ControlType = ControlType.DOUBLE,
        timeout_s: float = 5.0) -> ControlRequest:
    return ControlRequest(rid, 0, RTU, CA, address, ctype, action, value, timeout_s)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.timeout(100)  # a few seconds, unless c104 loses clock syncs (up to 3 x 15 s below)
def test_gi_spontaneous_unknown_ioa_and_latency(outstations, adapters) -> None:
    out = outstations()
    cfg = parse_station_config(station_toml([f"127.0.0.1:{out.port}"]))
    a = adapters(cfg)
    a.wait_interrogations()
    # order on the pipe: link up, then the GI rows, then InterrogationDone
    with a.lock:
        kinds = [type(m).__name__ for m in a.msgs if not isinstance(m, Heartbeat)]
    assert kinds[0] == "LinkEvent" and kinds.index("InterrogationDone") > kinds.index("UpdateBatch")
    up = a.of(LinkEvent)[0]
    assert up.up and up.rtu == RTU and up.address == f"127.0.0.1:{out.port}"

    rows = a.rows()
    by_point = {int(r["point"]): r for r in rows}
    # the counter (point 4) is not part of a GI: it comes with the counter interrogation the adapter sends after
    # the GI completes; IOA 9999 is unknown and never delivered
    assert {0, 1, 2, 3} <= set(by_point) <= {0, 1, 2, 3, 4}
    wait_for(lambda: a.counters().get("ci_done", 0) >= 1, 5, "counter interrogation after the GI")
    assert by_point[0]["value"] == 2.0 and by_point[0]["quality"] == 0  # DPI ON
    assert by_point[0]["source_time_ms"] > 0 and by_point[0]["cause"] == Cause.INTERROGATED
    assert by_point[1]["value"] == 0.0 and by_point[1]["source_time_ms"] > 0
    assert by_point[2]["value"] == pytest.approx(11.2, abs=1e-5)
    assert by_point[3]["value"] == pytest.approx(1234 * 0.1 + 5.0)  # raw*scale+offset
    assert by_point[3]["quality"] == Quality.SUBSTITUTED and by_point[3]["source_time_ms"] == -1
    wait_for(lambda: a.counters().get("unknown_ioa", 0) >= 1, 5, "unknown_ioa counted")
    assert a.counters().get("callback_errors", 0) == 0

    # spontaneous M_DP_TB_1 and M_ME_TF_1 keep their time tag and quality
    mark = a.mark()
    tag = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=123000) - dt.timedelta(seconds=5)
    tag_ms = round(tag.replace(tzinfo=dt.UTC).timestamp() * 1000)
    out.cb.info = c104.DoubleInfo(state=c104.Double.OFF, quality=c104.Quality.Invalid, recorded_at=tag)
    out.cb.transmit(cause=c104.Cot.SPONTANEOUS)
    out.v.info = c104.ShortInfo(actual=10.5, quality=c104.Quality.Invalid | c104.Quality.NonTopical,
                                recorded_at=tag)
    out.v.transmit(cause=c104.Cot.SPONTANEOUS)
    wait_for(lambda: a.last_value(0, mark) is not None and a.last_value(2, mark) is not None, 5, "spontaneous rows")
    cb, v = a.last_value(0, mark), a.last_value(2, mark)
    assert cb["value"] == 1.0 and cb["quality"] == Quality.INVALID and cb["source_time_ms"] == tag_ms
    assert cb["cause"] == Cause.SPONTANEOUS
    assert v["value"] == 10.5 and v["quality"] == Quality.INVALID | Quality.NOT_TOPICAL
    assert v["source_time_ms"] == tag_ms

    # latency: field time tag (set at transmit) -> batch arrival in this process
    lat_ms: list[float] = []
    in_adapter_ms: list[float] = []  # time tag -> batch stamped by the adapter (c104 + adapter, no pipe)
    for k in range(40):
        mark = a.mark()
        out.v.info = c104.ShortInfo(actual=float(k), recorded_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
        out.v.transmit(cause=c104.Cot.SPONTANEOUS)
        got = wait_for(lambda m=mark: a.timed(UpdateBatch, m), 5, "row")
        t_arr, batch = got[0]
        lat_ms.append(t_arr - float(batch.rows["source_time_ms"][-1]))
        in_adapter_ms.append(float(batch.received_ms - batch.rows["source_time_ms"][-1]))
        time.sleep(0.01)
    p50, p99 = np.percentile(lat_ms, 50), np.percentile(lat_ms, 99)
    print(f"iec104 latency time tag -> batch received: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat_ms):.1f}; "
          f"time tag -> batch sent: p50 {np.percentile(in_adapter_ms, 50):.1f} ms")
    wait_for(lambda: "flush_age_max_ms" in a.counters(), 5, "flush age counter")
    print(f"longest wait of a value inside the adapter: {a.counters()['flush_age_max_ms']:.1f} ms")
    assert a.counters()["flush_age_max_ms"] < 250.0
    assert p99 < 250.0

    # counter interrogation brings the integrated total (scaled), clock sync is confirmed
    mark = a.mark()
    a.send(InterrogationRequest(RTU, counters=True))
    a.send(ClockSyncRequest(RTU))
    wait_for(lambda: a.last_value(4, mark) is not None, 5, "counter row")
    e = a.last_value(4, mark)
    assert e["value"] == 200.0 and e["cause"] == Cause.INTERROGATED
    # c104's server can lose a request silently (LIBRARY_FACTS); c104's client then waits out its command time-out
    # and the adapter counts a failure. A resend before that is refused as "already running", so the operator's
    # clock sync is sent again only once the previous one has ended, at most twice.
    for _attempt in range(3):
        failed = a.counters().get("clock_sync_failed", 0)
        wait_for(lambda f=failed: a.counters().get("clock_sync_done", 0) >= 1
                 or a.counters().get("clock_sync_failed", 0) > f, 15, "the clock sync to end")
        if a.counters().get("clock_sync_done", 0) >= 1:
            break
        a.send(ClockSyncRequest(RTU))
    assert a.counters().get("clock_sync_done", 0) >= 1, f"clock sync never confirmed in 3 attempts: {a.counters()}"

    # GI on demand
    a.send(InterrogationRequest(""))
    a.wait_interrogations(2)
    assert a.close() == 0  # Shutdown makes the process exit cleanly


@pytest.mark.timeout(60)
def test_commands(outstations, adapters) -> None:
    out = outstations()
    a = adapters(parse_station_config(station_toml([f"127.0.0.1:{out.port}"])))
    a.wait_interrogations()

    # select-before-operate double command, driven as two steps
    a.send(ctl(1, ControlAction.SELECT, 1))
    assert a.control(1).status is ControlStatus.SUCCESS
    a.send(ctl(2, ControlAction.EXECUTE, 1))
    res = a.control(2)
    assert res.status is ControlStatus.SUCCESS, res
    assert out.commands[-1] == (6001, 1.0)
    print(f"SBO double command execute round trip {res.elapsed_ms:.1f} ms")

    # negative confirmation from the field
    out.answer = c104.ResponseState.FAILURE
    a.send(ctl(3, ControlAction.SELECT, 2))
    a.control(3)
    a.send(ctl(4, ControlAction.EXECUTE, 2))
    assert a.control(4).status is ControlStatus.REFUSED_BY_FIELD

    # execute without select, cancel, direct on an SBO object: refused locally, nothing sent
    n = len(out.commands)
    a.send(ctl(5, ControlAction.EXECUTE, 2))
    assert a.control(5).status is ControlStatus.ERROR
    a.send(ctl(6, ControlAction.SELECT, 2))
    a.control(6)
    a.send(ctl(7, ControlAction.CANCEL, 2))
    assert a.control(7).status is ControlStatus.SUCCESS
    a.send(ctl(8, ControlAction.EXECUTE, 2))
    assert a.control(8).status is ControlStatus.ERROR
    assert len(out.commands) == n

    # direct single command
    out.answer = c104.ResponseState.SUCCESS
    a.send(ctl(9, ControlAction.DIRECT, 1, address=6002, ctype=ControlType.SINGLE))
    assert a.control(9).status is ControlStatus.SUCCESS
    assert out.commands[-1] == (6002, 1.0)

    # unknown command object, wrong type
    a.send(ctl(10, ControlAction.DIRECT, 1, address=6999, ctype=ControlType.SINGLE))
    assert a.control(10).status is ControlStatus.UNKNOWN_ADDRESS
    a.send(ctl(11, ControlAction.DIRECT, 1, address=6002, ctype=ControlType.DOUBLE))
    assert a.control(11).status is ControlStatus.UNKNOWN_ADDRESS

    # the field answers too late: TIMEOUT after request.timeout_s, and the receive path keeps flowing meanwhile
    out.delay_s = 1.5
    a.send(ctl(12, ControlAction.DIRECT, 0, address=6002, ctype=ControlType.SINGLE, timeout_s=0.4))
    res = a.control(12)
    assert res.status is ControlStatus.TIMEOUT and 350 <= res.elapsed_ms < 1200, res
    assert len([r for r in a.of(ControlResult) if r.request_id == 12]) == 1  # exactly one answer
    time.sleep(1.5)
    assert len([r for r in a.of(ControlResult) if r.request_id == 12]) == 1

    # Shutdown while a command still waits for the field: the process exits promptly and cleanly
    out.delay_s = 3.0
    a.send(ctl(13, ControlAction.DIRECT, 1, address=6002, ctype=ControlType.SINGLE))
    time.sleep(0.3)
    t0 = time.monotonic()
    assert a.close() == 0
    assert time.monotonic() - t0 < 5.0


@pytest.mark.timeout(60)
def test_link_loss_and_reconnect(outstations, adapters) -> None:
    port = free_port()
    out = outstations(port)
    a = adapters(parse_station_config(station_toml([f"127.0.0.1:{port}"], gi_period_s=1.0)))
    a.wait_interrogations(2, timeout_s=10)  # the connect GI and one periodic GI

    t0 = time.monotonic()
    out.stop()
    wait_for(lambda: any(not e.up for e in a.of(LinkEvent)), 5, "LinkEvent(up=False)")
    down_s = time.monotonic() - t0
    print(f"link loss reported after {down_s * 1000:.0f} ms")
    assert down_s < 2.0
    down = [e for e in a.of(LinkEvent) if not e.up][0]
    assert down.reason and down.address == f"127.0.0.1:{port}"

    a.send(ctl(1, ControlAction.DIRECT, 1, address=6002, ctype=ControlType.SINGLE))
    assert a.control(1).status is ControlStatus.LINK_DOWN

    # restart on the same port with a new value: reconnect, link up, GI restores the value
    mark = a.mark()
    out2 = outstations(port, v_kv=10.9)
    t1 = time.monotonic()
    wait_for(lambda: any(e.up for e in a.of(LinkEvent, mark)), 15, "LinkEvent(up=True) after restart")
    print(f"reconnected {time.monotonic() - t1:.2f} s after the outstation restarted")
    wait_for(lambda: a.of(InterrogationDone, mark), 10, "GI after reconnect")
    assert a.last_value(2, mark)["value"] == pytest.approx(10.9, abs=1e-5)
    assert out2.port == port
    assert a.close() == 0


@pytest.mark.timeout(60)
def test_redundant_pair_switches_to_backup(outstations, adapters) -> None:
    first, second = outstations(v_kv=11.0), outstations(v_kv=11.1)
    a = adapters(parse_station_config(station_toml([f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"])))
    a.wait_interrogations()
    # The primary is preferred, but on a loaded machine the backup's TCP connection may open first and the adapter
    # then activates whichever link is open: either way exactly one link is active.
    up_address = a.of(LinkEvent)[0].address
    active, standby = (first, second) if up_address == f"127.0.0.1:{first.port}" else (second, first)
    assert up_address == f"127.0.0.1:{active.port}"
    active_kv, standby_kv = (11.0, 11.1) if active is first else (11.1, 11.0)
    assert a.last_value(2)["value"] == pytest.approx(active_kv, abs=1e-5)
    time.sleep(0.3)  # the standby is open but muted: it must not have delivered anything
    assert not np.any(np.isclose(a.rows()["value"], standby_kv))

    mark = a.mark()
    t0 = time.monotonic()
    active.stop()
    wait_for(lambda: any(e.up for e in a.of(LinkEvent, mark)), 10, "switch to the standby")
    print(f"switched to the standby link in {(time.monotonic() - t0) * 1000:.0f} ms")
    events = a.of(LinkEvent, mark)
    assert not events[0].up and events[0].address == f"127.0.0.1:{active.port}"
    assert events[1].up and events[1].address == f"127.0.0.1:{standby.port}"
    wait_for(lambda: a.of(InterrogationDone, mark), 10, "GI on the standby")
    assert a.last_value(2, mark)["value"] == pytest.approx(standby_kv, abs=1e-5)

    # commands now go over the standby
    a.send(ctl(1, ControlAction.DIRECT, 1, address=6002, ctype=ControlType.SINGLE))
    assert a.control(1).status is ControlStatus.SUCCESS
    assert standby.commands and not active.commands
    assert a.close() == 0


class RawOutstation(RawServer):
    """A minimal hand-written IEC 104 outstation: c104's server cannot set the IV bit of a CP56Time2a, this can.

    It confirms STARTDT/TESTFR and answers a station interrogation with ACT_CON, one M_DP_TB_1 object whose time tag
    is marked invalid, and ACT_TERM.
    """

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        super().__init__()

    def session(self, conn: socket.socket) -> None:
        ns = nr = 0
        buf = b""

        def send_i(asdu: bytes) -> None:
            nonlocal ns
            conn.sendall(bytes([0x68, len(asdu) + 4]) + (ns << 1).to_bytes(2, "little")
                         + (nr << 1).to_bytes(2, "little") + asdu)
            ns += 1

        for chunk in self.chunks(conn):
            buf += chunk
            while len(buf) >= 2 and len(buf) >= buf[1] + 2:
                frame, buf = buf[: buf[1] + 2], buf[buf[1] + 2 :]
                ctrl = frame[2]
                if ctrl & 0x03 == 0x03:  # U format: confirm STARTDT/STOPDT/TESTFR act
                    conn.sendall(bytes([0x68, 4, ((ctrl & 0xFC) << 1) | 0x03, 0, 0, 0]))
                    continue
                if ctrl & 0x01:  # S format
                    continue
                nr += 1
                asdu = frame[6:]
                if asdu[0] == 100:  # C_IC_NA_1
                    send_i(bytes([100, 1, 7, 0]) + asdu[4:])  # ACT_CON
                    obj = (1001).to_bytes(3, "little") + b"\x02" + self.tag  # DPI ON
                    send_i(bytes([31, 1, 20, 0]) + CA.to_bytes(2, "little") + obj)
                    send_i(bytes([100, 1, 10, 0]) + asdu[4:])  # ACT_TERM


@pytest.mark.timeout(60)
def test_invalid_time_tag_sets_time_invalid(adapters) -> None:
    # 2024-03-01 12:00:00.250 UTC with the IV bit (0x80) in the minutes octet
    tag = (250).to_bytes(2, "little") + bytes([0x80 | 0, 12, 1, 3, 24])
    raw = RawOutstation(tag)
    try:
        a = adapters(parse_station_config(station_toml([f"127.0.0.1:{raw.port}"])))
        a.wait_interrogations()
        cb = a.last_value(0)
        assert cb["value"] == 2.0 and cb["quality"] == Quality.TIME_INVALID
        assert cb["source_time_ms"] == 1709294400250
        assert a.close() == 0
    finally:
        raw.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_command_results_come_from_the_wire(outstations, adapters) -> None:
    """c104's client misses about 1 confirmation in 40 on loopback (and can flip a refusal to success when the
    ACT_TERM follows): the adapter reads ACT_CON off the wire, so every answer is right."""
    out = outstations()
    a = adapters(parse_station_config(station_toml([f"127.0.0.1:{out.port}"])))
    a.wait_interrogations()

    def operate(rid: int, value: int) -> tuple[ControlStatus, bool]:
        """The master's answer, and whether the outstation's command callback saw the execute at all."""
        seen = len(out.commands)
        a.send(ctl(rid, ControlAction.SELECT, value))
        a.control(rid)
        a.send(ctl(rid + 1, ControlAction.EXECUTE, value))
        return a.control(rid + 1).status, len(out.commands) > seen

    statuses = [operate(1000 + 2 * k, 1 + k % 2) for k in range(100)]
    out.answer = c104.ResponseState.FAILURE
    refused = [operate(2000 + 2 * k, 2) for k in range(20)]
    # c104's server now and then loses its own selection and rejects the execute ("... without selection") before
    # the RTU's callback sees it, answering with a negative confirmation or not at all: REFUSED_BY_FIELD or TIMEOUT
    # is then what the field said. Every answer of the RTU's own callback must be reported exactly as given.
    lost = (ControlStatus.REFUSED_BY_FIELD, ControlStatus.TIMEOUT)
    for results, answer in ((statuses, ControlStatus.SUCCESS), (refused, ControlStatus.REFUSED_BY_FIELD)):
        assert all(status is answer if seen else status in lost for status, seen in results), results
        assert sum(seen for _, seen in results) >= len(results) - 2
    time.sleep(1.0)  # a last heartbeat with the counters
    counters = a.counters()
    print(f"c104 return values disagreeing with the wire: {counters.get('c104_result_disagreements', 0):.0f} "
          f"of 120 commands")
    assert counters.get("callback_errors", 0) == 0
