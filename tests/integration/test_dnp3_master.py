"""The DNP3 master adapter in a real spawned process against the simulator's DNP3 outstation on loopback ports."""

from __future__ import annotations

import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from adapter_process import AdapterProcess
from raw_server import RawServer
from support import free_port, wait_for

from frontend_protocols.channel import Heartbeat
from models.commands import ControlAction, ControlRequest, ControlStatus, InterrogationRequest
from models.config import StationConfig, parse_station_config
from models.points import ControlType, DoubleState, Quality
from models.updates import Cause, InterrogationDone, LinkEvent
from rtu_sim.outstation import SharedResources
from rtu_sim.outstation_dnp3 import OutstationDnp3

RTU = "FRTU-D"
LINK = 10


def station_toml(port: int, *, extra_opts: str = "") -> str:
    return f"""
[station]
name = "dnp3 adapter test"

[[rtus]]
name = "{RTU}"
protocol = "dnp3"
common_address = {LINK}
addresses = ["127.0.0.1:{port}"]
frtu = true
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1.0
dnp3 = {{ master_address = 1, event_poll_period_s = 0.5, response_timeout_s = 1.5{extra_opts} }}

[[points]]
name = "CB"
kind = "double"
rtu = "{RTU}"
address = 0
type = "double_bit_binary_input"
control = {{ type = "double", address = 0, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "PROT"
kind = "single"
rtu = "{RTU}"
address = 0
type = "binary_input"

[[points]]
name = "V"
kind = "analog"
rtu = "{RTU}"
address = 0
type = "analog_input"
units = "kV"
sim = {{ nominal = 11.234 }}

[[points]]
name = "I"
kind = "analog"
rtu = "{RTU}"
address = 1
type = "analog_input"
scale = 0.1
offset = 5.0
sim = {{ nominal = 128.5 }}

[[points]]
name = "E"
kind = "counter"
rtu = "{RTU}"
address = 0
type = "counter"
scale = 0.5
sim = {{ nominal = 1 }}

[[points]]
name = "SP"
kind = "setpoint"
rtu = "{RTU}"
address = 0
type = "analog_output_status"
control = {{ type = "setpoint_float", address = 0, mode = "direct" }}

[[points]]
name = "FAN"
kind = "command"
rtu = "{RTU}"
control = {{ type = "single", address = 1, mode = "direct" }}
"""


CB, PROT, V, I_, E, SP = 0, 1, 2, 3, 4, 5


class Sim:
    """The simulator's DNP3 outstation, pumped by a thread as the simulator loop does."""

    def __init__(self, config: StationConfig) -> None:
        self.shared = SharedResources()
        points = config.points_of_rtu(RTU)
        sims = [config.sim[p.id] for p in points]
        self.os = OutstationDnp3(config.rtu(RTU), points, sims, rng=random.Random(1), shared=self.shared)
        self.os.start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while not self._stop.is_set():
            self.os.pump(time.monotonic())
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.os.close()
        self.shared.close_all()


@pytest.fixture
def rig() -> Iterator[Callable[..., tuple[Sim, AdapterProcess]]]:
    made: list[Any] = []

    def make(extra_opts: str = "") -> tuple[Sim, AdapterProcess]:
        cfg = parse_station_config(station_toml(free_port(), extra_opts=extra_opts))
        sim = Sim(cfg)
        made.append(sim)
        adapter = AdapterProcess(cfg, "dnp3", (RTU,))
        made.append(adapter)
        return sim, adapter

    try:
        yield make
    finally:
        for obj in reversed(made):
            obj.close()


def ctl(rid: int, action: ControlAction, value: float, *, address: int = 0, ctype: ControlType = ControlType.DOUBLE,
        timeout_s: float = 8.0) -> ControlRequest:
    return ControlRequest(rid, 0, RTU, LINK, address, ctype, action, value, timeout_s)


@pytest.mark.timeout(90)
def test_integrity_values_events_and_time(rig) -> None:
    sim, a = rig()
    a.wait_interrogations()
    up = a.of(LinkEvent)[0]
    assert up.up and up.rtu == RTU
    with a.lock:
        kinds = [type(m).__name__ for m in a.msgs if not isinstance(m, Heartbeat)]
    assert kinds[0] == "LinkEvent" and kinds.index("InterrogationDone") > kinds.index("UpdateBatch")
    v = a.last_value(V)
    assert v["value"] == pytest.approx(sim.os.value("V"), abs=1e-4) and v["quality"] == 0  # float, decimals kept
    assert v["cause"] == Cause.INTERROGATED and v["source_time_ms"] == -1  # static objects carry no time
    assert a.last_value(I_)["value"] == pytest.approx(sim.os.value("I"), abs=1e-3)  # scale/offset round trip
    assert a.last_value(CB)["value"] == DoubleState.ON
    assert a.last_value(E)["value"] == pytest.approx(sim.os.value("E"), abs=0.5)

    # events with the device's time tag, floats intact, quality mapped
    mark = a.mark()
    t0 = int(time.time() * 1000) - 1234
    sim.os.set_value("V", 10.987654, time_ms=t0)
    sim.os.set_value("I", 130.25, Quality.SUBSTITUTED, time_ms=t0 + 1)
    sim.os.trip("CB", time_ms=t0 + 2)
    wait_for(lambda: a.last_value(CB, mark) is not None and a.last_value(V, mark) is not None, 10, "events")
    v = a.last_value(V, mark)
    assert v["value"] == pytest.approx(10.987654, abs=1e-5) and v["source_time_ms"] == t0
    assert v["cause"] == Cause.SPONTANEOUS
    wait_for(lambda: a.last_value(I_, mark) is not None, 5, "event of I")
    i = a.last_value(I_, mark)
    assert i["value"] == pytest.approx(130.25, abs=1e-3) and i["quality"] & Quality.SUBSTITUTED
    cb = a.last_value(CB, mark)
    assert cb["value"] == DoubleState.OFF and cb["source_time_ms"] == t0 + 2

    # an invalid value and a double point stuck in 3 (indeterminate) arrive INVALID
    mark = a.mark()
    sim.os.set_value("V", 1.0, Quality.INVALID)
    sim.os.set_value("CB", 3)
    wait_for(lambda: a.last_value(V, mark) is not None and a.last_value(CB, mark) is not None, 10, "invalid values")
    assert a.last_value(V, mark)["quality"] & Quality.INVALID
    assert a.last_value(CB, mark)["quality"] & Quality.INVALID

    # interrogation on request
    n = len(a.of(InterrogationDone))
    a.send(InterrogationRequest(RTU))
    a.wait_interrogations(n + 1)
    assert a.counters().get("callback_errors", 0) == 0


@pytest.mark.timeout(90)
def test_commands_sbo_direct_refusals_and_setpoint(rig) -> None:
    sim, a = rig()
    a.wait_interrogations()
    # select-before-operate: open the breaker
    a.send(ctl(1, ControlAction.SELECT, DoubleState.OFF))
    assert a.control(1).status is ControlStatus.SUCCESS
    a.send(ctl(2, ControlAction.EXECUTE, DoubleState.OFF))
    r = a.control(2)
    assert r.status is ControlStatus.SUCCESS, r
    assert sim.os.value("CB") == DoubleState.OFF
    mark = 0
    wait_for(lambda: (x := a.last_value(CB, mark)) is not None and x["value"] == DoubleState.OFF, 10, "CB OFF reported")
    # execute without select, direct on an SBO object: refused by the adapter
    a.send(ctl(3, ControlAction.EXECUTE, DoubleState.ON))
    assert a.control(3).status is ControlStatus.ERROR
    a.send(ctl(4, ControlAction.DIRECT, DoubleState.ON))
    assert a.control(4).status is ControlStatus.ERROR
    # blocked at the device: the SELECT is refused with BLOCKED
    sim.os.block("CB")
    a.send(ctl(5, ControlAction.SELECT, DoubleState.ON))
    a.control(5)
    a.send(ctl(6, ControlAction.EXECUTE, DoubleState.ON))
    r = a.control(6)
    assert r.status is ControlStatus.REFUSED_BY_FIELD and "BLOCKED" in r.detail
    assert sim.os.value("CB") == DoubleState.OFF
    sim.os.block("CB", False)
    # local: direct single command refused with LOCAL
    sim.os.set_local(True)
    a.send(ctl(7, ControlAction.DIRECT, 1, address=1, ctype=ControlType.SINGLE))
    r = a.control(7)
    assert r.status is ControlStatus.REFUSED_BY_FIELD and "LOCAL" in r.detail
    sim.os.set_local(False)
    a.send(ctl(8, ControlAction.DIRECT, 1, address=1, ctype=ControlType.SINGLE))
    assert a.control(8).status is ControlStatus.SUCCESS
    # analog output (g41v3 float) direct operate; the status (g40) follows as an event
    a.send(ctl(9, ControlAction.DIRECT, 42.5, ctype=ControlType.SETPOINT_FLOAT))
    assert a.control(9).status is ControlStatus.SUCCESS
    assert sim.os.value("SP") == pytest.approx(42.5)
    wait_for(lambda: (x := a.last_value(SP)) is not None and abs(x["value"] - 42.5) < 1e-4, 10, "set-point status")
    # unknown index
    a.send(ctl(10, ControlAction.DIRECT, 1, address=77, ctype=ControlType.SINGLE))
    assert a.control(10).status is ControlStatus.UNKNOWN_ADDRESS


@pytest.mark.timeout(90)
def test_link_loss_reconnect_and_restart(rig) -> None:
    sim, a = rig()
    a.wait_interrogations()
    # link loss: the outstation drops its server; LinkEvent down at once (socket closed)
    t0 = time.monotonic()
    sim.os.link_down()
    wait_for(lambda: any(not e.up for e in a.of(LinkEvent)), 5, "LinkEvent down")
    assert time.monotonic() - t0 < 5
    mark = a.mark()
    sim.os.set_value("V", 9.5)  # changed while the link is down
    sim.os.link_up()  # a fresh outstation: DEVICE_RESTART, so the master runs its integrity poll
    wait_for(lambda: any(e.up for e in a.of(LinkEvent, mark)), 15, "LinkEvent up after reconnect")
    wait_for(lambda: a.of(InterrogationDone, mark), 15, "integrity after reconnect")
    assert a.last_value(V, mark)["value"] == pytest.approx(9.5, abs=1e-5)
    assert a.counters().get("link_down", 0) >= 1


def test_hostile_values_are_invalid_and_adapter_survives() -> None:
    """NaN/inf from a device are flagged INVALID without a crash (pure conversion; the wire test is below)."""
    from frontend_protocols.dnp3.mapping import PointMap
    from models.points import PointDef, PointKind, PointSource

    pm = PointMap.of(PointDef(0, "X", PointKind.ANALOG, PointSource("dnp3", RTU, LINK, 0, "analog_input")))
    for raw in (math.nan, math.inf, -math.inf):
        value, q, t = pm.convert(raw, 0x01, 0, 0)
        assert math.isnan(value) and q & Quality.INVALID and t == -1


# ------------------------------------------------------------------------------------------------ silent link


@pytest.mark.timeout(90)
def test_silent_link_goes_down_within_timeout() -> None:
    from support import FreezableRelay

    sim_cfg = parse_station_config(station_toml(free_port()))
    sim = Sim(sim_cfg)
    relay = FreezableRelay(int(sim_cfg.rtu(RTU).addresses[0].rsplit(":", 1)[1]))
    a = AdapterProcess(parse_station_config(station_toml(relay.port)), "dnp3", (RTU,))
    try:
        a.wait_interrogations()
        relay.freeze()  # no FIN, no RST: only the master's own supervision can see it
        t0 = time.monotonic()
        wait_for(lambda: any(not e.up for e in a.of(LinkEvent)), 10, "LinkEvent down on a silent link")
        elapsed = time.monotonic() - t0
        # event poll 0.5 s + response time-out 1.5 s; the main loop checks every few ms
        assert elapsed < 2.0 + 1.5, elapsed
        mark = a.mark()
        relay.thaw()
        try:
            wait_for(lambda: a.of(InterrogationDone, mark), 20, "integrity after the link came back")
        except AssertionError:
            print(a.counters(), a.of(LinkEvent))
            raise
    finally:
        a.close()
        relay.close()
        sim.close()


# ------------------------------------------------------------------------------------------------ hostile device


def _crc(data: bytes) -> bytes:
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return (~crc & 0xFFFF).to_bytes(2, "little")


def _frame(user: bytes, *, ctrl: int = 0x44, dest: int = 1, src: int = LINK) -> bytes:
    header = bytes((0x05, 0x64, 5 + len(user), ctrl)) + dest.to_bytes(2, "little") + src.to_bytes(2, "little")
    out = header + _crc(header)
    for i in range(0, len(user), 16):
        block = user[i:i + 16]
        out += block + _crc(block)
    return out


class HostileOutstation(RawServer):
    """A raw TCP server that answers the master with valid responses carrying absurd values (NaN analog, a double
    point in state 3), each preceded by malformed frames: bad CRC, a wrong length field, a truncated frame, an
    illegal application function code and random bytes."""

    def __init__(self) -> None:
        self.requests = 0
        super().__init__()

    def session(self, conn: socket.socket) -> None:
        buf = b""
        for data in self.chunks(conn):
            buf += data
            while len(buf) >= 10 and buf[:2] == b"\x05\x64":
                n = buf[2] - 5  # user data octets
                size = 10 + n + 2 * ((n + 15) // 16)
                if len(buf) < size:
                    break
                frame, buf = buf[:size], buf[size:]
                if n < 3:
                    continue  # link-layer only (link status request): no answer
                seq, func = frame[11] & 0x0F, frame[12]
                self.requests += 1
                objects = b""
                if func == 0x01:  # READ: analog 0 = NaN (g30v5), double-bit 0 = 3 (g3v2)
                    objects = bytes((30, 5, 0x00, 0, 0, 0x01)) + struct.pack("<f", math.nan)
                    objects += bytes((3, 2, 0x00, 0, 0, 0x01 | 0xC0))
                app = bytes((0xC0 | seq, 0x81, 0x00, 0x00)) + objects
                good = _frame(bytes((0xC0,)) + app)
                bad_crc = bytearray(good)
                bad_crc[8] ^= 0xFF
                wrong_len = bytearray(good)
                wrong_len[2] = 0xFF
                illegal = _frame(bytes((0xC0, 0xC0 | seq, 0x7F, 0x00, 0x00)))
                junk = bytes(random.Random(self.requests).randrange(256) for _ in range(40))
                try:
                    conn.sendall(bytes(bad_crc) + bytes(wrong_len[:20]) + junk + illegal + good[:7])
                    time.sleep(0.01)
                    conn.sendall(good)
                except OSError:
                    break


@pytest.mark.timeout(90)
def test_hostile_device_values_invalid_adapter_keeps_running() -> None:
    hostile = HostileOutstation()
    a = AdapterProcess(parse_station_config(station_toml(hostile.port)), "dnp3", (RTU,))
    try:
        wait_for(lambda: a.last_value(V) is not None and a.last_value(CB) is not None, 20,
                 "rows from the hostile device")
        v, cb = a.last_value(V), a.last_value(CB)
        assert math.isnan(v["value"]) and v["quality"] & Quality.INVALID
        assert cb["value"] == 3 and cb["quality"] & Quality.INVALID
        beats = len(a.of(Heartbeat))
        time.sleep(2.0)
        assert a.proc.is_alive()
        assert len(a.of(Heartbeat)) >= beats + 4  # heartbeats every 0.25 s continue
        assert a.counters().get("invalid_values", 0) >= 1
    finally:
        assert a.close() == 0
        hostile.close()


HOSTILE_RTU = "FRTU-X"


def hostile_rtu_toml(port: int) -> str:
    return f"""
[[rtus]]
name = "{HOSTILE_RTU}"
protocol = "dnp3"
common_address = {LINK}
addresses = ["127.0.0.1:{port}"]
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1.0
dnp3 = {{ master_address = 1, event_poll_period_s = 0.5, response_timeout_s = 1.5 }}

[[points]]
name = "XCB"
kind = "double"
rtu = "{HOSTILE_RTU}"
address = 0
type = "double_bit_binary_input"

[[points]]
name = "XV"
kind = "analog"
rtu = "{HOSTILE_RTU}"
address = 0
type = "analog_input"
"""


@pytest.mark.timeout(90)
def test_hostile_device_beside_a_good_rtu_in_one_adapter() -> None:
    """One adapter, two RTUs: the hostile device's garbage must not hold up the well-behaved simulator's values."""
    hostile = HostileOutstation()
    cfg = parse_station_config(station_toml(free_port()) + hostile_rtu_toml(hostile.port))
    xv = next(p.id for p in cfg.points if p.name == "XV")
    sim = Sim(cfg)
    a = AdapterProcess(cfg, "dnp3", (RTU, HOSTILE_RTU))
    try:
        try:
            wait_for(lambda: any(d.rtu == RTU for d in a.of(InterrogationDone)), 20, "integrity poll of the good RTU")
        except AssertionError:
            print("adapter state:", a.of(LinkEvent), a.counters())  # which RTU stalled, and why
            raise
        wait_for(lambda: (r := a.last_value(xv)) is not None and r["quality"] & Quality.INVALID, 20,
                 "INVALID value from the hostile device")
        requests, beats = hostile.requests, len(a.of(Heartbeat))
        for k in range(5):  # the good RTU keeps updating, event by event, while the hostile one sends garbage
            mark = a.mark()
            value = 10.0 + 0.5 * k
            sim.os.set_value("V", value)
            wait_for(lambda m=mark, x=value: (r := a.last_value(V, m)) is not None and r["value"] == pytest.approx(x)
                     and r["quality"] == Quality.GOOD, 10, f"V = {value} from the good RTU")
        assert hostile.requests > requests, "the hostile device was not polled meanwhile"
        assert not [e for e in a.of(LinkEvent) if e.rtu == RTU and not e.up], "the good RTU's link dropped"
        assert a.proc.is_alive() and len(a.of(Heartbeat)) > beats
        wait_for(lambda: a.counters().get("invalid_values", 0) >= 1, 5, "invalid_values counted")
    finally:
        assert a.close() == 0
        sim.close()
        hostile.close()
