"""DNP3 on the wire: our master adapter against our simulated outstation, captured with tshark and decoded by
Wireshark's dnp3 dissector (link CRCs, transport reassembly, application objects; independent of opendnp3)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from adapter_process import AdapterProcess
from support import free_port, wait_for
from wire_capture import Dissection, WireCapture, WireProtocol, start_or_skip, values_in

from models.commands import ControlAction, ControlRequest, ControlStatus, InterrogationRequest
from models.config import parse_station_config
from models.points import ControlType, DoubleState
from rtu_sim.simulator import RtuSimulator

RTU = "RTU-D"
LINK_ADDRESS = 10

# application function codes (IEEE 1815 table 4-1)
READ, SELECT, OPERATE, DIRECT_OPERATE = 1, 3, 4, 5
RESPONSE, UNSOLICITED_RESPONSE = 129, 130


def g(group: int, variation: int) -> int:
    """The object header as the dissector's dnp3.al.obj field holds it: group in the high octet."""
    return group << 8 | variation


CLASS_0, CLASS_1, CLASS_2, CLASS_3 = g(60, 1), g(60, 2), g(60, 3), g(60, 4)
CROB = g(12, 1)
ANALOG_FLOAT = g(30, 5)  # static analog input, single-precision float with flag
ANALOG_EVENT_FLOAT_TIME = g(32, 7)  # analog input event, single-precision float with time
BINARY_EVENTS = frozenset({g(2, 1), g(2, 2), g(2, 3), g(4, 1), g(4, 2), g(4, 3)})
ANALOG_EVENTS = frozenset(g(32, v) for v in range(1, 9))


def station_toml(port: int) -> str:
    return f"""
[station]
name = "dnp3 wire test"

[[rtus]]
name = "{RTU}"
protocol = "dnp3"
common_address = {LINK_ADDRESS}
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
connect_timeout_s = 2.0
# sim_unsolicited: the simulated outstation sends UNSOLICITED RESPONSEs too (off by default: its unsolicited analog
# events are integers without time), so both response kinds are on the wire
dnp3 = {{ master_address = 1, sim_unsolicited = true }}

[[points]]
name = "D/CB"
kind = "double"
rtu = "{RTU}"
address = 0
type = "double_bit_binary_input"
element = "D-CB"
control = {{ type = "double", address = 0, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "D/PROT_TRIP"
kind = "single"
rtu = "{RTU}"
address = 0
type = "binary_input"
element = "D-CB"

[[points]]
name = "D/V"
kind = "analog"
rtu = "{RTU}"
address = 0
type = "analog_input"
units = "kV"
sim = {{ nominal = 11.0 }}

[[points]]
name = "D/FAN"
kind = "command"
rtu = "{RTU}"
control = {{ type = "single", address = 1, mode = "direct" }}
"""


@dataclass(frozen=True, slots=True)
class Fragment:
    """One application-layer fragment: who sent it, its function code, its object headers and control statuses."""

    frame: int
    from_master: bool
    function: int
    objects: tuple[int, ...]
    control_status: tuple[int, ...]


def fragments(d: Dissection, outstation_port: int) -> list[Fragment]:
    out = []
    for frame, layer in d.layers("dnp3"):
        funcs = values_in(layer, "dnp3.al.func")
        if not funcs:
            continue  # a link-layer-only frame (link status) or a transport segment of a longer fragment
        out.append(Fragment(frame.number, frame.dst_port == outstation_port, int(funcs[0], 0),
                            tuple(int(v, 0) for v in values_in(layer, "dnp3.al.obj")),
                            tuple(int(v, 0) for v in values_in(layer, "dnp3.al.ctrlstatus"))))
    return out


def objects_of(frags: Iterable[Fragment]) -> set[int]:
    return {obj for f in frags for obj in f.objects}


def names(objs: Iterable[int]) -> list[str]:
    return sorted(f"g{o >> 8}v{o & 0xFF}" for o in objs)


@pytest.mark.timeout(90)
def test_dnp3_wire_decodes_cleanly(tmp_path: Path) -> None:
    port = free_port()
    config = parse_station_config(station_toml(port))
    capture = start_or_skip(WireCapture([port], tmp_path, {port: WireProtocol.DNP3}, name="dnp3"))
    sim = RtuSimulator(config, physics=False)
    try:
        sim.start()
        with AdapterProcess(config, "dnp3", (RTU,)) as adapter:
            adapter.wait_interrogations(1)
            cb, prot, v, fan = (config.point(n).id for n in ("D/CB", "D/PROT_TRIP", "D/V", "D/FAN"))

            # events: a protection trip and a new voltage, delivered unsolicited (or by the event poll)
            mark = adapter.mark()
            sim.trip("D/CB")
            sim.set_value("D/V", 12.5)
            wait_for(lambda: all(adapter.last_value(p, mark) is not None for p in (cb, prot, v)), 10,
                     "event rows of CB, PROT_TRIP and V")

            # SELECT then OPERATE of a CROB closing the breaker; a DIRECT_OPERATE CROB on the fan
            for rid, action in ((1, ControlAction.SELECT), (2, ControlAction.EXECUTE)):
                adapter.send(ControlRequest(rid, cb, RTU, LINK_ADDRESS, 0, ControlType.DOUBLE, action, DoubleState.ON,
                                            5.0))
                result = adapter.control(rid)
                assert result.status is ControlStatus.SUCCESS, result
            wait_for(lambda: sim.value("D/CB") == DoubleState.ON, 10, "the simulated breaker closed")
            adapter.send(ControlRequest(3, fan, RTU, LINK_ADDRESS, 1, ControlType.SINGLE, ControlAction.DIRECT, 1, 5.0))
            result = adapter.control(3)
            assert result.status is ControlStatus.SUCCESS, result

            # an integrity poll on demand
            adapter.send(InterrogationRequest(RTU))
            adapter.wait_interrogations(2)
            assert adapter.close() == 0
    finally:
        sim.stop()
        capture.stop()

    d = capture.decode()
    assert not d.problems, d.report()
    assert not d.warnings_in("dnp3"), d.warnings_in("dnp3")
    assert d.frames and all("dnp3" in f.protocols for f in d.frames), d.summary()
    frags = fragments(d, port)
    requests = [f for f in frags if f.from_master]
    answers = [f for f in frags if not f.from_master]
    print(f"dnp3: {d.counts()}; {len(frags)} fragments; "
          f"requests {sorted({f.function for f in requests})}, answers {sorted({f.function for f in answers})}; "
          f"requested {names(objects_of(requests))}; answered {names(objects_of(answers))}")

    reads = [f for f in requests if f.function == READ]
    assert {CLASS_0, CLASS_1, CLASS_2, CLASS_3} <= objects_of(reads), names(objects_of(reads))
    # the explicit read after the class poll asks for floats and time-tagged events, and gets them
    assert {ANALOG_FLOAT, ANALOG_EVENT_FLOAT_TIME} <= objects_of(reads), names(objects_of(reads))
    assert ANALOG_FLOAT in objects_of(f for f in answers if f.function == RESPONSE)

    unsolicited = [f for f in answers if f.function == UNSOLICITED_RESPONSE]
    assert unsolicited, "no UNSOLICITED RESPONSE"
    event_objects = objects_of(f for f in answers if f.function in (RESPONSE, UNSOLICITED_RESPONSE))
    assert event_objects & BINARY_EVENTS and event_objects & ANALOG_EVENTS, names(event_objects)

    # the controls: function, CROB object, and a SUCCESS status (0) echoed in the answer
    controls = [(f.function, f.objects) for f in requests if f.function in (SELECT, OPERATE, DIRECT_OPERATE)]
    assert controls == [(SELECT, (CROB,)), (OPERATE, (CROB,)), (DIRECT_OPERATE, (CROB,))], controls
    echoed = [f for f in answers if f.function == RESPONSE and CROB in f.objects]
    assert len(echoed) == 3 and all(f.control_status == (0,) for f in echoed), echoed
