"""The Modbus TCP master adapter in a real spawned process against the simulator's pymodbus devices on loopback."""

from __future__ import annotations

import math
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from adapter_process import AdapterProcess, adapter_factory
from raw_server import RawServer
from support import free_port, wait_for

from frontend_protocols.channel import Heartbeat
from models.commands import ControlAction, ControlRequest, ControlResult, ControlStatus, InterrogationRequest
from models.config import StationConfig, parse_station_config
from models.points import ControlType, DoubleState, Quality
from models.protocols.modbus import Table
from models.updates import Cause, InterrogationDone, LinkEvent
from rtu_sim.simulator import RtuSimulator

RTU = "MB"
UNIT = 5

# point ids (order in the TOML below)
CB, TRIP, FAN, V, I, P, E, Q, SP, TAP, PULSE = range(11)  # noqa: E741


def station_toml(address: str, *, word_order: str = "big", digital_scan_s: float = 0.3, analog_scan_s: float = 0.5,
                 gi_period_s: float = 600, request_timeout_s: float = 0.5, connections: int = 1) -> str:
    return f"""
[station]
name = "modbus adapter test"

[[rtus]]
name = "{RTU}"
protocol = "modbus"
common_address = {UNIT}
addresses = ["{address}"]
gi_period_s = {gi_period_s}
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1.0
connect_timeout_s = 1.0
modbus = {{ word_order = "{word_order}", digital_scan_s = {digital_scan_s}, analog_scan_s = {analog_scan_s}, \
request_timeout_s = {request_timeout_s}, connections = {connections} }}

[[points]]
name = "CB"
kind = "double"
rtu = "{RTU}"
address = 0
type = "input_uint16"
control = {{ type = "double", address = 0, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "TRIP"
kind = "single"
rtu = "{RTU}"
address = 0
type = "discrete_input"

[[points]]
name = "FAN"
kind = "single"
rtu = "{RTU}"
address = 3
type = "coil"
control = {{ type = "single", address = 3, mode = "direct" }}

[[points]]
name = "V"
kind = "analog"
rtu = "{RTU}"
address = 1000
type = "input_float32"
units = "kV"
sim = {{ nominal = 11.2 }}

[[points]]
name = "I"
kind = "analog"
rtu = "{RTU}"
address = 1002
type = "input_int16"
units = "A"
scale = 0.1
offset = 5.0
sim = {{ nominal = 128.4 }}

[[points]]
name = "P"
kind = "analog"
rtu = "{RTU}"
address = 10
type = "holding_int32"
units = "MW"
scale = 0.001
sim = {{ nominal = -2.5 }}

[[points]]
name = "E"
kind = "counter"
rtu = "{RTU}"
address = 1004
type = "input_uint32"
units = "kWh"
scale = 0.5

[[points]]
name = "Q"
kind = "analog"
rtu = "{RTU}"
address = 12
type = "holding_uint16"
units = "Mvar"
sim = {{ nominal = 7 }}

[[points]]
name = "SP"
kind = "setpoint"
rtu = "{RTU}"
address = 20
type = "holding_float32"
control = {{ type = "setpoint_float", address = 20, mode = "direct" }}
sim = {{ nominal = 1.5 }}

[[points]]
name = "TAP"
kind = "setpoint"
rtu = "{RTU}"
address = 22
type = "holding_int16"
scale = 0.5
control = {{ type = "setpoint_scaled", address = 22, mode = "sbo" }}
sim = {{ nominal = 3 }}

[[points]]
name = "PULSE"
kind = "command"
rtu = "{RTU}"
control = {{ type = "single", address = 7, mode = "direct" }}
"""


# ------------------------------------------------------------------------------------------------ processes


@pytest.fixture
def adapters() -> Iterator[Callable[[StationConfig], AdapterProcess]]:
    with adapter_factory("modbus", (RTU,)) as make:
        yield make


@pytest.fixture
def sims() -> Iterator[Callable[[StationConfig], RtuSimulator]]:
    made: list[RtuSimulator] = []

    def make(config: StationConfig) -> RtuSimulator:
        s = RtuSimulator(config, physics=False, seed=4)
        s.start()
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop()


def ctl(rid: int, point: int, action: ControlAction, value: float, ctype: ControlType, address: int,
        timeout_s: float = 5.0) -> ControlRequest:
    return ControlRequest(rid, point, RTU, UNIT, address, ctype, action, value, timeout_s)


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.timeout(90)
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_register_types_round_trip_and_scan_periods(word_order: str, sims, adapters) -> None:
    cfg = parse_station_config(station_toml(f"127.0.0.1:{free_port()}", word_order=word_order))
    sim = sims(cfg)
    a = adapters(cfg)
    a.wait_interrogations()
    with a.lock:
        kinds = [type(m).__name__ for m in a.msgs if not isinstance(m, Heartbeat)]
    assert kinds[0] == "LinkEvent" and kinds.index("InterrogationDone") > kinds.index("UpdateBatch")
    first = {int(r["point"]): r for r in a.rows()}
    assert set(first) == {CB, TRIP, FAN, V, I, P, E, Q, SP, TAP}  # everything but the pure command
    assert all(r["cause"] == Cause.INTERROGATED and r["source_time_ms"] > 0 for r in first.values())
    o = sim.outstation(RTU)
    expect = {CB: 2.0, TRIP: 0.0, FAN: 0.0, V: 11.2, I: round((128.4 - 5) / 0.1) * 0.1 + 5, P: -2.5,
              E: o.value("E"), Q: 7.0, SP: 1.5, TAP: 3.0}
    for pid, v in expect.items():
        assert first[pid]["value"] == pytest.approx(v, rel=1e-6, abs=1e-3), pid
        assert first[pid]["quality"] == Quality.GOOD, pid

    # every type, scaled, with the configured word order: set in the device, read by the next scan
    mark = a.mark()
    t_set = time.time() * 1000.0
    sim.set_value("V", 10.75)
    sim.set_value("I", 205.3)  # raw 2003 -> 205.3
    sim.set_value("P", -123.456)  # raw -123456 in an int32
    sim.set_value("Q", 65535)
    sim.set_value("CB", DoubleState.OFF)
    sim.set_value("TRIP", 1)
    o.set_value("E", 2_000_000.0)  # raw 4,000,000: above 16 bits
    sim.set_value("V", math.nan, quality=Quality.INVALID)  # NaN: INVALID at the master
    want = {V: math.nan, I: 205.3, P: -123.456, Q: 65535.0, CB: 1.0, TRIP: 1.0, E: 2_000_000.0}

    def arrived() -> bool:
        for pid, v in want.items():
            r = a.last_value(pid, mark)
            if r is None:
                return False
            if math.isnan(v):
                if r["quality"] != Quality.INVALID:
                    return False
            elif r["value"] != pytest.approx(v, rel=1e-6) or r["quality"] != Quality.GOOD:
                return False
        return True

    wait_for(arrived, 10, "changed values")
    rows = a.rows(mark)
    assert set(rows["cause"]) == {Cause.PERIODIC}
    assert TAP not in set(rows["point"].tolist())  # unchanged values are not reported again
    cb = a.last_value(CB, mark)
    assert t_set - 50 <= cb["source_time_ms"] <= time.time() * 1000.0  # the poll's time, not an event's

    # scan periods: digital 0.3 s, analog 0.5 s -> one InterrogationDone per completed pair of group scans
    n0 = len(a.of(InterrogationDone))
    c0 = a.counters()
    time.sleep(3.0)
    c1 = a.counters()
    digital = c1.get("scans_digital", 0) - c0.get("scans_digital", 0)
    analog = c1.get("scans_analog", 0) - c0.get("scans_analog", 0)
    print(f"in ~3 s: {digital:.0f} digital scans (0.3 s), {analog:.0f} analog scans (0.5 s), "
          f"{len(a.of(InterrogationDone)) - n0} InterrogationDone; reads {c1.get('reads_ok', 0):.0f}")
    assert 7 <= digital <= 11 and 4 <= analog <= 7
    assert len(a.of(InterrogationDone)) - n0 >= 4
    assert c1.get("malformed_responses", 0) == 0 and c1.get("reads_failed", 0) == 0

    # an interrogation request reports every value again
    mark = a.mark()
    a.send(InterrogationRequest(RTU))
    wait_for(lambda: len({int(p) for p in a.rows(mark)["point"]}) >= 10, 5, "full report")
    assert {Cause.INTERROGATED} <= set(a.rows(mark)["cause"])
    assert a.close() == 0


@pytest.mark.timeout(90)
def test_commands_read_back_and_refusals(sims, adapters) -> None:
    cfg = parse_station_config(station_toml(f"127.0.0.1:{free_port()}", word_order="little"))
    sim = sims(cfg)
    o = sim.outstation(RTU)
    a = adapters(cfg)
    a.wait_interrogations()

    # double command, select before operate: the select is answered locally, the execute writes DPI 1 into
    # holding 0 and reads back the breaker's status register
    a.send(ctl(1, CB, ControlAction.SELECT, 1, ControlType.DOUBLE, 0))
    assert a.control(1).status is ControlStatus.SUCCESS
    mark = a.mark()
    a.send(ctl(2, CB, ControlAction.EXECUTE, 1, ControlType.DOUBLE, 0))
    res = a.control(2)
    assert res.status is ControlStatus.SUCCESS and "read-back" in res.detail, res
    print(f"double command write + read-back {res.elapsed_ms:.1f} ms")
    assert o.value("CB") == DoubleState.OFF
    cb = a.last_value(CB, mark)
    assert cb["value"] == 1.0 and cb["cause"] == Cause.RETURN_REMOTE
    assert o.registers(Table.HOLDING, 0, 1) == [1]

    # single command on a coil that is its own status, direct
    a.send(ctl(3, FAN, ControlAction.DIRECT, 1, ControlType.SINGLE, 3))
    assert a.control(3).status is ControlStatus.SUCCESS
    assert o.value("FAN") == 1.0

    # set-points: float32 (little word order) and int16 scaled, read back
    a.send(ctl(4, SP, ControlAction.DIRECT, 42.25, ControlType.SETPOINT_FLOAT, 20))
    assert a.control(4).status is ControlStatus.SUCCESS
    assert o.value("SP") == 42.25
    assert o.registers(Table.HOLDING, 20, 2) == list(struct.unpack(">HH", struct.pack(">f", 42.25)))[::-1]
    a.send(ctl(5, TAP, ControlAction.SELECT, -7.5, ControlType.SETPOINT_SCALED, 22))
    a.control(5)
    a.send(ctl(6, TAP, ControlAction.EXECUTE, -7.5, ControlType.SETPOINT_SCALED, 22))
    assert a.control(6).status is ControlStatus.SUCCESS
    assert o.value("TAP") == -7.5 and o.registers(Table.HOLDING, 22, 1) == [(-15) & 0xFFFF]

    # pure command: the write's confirmation is the verification
    a.send(ctl(7, PULSE, ControlAction.DIRECT, 1, ControlType.SINGLE, 7))
    assert a.control(7).status is ControlStatus.SUCCESS

    # blocked: exception 0x04 from the device -> REFUSED_BY_FIELD naming the code
    sim.block("CB")
    a.send(ctl(8, CB, ControlAction.SELECT, 2, ControlType.DOUBLE, 0))
    a.control(8)
    a.send(ctl(9, CB, ControlAction.EXECUTE, 2, ControlType.DOUBLE, 0))
    res = a.control(9)
    assert res.status is ControlStatus.REFUSED_BY_FIELD and "0x04" in res.detail and "DEVICE_FAILURE" in res.detail
    assert o.value("CB") == DoubleState.OFF
    sim.block("CB", False)
    o.set_local(True)
    a.send(ctl(10, FAN, ControlAction.DIRECT, 0, ControlType.SINGLE, 3))
    res = a.control(10)
    assert res.status is ControlStatus.REFUSED_BY_FIELD and "0x04" in res.detail, res
    o.set_local(False)

    # local checks: execute without select, direct on an SBO object, unknown address, wrong type, bad value
    a.send(ctl(11, CB, ControlAction.EXECUTE, 2, ControlType.DOUBLE, 0))
    assert a.control(11).status is ControlStatus.ERROR
    a.send(ctl(12, CB, ControlAction.DIRECT, 2, ControlType.DOUBLE, 0))
    assert a.control(12).status is ControlStatus.ERROR
    a.send(ctl(13, CB, ControlAction.DIRECT, 1, ControlType.SINGLE, 99))
    assert a.control(13).status is ControlStatus.UNKNOWN_ADDRESS
    a.send(ctl(14, SP, ControlAction.DIRECT, 1, ControlType.SETPOINT_SCALED, 20))
    assert a.control(14).status is ControlStatus.UNKNOWN_ADDRESS
    a.send(ctl(15, TAP, ControlAction.SELECT, 1e6, ControlType.SETPOINT_SCALED, 22))
    a.control(15)
    a.send(ctl(16, TAP, ControlAction.EXECUTE, 1e6, ControlType.SETPOINT_SCALED, 22))
    res = a.control(16)
    assert res.status is ControlStatus.ERROR and "int16" in res.detail

    # the device accepts the write but the state does not follow: TIMEOUT naming what the read-back showed
    sim.set_value("FAN", 0)
    assert sim.wait_sent(5)  # the coil reads 0 again before the stuck relay is commanded
    o.on_command_applied = None
    orig = o.execute_command

    def stuck(slot: Any, value: float) -> Any:  # accepts, changes nothing (a relay that does not pick up)
        from rtu_sim.outstation import CommandAnswer
        return CommandAnswer.ACCEPTED

    o.execute_command = stuck  # type: ignore[method-assign]
    a.send(ctl(17, FAN, ControlAction.DIRECT, 1, ControlType.SINGLE, 3, timeout_s=1.0))
    res = a.control(17)
    o.execute_command = orig  # type: ignore[method-assign]
    assert res.status is ControlStatus.TIMEOUT and "read-back" in res.detail, res
    assert len([r for r in a.of(ControlResult) if r.request_id == 17]) == 1
    assert a.close() == 0


@pytest.mark.timeout(90)
def test_link_loss_reconnect_and_two_connections(sims, adapters) -> None:
    port = free_port()
    cfg = parse_station_config(station_toml(f"127.0.0.1:{port}", connections=2))
    sim = sims(cfg)
    a = adapters(cfg)
    a.wait_interrogations(2)

    t0 = time.monotonic()
    sim.link_down(RTU)
    wait_for(lambda: any(not e.up for e in a.of(LinkEvent)), 10, "LinkEvent(up=False)")
    down_s = time.monotonic() - t0
    print(f"link loss reported after {down_s * 1000:.0f} ms")
    assert down_s < 2.0  # one scan period plus the request time-out at most
    down = [e for e in a.of(LinkEvent) if not e.up][0]
    assert down.reason and down.address == f"127.0.0.1:{port}"
    a.send(ctl(1, FAN, ControlAction.DIRECT, 1, ControlType.SINGLE, 3))
    assert a.control(1).status is ControlStatus.LINK_DOWN

    mark = a.mark()
    sim.set_value("V", 10.9)
    sim.link_up(RTU)
    t1 = time.monotonic()
    wait_for(lambda: any(e.up for e in a.of(LinkEvent, mark)), 10, "LinkEvent(up=True) after restart")
    wait_for(lambda: a.of(InterrogationDone, mark), 10, "complete scan after reconnect")
    print(f"reconnected and scanned {time.monotonic() - t1:.2f} s after the device came back")
    assert a.last_value(V, mark)["value"] == pytest.approx(10.9, rel=1e-6)
    assert len({int(p) for p in a.rows(mark)["point"]}) == 10  # the first scan reports every value
    assert sim.outstation(RTU).stats().clients == 2  # options.connections
    assert a.close() == 0


# ------------------------------------------------------------------------------------------------ hostile device


class HostileDevice(RawServer):
    """A raw Modbus TCP server on 127.0.0.1 that answers with what ``mode`` says: good frames or broken ones."""

    def __init__(self) -> None:
        self.mode = "good"
        super().__init__(threaded=True)

    def _answer(self, tid: int, unit: int, fc: int, start: int, count: int) -> bytes:
        mode = self.mode
        if fc in (1, 2):
            data = bytes((count + 7) // 8)
        else:
            regs = [0] * count
            for k in range(count):  # V at 1000 (float32 11.0), everything else 0 / DPI 2 at input 0
                a = start + k
                if fc == 4 and a == 0:
                    regs[k] = 2
                if fc == 4 and a in (1000, 1001):
                    regs[k] = struct.unpack(">HH", struct.pack(">f", math.nan if mode == "nan" else 11.0))[a - 1000]
            data = b"".join(r.to_bytes(2, "big") for r in regs)
        pdu = bytes([fc, len(data)]) + data
        length = len(pdu) + 1
        if mode == "mbap_length":
            length += 3  # says more than follows
        elif mode == "tid":
            tid ^= 0x5555
        elif mode == "truncated":
            pdu = pdu[:-1]
            length = len(pdu) + 1
        elif mode == "function":
            pdu = bytes([0x63]) + pdu[1:]
        elif mode == "byte_count":
            pdu = bytes([fc, len(data) + 2]) + data
        return tid.to_bytes(2, "big") + b"\0\0" + length.to_bytes(2, "big") + bytes([unit]) + pdu

    def session(self, conn: socket.socket) -> None:
        buf = b""
        for chunk in self.chunks(conn):
            buf += chunk
            while len(buf) >= 12:
                frame, buf = buf[:12], buf[12:]
                tid, unit, fc = int.from_bytes(frame[0:2], "big"), frame[6], frame[7]
                start, count = int.from_bytes(frame[8:10], "big"), int.from_bytes(frame[10:12], "big")
                try:
                    conn.sendall(self._answer(tid, unit, fc, start, count))
                except OSError:
                    return


HOSTILE_TOML = """
[station]
name = "hostile modbus"

[[rtus]]
name = "MB"
protocol = "modbus"
common_address = 5
addresses = ["127.0.0.1:{port}"]
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 0.5
modbus = {{ digital_scan_s = 0.2, analog_scan_s = 0.2, request_timeout_s = 0.4 }}

[[points]]
name = "CB"
kind = "double"
rtu = "MB"
address = 0
type = "input_uint16"

[[points]]
name = "V"
kind = "analog"
rtu = "MB"
address = 1000
type = "input_float32"
"""


@pytest.mark.timeout(120)
def test_hostile_device(adapters) -> None:
    dev = HostileDevice()
    try:
        a = adapters(parse_station_config(HOSTILE_TOML.format(port=dev.port)))
        a.wait_interrogations()
        assert a.last_value(1)["value"] == 11.0 and a.last_value(0)["value"] == 2.0
        for mode in ("nan", "mbap_length", "tid", "truncated", "function", "byte_count"):
            mark = a.mark()
            beats = len(a.of(Heartbeat))
            dev.mode = mode

            def flagged(m: int = mark) -> bool:
                r = a.last_value(1, m)
                return r is not None and r["quality"] == Quality.INVALID or any(
                    not e.up for e in a.of(LinkEvent, m))

            wait_for(flagged, 10, f"V INVALID or the link down with a device sending {mode!r}")
            time.sleep(0.6)
            assert a.proc.is_alive(), mode
            assert len(a.of(Heartbeat)) > beats, f"heartbeats stopped with {mode!r}"
            # the device heals: values GOOD again, the link up
            mark = a.mark()
            dev.mode = "good"
            wait_for(lambda m=mark: (r := a.last_value(1, m)) is not None and r["quality"] == Quality.GOOD
                     and r["value"] == 11.0, 10, f"recovery after {mode!r}")
        c = a.counters()
        print(f"hostile device counters: malformed {c.get('malformed_responses', 0):.0f}, link_down "
              f"{c.get('link_down', 0):.0f}, reads_failed {c.get('reads_failed', 0):.0f}")
        assert c.get("malformed_responses", 0) >= 3
        assert a.close() == 0
    finally:
        dev.close()
