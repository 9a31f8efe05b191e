"""IEC 60870-5-104 on the wire: our master adapter against our simulator, captured with tshark and decoded by
Wireshark's iec60870_104 dissector (an implementation independent of lib60870)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from adapter_process import AdapterProcess
from support import free_port, wait_for
from wire_capture import Dissection, WireCapture, WireProtocol, start_or_skip, values_in

from models.commands import ClockSyncRequest, ControlAction, ControlRequest, ControlStatus
from models.config import parse_station_config
from models.points import ControlType, DoubleState
from rtu_sim.simulator import RtuSimulator

RTU = "RTU-W"
CA = 11

# type identifications and causes of transmission (IEC 60870-5-101 7.2.1 / 7.2.3)
M_SP_TB_1, M_DP_TB_1, M_ME_TF_1, C_DC_NA_1, C_IC_NA_1, C_CS_NA_1 = 30, 31, 36, 46, 100, 103
SPONT, ACT, ACTCON, ACTTERM, INROGEN = 3, 6, 7, 10, 20
# U-format functions as the dissector numbers them (iec60870_104.utype)
STARTDT_ACT, STARTDT_CON = 0x01, 0x02


def station_toml(port: int) -> str:
    return f"""
[station]
name = "iec104 wire test"

[[rtus]]
name = "{RTU}"
common_address = {CA}
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
connect_timeout_s = 2.0

[[points]]
name = "W/CB"
kind = "double"
rtu = "{RTU}"
address = 1001
type = "M_DP_TB_1"
element = "W-CB"
control = {{ type = "double", address = 6001, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "W/PROT_TRIP"
kind = "single"
rtu = "{RTU}"
address = 1011
type = "M_SP_TB_1"
element = "W-CB"

[[points]]
name = "W/V"
kind = "analog"
rtu = "{RTU}"
address = 2001
type = "M_ME_TF_1"
units = "kV"
sim = {{ nominal = 11.0 }}
"""


@dataclass(frozen=True, slots=True)
class Asdu:
    frame: int
    from_master: bool
    type_id: int
    cot: int
    negative: bool
    select: bool | None  # S/E bit of a command's qualifier, None for other types


def asdus(d: Dissection, outstation_port: int) -> list[Asdu]:
    out = []
    for frame, layer in d.layers("iec60870_asdu"):
        se = values_in(layer, "iec60870_asdu.dco.se") or values_in(layer, "iec60870_asdu.sco.se")
        out.append(Asdu(frame.number, frame.dst_port == outstation_port,
                        int(values_in(layer, "iec60870_asdu.typeid")[0]),
                        int(values_in(layer, "iec60870_asdu.causetx")[0]),
                        values_in(layer, "iec60870_asdu.nega")[0] == "1",
                        (se[0] == "1") if se else None))
    return out


@pytest.mark.timeout(90)
def test_iec104_wire_decodes_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = parse_station_config(station_toml(port))
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.IEC104}, name="iec104"))
    sim = RtuSimulator(config, physics=False)
    try:
        sim.start()
        with AdapterProcess(config, "iec104", (RTU,)) as adapter:
            adapter.wait_interrogations(1)
            cb, prot, v = (config.point(n).id for n in ("W/CB", "W/PROT_TRIP", "W/V"))

            # spontaneous, time-tagged: a protection trip (M_SP_TB_1 then M_DP_TB_1) and a new voltage (M_ME_TF_1)
            mark = adapter.mark()
            sim.trip("W/CB")
            sim.set_value("W/V", 12.5)
            wait_for(lambda: all(adapter.last_value(p, mark) is not None for p in (cb, prot, v)), 10,
                     "spontaneous rows of CB, PROT_TRIP and V")

            # select-before-operate double command (C_DC_NA_1 select, then execute) closing the breaker again
            for rid, action in ((1, ControlAction.SELECT), (2, ControlAction.EXECUTE)):
                adapter.send(ControlRequest(rid, cb, RTU, CA, 6001, ControlType.DOUBLE, action, DoubleState.ON, 5.0))
                result = adapter.control(rid)
                assert result.status is ControlStatus.SUCCESS, result
            wait_for(lambda: sim.value("W/CB") == DoubleState.ON, 10, "the simulated breaker closed")

            adapter.send(ClockSyncRequest(RTU))
            wait_for(lambda: adapter.counters().get("clock_sync_done", 0) >= 1, 10, "clock synchronisation confirmed")
            assert adapter.close() == 0
    finally:
        sim.stop()
        capture.stop()

    d = capture.decode()
    assert not d.problems, d.report()
    assert not d.warnings_in("iec60870_104", "iec60870_asdu"), d.warnings_in("iec60870_104", "iec60870_asdu")
    apdus = d.layers("iec60870_104")
    assert apdus and all("iec60870_104" in f.protocols for f in d.frames), d.summary()
    utypes = [(f.dst_port == port, int(values_in(x, "iec60870_104.utype")[0], 0))
              for f, x in apdus if values_in(x, "iec60870_104.utype")]
    assert (True, STARTDT_ACT) in utypes and (False, STARTDT_CON) in utypes, utypes

    seen = asdus(d, port)
    kinds = {(a.from_master, a.type_id, a.cot) for a in seen}
    print(f"iec104: {d.counts()}; {len(seen)} ASDUs; "
          f"(from master, type, cause) = {sorted(kinds)}")
    assert not any(a.negative for a in seen), [a for a in seen if a.negative]
    # general interrogation: activation from the master, confirmation and termination from the outstation
    assert {(True, C_IC_NA_1, ACT), (False, C_IC_NA_1, ACTCON), (False, C_IC_NA_1, ACTTERM)} <= kinds
    assert {(False, M_DP_TB_1, INROGEN), (False, M_SP_TB_1, INROGEN), (False, M_ME_TF_1, INROGEN)} <= kinds
    # spontaneous time-tagged reports
    assert {(False, M_SP_TB_1, SPONT), (False, M_DP_TB_1, SPONT), (False, M_ME_TF_1, SPONT)} <= kinds
    # the double command: select then execute, each confirmed positively
    commands = [a for a in seen if a.type_id == C_DC_NA_1]
    assert [(a.from_master, a.cot, a.select) for a in commands if a.cot in (ACT, ACTCON)] == [
        (True, ACT, True), (False, ACTCON, True), (True, ACT, False), (False, ACTCON, False)], commands
    # clock synchronisation
    assert {(True, C_CS_NA_1, ACT), (False, C_CS_NA_1, ACTCON)} <= kinds


@pytest.mark.timeout(60)
def test_harness_reports_a_malformed_asdu(tmp_path: Path) -> None:
    """The check above can fail: an M_ME_TF_1 ASDU announcing three objects but carrying one is flagged."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.IEC104}, name="garbled"))
    try:
        obj = (2001).to_bytes(3, "little") + bytes(4) + b"\x00" + bytes(7)  # IOA, float, QDS, CP56Time2a
        asdu = bytes([M_ME_TF_1, 3, SPONT, 0]) + CA.to_bytes(2, "little") + obj  # VSQ says 3 objects
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                server.sendall(bytes([0x68, len(asdu) + 4, 0, 0, 0, 0]) + asdu)
                assert len(client.recv(4096)) == len(asdu) + 6
    finally:
        listener.close()
        capture.stop()
    d = capture.decode()
    assert d.of("iec60870_asdu"), d.summary()
    assert [(p.frame, p.layer) for p in d.problems] == [(d.frames[0].number, "iec60870_asdu")], d.problems
    assert "malformed" in d.problems[0].text.lower()
