"""IEC 61850 MMS on the wire: our master adapter against our simulated IED, captured with tshark and decoded by
Wireshark's TPKT/COTP/session/presentation/ACSE/MMS dissectors (independent of libiec61850)."""

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

RTU = "IED-W"
IED = "IEDW"

# MMS service tags (ISO 9506-2 ConfirmedServiceRequest / UnconfirmedService choices)
GET_NAME_LIST, READ, WRITE = 1, 4, 5
INFORMATION_REPORT = 0
STACK = ("tpkt", "cotp", "ses", "pres", "acse", "mms")


def station_toml(port: int) -> str:
    return f"""
[station]
name = "iec61850 wire test"

[[rtus]]
name = "{RTU}"
protocol = "iec61850"
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
connect_timeout_s = 2.0
iec61850 = {{ ied_name = "{IED}", buffered_reports = true }}

[[points]]
name = "I/CB"
kind = "double"
rtu = "{RTU}"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = {{ type = "double", reference = "LD0/XCBR1.Pos", mode = "sbo_enhanced" }}
sim = {{ nominal = 2 }}

[[points]]
name = "I/W"
kind = "analog"
rtu = "{RTU}"
type = "MV"
reference = "LD0/MMXU1.TotW"
units = "kW"
sim = {{ nominal = 400.0 }}

[[points]]
name = "I/FAN"
kind = "single"
rtu = "{RTU}"
type = "SPC"
reference = "LD0/GGIO1.SPCSO1"
control = {{ type = "single", reference = "LD0/GGIO1.SPCSO1", mode = "direct" }}
"""


@dataclass(frozen=True, slots=True)
class MmsPdu:
    frame: int
    from_client: bool
    kind: str  # initiate-request, confirmed-request, confirmed-response, unconfirmed, ...
    service: int  # the confirmed or unconfirmed service tag, -1 for others
    items: tuple[str, ...]  # the itemIds it names (variable names such as XCBR1$CO$Pos$Oper)
    failures: int  # DataAccessError results in it


_KINDS = {
    "mms.initiate_RequestPDU_element": "initiate-request",
    "mms.initiate_ResponsePDU_element": "initiate-response",
    "mms.confirmed_RequestPDU_element": "confirmed-request",
    "mms.confirmed_ResponsePDU_element": "confirmed-response",
    "mms.confirmed_ErrorPDU_element": "confirmed-error",
    "mms.unconfirmed_PDU_element": "unconfirmed",
    "mms.conclude_RequestPDU_element": "conclude-request",
    "mms.conclude_ResponsePDU_element": "conclude-response",
}


def mms_pdus(d: Dissection, server_port: int) -> list[MmsPdu]:
    out = []
    for frame, layer in d.layers("mms"):
        for key, kind in _KINDS.items():
            if key in layer:
                body = layer[key]
                service = [v for name in ("mms.confirmedServiceRequest", "mms.confirmedServiceResponse",
                                          "mms.unconfirmedService") for v in values_in(body, name)]
                out.append(MmsPdu(frame.number, frame.dst_port == server_port, kind,
                                  int(service[0]) if service else -1, tuple(values_in(body, "mms.itemId")),
                                  len(values_in(body, "mms.failure"))))
    return out


@pytest.mark.timeout(90)
def test_iec61850_wire_decodes_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = parse_station_config(station_toml(port))
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.MMS}, name="mms"))
    sim = RtuSimulator(config, physics=False)
    try:
        sim.start()
        with AdapterProcess(config, "iec61850", (RTU,)) as adapter:
            adapter.wait_interrogations(1, timeout_s=30)
            cb, w, fan = (config.point(n).id for n in ("I/CB", "I/W", "I/FAN"))

            # reports: a breaker trip and a new power value reach the adapter as informationReports
            mark = adapter.mark()
            sim.trip("I/CB")
            sim.set_value("I/W", 420.0)
            wait_for(lambda: all(adapter.last_value(p, mark) is not None for p in (cb, w)), 10, "reported rows")

            # select-before-operate with enhanced security (SBOw write, Oper write), and a direct operate
            for rid, action in ((1, ControlAction.SELECT), (2, ControlAction.EXECUTE)):
                adapter.send(ControlRequest(rid, cb, RTU, 0, 0, ControlType.DOUBLE, action, DoubleState.ON, 5.0))
                result = adapter.control(rid)
                assert result.status is ControlStatus.SUCCESS, result
            adapter.send(ControlRequest(3, fan, RTU, 0, 0, ControlType.SINGLE, ControlAction.DIRECT, 1, 5.0))
            result = adapter.control(3)
            assert result.status is ControlStatus.SUCCESS, result
            wait_for(lambda: sim.value("I/CB") == DoubleState.ON and sim.value("I/FAN") == 1.0, 10,
                     "the simulated IED operated both")
            assert adapter.close() == 0
    finally:
        sim.stop()
        capture.stop()

    d = capture.decode()
    assert not d.problems, d.report()
    assert not d.warnings_in(*STACK), d.warnings_in(*STACK)
    assert d.frames and all("cotp" in f.protocols for f in d.frames), d.summary()
    pdus = mms_pdus(d, port)
    requests = {p.service for p in pdus if p.from_client and p.kind == "confirmed-request"}
    answers = {p.service for p in pdus if not p.from_client and p.kind == "confirmed-response"}
    print(f"mms: {d.counts()}; {len(pdus)} MMS PDUs; "
          f"kinds {sorted({p.kind for p in pdus})}, requests {sorted(requests)}, responses {sorted(answers)}")
    assert (True, "initiate-request") in {(p.from_client, p.kind) for p in pdus}
    assert (False, "initiate-response") in {(p.from_client, p.kind) for p in pdus}
    assert {READ, WRITE} <= requests and {READ, WRITE} <= answers, (requests, answers)
    assert not [p for p in pdus if p.kind == "confirmed-error"]

    writes = [p for p in pdus if p.from_client and p.kind == "confirmed-request" and p.service == WRITE]
    written = [item for p in writes for item in p.items]
    assert any(("$BR$" in i or "$RP$" in i) and i.endswith("$RptEna") for i in written), written
    assert any(i.endswith("XCBR1$CO$Pos$SBOw") for i in written), written
    assert any(i.endswith("XCBR1$CO$Pos$Oper") for i in written), written
    assert any(i.endswith("GGIO1$CO$SPCSO1$Oper") for i in written), written
    write_answers = [p for p in pdus if not p.from_client and p.kind == "confirmed-response" and p.service == WRITE]
    assert write_answers and not any(p.failures for p in write_answers), write_answers

    reports = [p for p in pdus if not p.from_client and p.kind == "unconfirmed" and p.service == INFORMATION_REPORT]
    assert reports, "no informationReport"
