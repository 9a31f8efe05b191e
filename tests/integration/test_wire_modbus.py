"""Modbus TCP on the wire: our master adapter against our simulated device, captured with tshark and decoded by
Wireshark's mbtcp/modbus dissectors (MBAP header lengths, PDU layouts; independent of pymodbus)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from adapter_process import AdapterProcess
from support import free_port, wait_for
from wire_capture import Dissection, WireCapture, WireProtocol, start_or_skip, values_in

from models.commands import ControlAction, ControlRequest, ControlStatus
from models.config import parse_station_config
from models.points import ControlType, DoubleState
from rtu_sim.simulator import RtuSimulator

RTU = "RTU-M"
UNIT_ID = 5

# function codes (Modbus application protocol v1.1b3, 6.1-6.12)
READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING, READ_INPUT = 1, 2, 3, 4
WRITE_COIL, WRITE_REGISTER, WRITE_REGISTERS = 5, 6, 16


def station_toml(port: int) -> str:
    return f"""
[station]
name = "modbus wire test"

[[rtus]]
name = "{RTU}"
protocol = "modbus"
common_address = {UNIT_ID}
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
connect_timeout_s = 2.0
modbus = {{ digital_scan_s = 0.5, analog_scan_s = 0.5 }}

[[points]]
name = "M/CB"
kind = "double"
rtu = "{RTU}"
address = 0
type = "holding_uint16"
control = {{ type = "double", address = 0, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "M/LR"
kind = "single"
rtu = "{RTU}"
address = 0
type = "discrete_input"
sim = {{ nominal = 1 }}

[[points]]
name = "M/FAN"
kind = "single"
rtu = "{RTU}"
address = 0
type = "coil"
control = {{ type = "single", address = 0, mode = "direct" }}

[[points]]
name = "M/P"
kind = "analog"
rtu = "{RTU}"
address = 0
type = "input_float32"
units = "kW"
sim = {{ nominal = 40.0 }}

[[points]]
name = "M/VSET"
kind = "setpoint"
rtu = "{RTU}"
address = 10
type = "holding_float32"
units = "kV"
control = {{ type = "setpoint_float", address = 10, mode = "direct" }}
sim = {{ nominal = 11.0 }}
"""


@dataclass(frozen=True, slots=True)
class Pdu:
    frame: int
    from_master: bool
    unit_id: int
    function: int
    exception: bool


def pdus(d: Dissection, device_port: int) -> list[Pdu]:
    """Each Modbus ADU: the dissector puts one mbtcp (MBAP header) and one modbus (PDU) layer per ADU, in order."""
    out = []
    for frame in d.of("mbtcp"):
        headers, bodies = frame.layer("mbtcp"), frame.layer("modbus")
        assert len(headers) == len(bodies), f"frame {frame.number}: {len(headers)} MBAP headers, {len(bodies)} PDUs"
        for header, body in zip(headers, bodies, strict=True):
            out.append(Pdu(frame.number, frame.dst_port == device_port, int(values_in(header, "mbtcp.unit_id")[0]),
                           int(values_in(body, "modbus.func_code")[0], 0) & 0x7F,
                           bool(values_in(body, "modbus.exception_code"))))
    return out


@pytest.mark.timeout(90)
def test_modbus_wire_decodes_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = parse_station_config(station_toml(port))
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.MODBUS}, name="modbus"))
    sim = RtuSimulator(config, physics=False)
    try:
        sim.start()
        with AdapterProcess(config, "modbus", (RTU,)) as adapter:
            adapter.wait_interrogations(1)
            cb, fan, p, vset = (config.point(n).id for n in ("M/CB", "M/FAN", "M/P", "M/VSET"))

            mark = adapter.mark()
            sim.set_value("M/P", 42.5)
            wait_for(lambda: (r := adapter.last_value(p, mark)) is not None and r["value"] == pytest.approx(42.5), 10,
                     "the new power value scanned")

            # double command (select checked locally, execute writes the DPI register), coil, float set-point
            for rid, action in ((1, ControlAction.SELECT), (2, ControlAction.EXECUTE)):
                adapter.send(ControlRequest(rid, cb, RTU, UNIT_ID, 0, ControlType.DOUBLE, action, DoubleState.OFF, 5.0))
                result = adapter.control(rid)
                assert result.status is ControlStatus.SUCCESS, result
            adapter.send(ControlRequest(3, fan, RTU, UNIT_ID, 0, ControlType.SINGLE, ControlAction.DIRECT, 1, 5.0))
            adapter.send(ControlRequest(4, vset, RTU, UNIT_ID, 10, ControlType.SETPOINT_FLOAT, ControlAction.DIRECT,
                                        11.5, 5.0))
            for rid in (3, 4):
                result = adapter.control(rid)
                assert result.status is ControlStatus.SUCCESS, result
            wait_for(lambda: sim.value("M/CB") == DoubleState.OFF and sim.value("M/FAN") == 1.0
                     and sim.value("M/VSET") == pytest.approx(11.5, abs=1e-4), 10, "the device applied all writes")
            assert adapter.close() == 0
    finally:
        sim.stop()
        capture.stop()

    d = capture.decode()
    assert not d.problems, d.report()
    assert not d.warnings_in("mbtcp", "modbus"), d.warnings_in("mbtcp", "modbus")
    assert d.frames and all("mbtcp" in f.protocols for f in d.frames), d.summary()
    seen = pdus(d, port)
    requests = {x.function for x in seen if x.from_master}
    answers = {x.function for x in seen if not x.from_master}
    print(f"modbus: {d.counts()}; {len(seen)} PDUs; "
          f"request functions {sorted(requests)}, answer functions {sorted(answers)}")
    assert {x.unit_id for x in seen} == {UNIT_ID}
    assert not any(x.exception for x in seen), [x for x in seen if x.exception]
    expected = {READ_COILS, READ_DISCRETE_INPUTS, READ_HOLDING, READ_INPUT, WRITE_COIL, WRITE_REGISTER,
                WRITE_REGISTERS}
    assert expected <= requests, sorted(requests)
    assert expected <= answers, sorted(answers)
    # every request is answered (one transaction each; a response without a request would be a dissector error)
    assert sum(x.from_master for x in seen) == sum(not x.from_master for x in seen)
