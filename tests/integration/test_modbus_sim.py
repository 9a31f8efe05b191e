"""The simulator's Modbus devices seen by a plain pymodbus client: many servers on one loop thread, device-like
answers to writes (exceptions 0x02/0x03/0x04), link loss."""

from __future__ import annotations

import struct
import threading
import time

import pytest
from pymodbus.client import ModbusTcpClient
from support import wait_for

from models.config import parse_station_config
from models.points import DoubleState
from models.samples import free_tcp_ports
from rtu_sim.simulator import RtuSimulator

N_DEVICES = 24


def station(ports: list[int]) -> str:
    parts = ['[station]\nname = "modbus sim test"\n']
    for k, port in enumerate(ports):
        parts.append(f"""
[[rtus]]
name = "M{k}"
protocol = "modbus"
common_address = {1 + k % 200}
addresses = ["127.0.0.1:{port}"]
modbus = {{ word_order = "{'little' if k % 2 else 'big'}" }}

[[points]]
name = "M{k}.CB"
kind = "double"
rtu = "M{k}"
address = 0
type = "input_uint16"
control = {{ type = "double", address = 0, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "M{k}.TRIP"
kind = "single"
rtu = "M{k}"
address = 5
type = "discrete_input"

[[points]]
name = "M{k}.V"
kind = "analog"
rtu = "M{k}"
address = 1000
type = "input_float32"
sim = {{ nominal = {10 + k} }}

[[points]]
name = "M{k}.SP"
kind = "setpoint"
rtu = "M{k}"
address = 20
type = "holding_float32"
control = {{ type = "setpoint_float", address = 20, mode = "direct" }}
sim = {{ nominal = 1.0 }}

[[points]]
name = "M{k}.P"
kind = "analog"
rtu = "M{k}"
address = 30
type = "holding_int16"
""")
    return "".join(parts)


def f32(words: list[int], little: bool) -> float:
    w = words[::-1] if little else words
    return float(struct.unpack(">f", struct.pack(">HH", *w))[0])


@pytest.mark.timeout(90)
def test_many_devices_one_loop_and_device_answers() -> None:
    ports = free_tcp_ports(N_DEVICES)
    cfg = parse_station_config(station(ports))
    threads_before = threading.active_count()
    sim = RtuSimulator(cfg, physics=False, seed=1)
    sim.start()
    clients: list[ModbusTcpClient] = []
    try:
        # one asyncio loop thread serves every device (plus the simulator's own loop thread)
        assert threading.active_count() - threads_before <= 3
        for k, port in enumerate(ports):
            c = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            assert c.connect(), port
            clients.append(c)
            unit = 1 + k % 200
            r = c.read_input_registers(1000, count=2, device_id=unit)
            assert not r.isError() and f32(r.registers, bool(k % 2)) == pytest.approx(10 + k, rel=1e-6)
            assert c.read_input_registers(0, count=1, device_id=unit).registers == [2]
        t0 = time.perf_counter()
        for _ in range(10):
            for k, c in enumerate(clients):
                assert not c.read_input_registers(1000, count=2, device_id=1 + k % 200).isError()
        per_read_ms = (time.perf_counter() - t0) * 1000 / (10 * N_DEVICES)
        print(f"{N_DEVICES} devices on one loop: {per_read_ms:.2f} ms per read")

        c, o = clients[1], sim.outstation("M1")  # little word order
        # reads outside the device memory: 0x02
        r = c.read_input_registers(2000, count=1, device_id=2)
        assert r.isError() and r.exception_code == 0x02
        r = c.read_coils(0, count=1, device_id=2)  # the device has no coils at all
        assert r.isError() and r.exception_code == 0x02
        # the gap between configured registers reads as 0
        assert c.read_input_registers(0, count=1, device_id=2).registers == [2]
        r = c.read_holding_registers(20, count=11, device_id=2)
        assert not r.isError() and r.registers[2:10] == [0] * 8
        # writes: not a command -> 0x02; half a float -> 0x03; DPI 3 -> 0x03; accepted double -> state follows
        assert c.write_register(30, 5, device_id=2).exception_code == 0x02
        assert c.write_register(20, 5, device_id=2).exception_code == 0x03
        assert c.write_register(0, 3, device_id=2).exception_code == 0x03
        r = c.write_register(0, 1, device_id=2)
        assert not r.isError()
        wait_for(lambda: c.read_input_registers(0, count=1, device_id=2).registers == [1], 5, "breaker open")
        assert o.value("M1.CB") == DoubleState.OFF
        words = list(struct.unpack(">HH", struct.pack(">f", 7.5)))[::-1]
        assert not c.write_registers(20, words, device_id=2).isError()
        assert o.value("M1.SP") == 7.5
        # blocked and local: 0x04 SERVER_DEVICE_FAILURE, nothing changes
        sim.block("M1.CB")
        assert c.write_register(0, 2, device_id=2).exception_code == 0x04
        sim.block("M1.CB", False)
        o.set_local(True)
        assert c.write_register(0, 2, device_id=2).exception_code == 0x04
        o.set_local(False)
        assert o.value("M1.CB") == DoubleState.OFF
        assert o.stats().commands_refused >= 5

        # set values reach the registers, a float32 INVALID is NaN
        sim.set_value("M1.TRIP", 1)
        wait_for(lambda: c.read_discrete_inputs(5, count=1, device_id=2).bits[0], 5, "trip bit")
        assert c.read_discrete_inputs(0, count=8, device_id=2).bits[:6] == [False] * 5 + [True]
        assert o.stats().clients == 1

        # link down drops the connected master
        sim.link_down("M1")
        with pytest.raises(Exception):  # noqa: B017 - pymodbus raises ConnectionException or ModbusIOException
            r = c.read_input_registers(0, count=1, device_id=2)
            if r.isError():
                raise RuntimeError("error answer")
        sim.link_up("M1")
        c2 = ModbusTcpClient("127.0.0.1", port=ports[1], timeout=2, retries=0)
        assert c2.connect()
        assert c2.read_input_registers(0, count=1, device_id=2).registers == [1]
        c2.close()
    finally:
        for c in clients:
            c.close()
        sim.stop()
