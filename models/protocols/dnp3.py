"""DNP3 addressing: point indexes per object type under the outstation's link address (the RTU's common_address).

Point types (``type``): ``binary_input`` (single, groups 1/2), ``double_bit_binary_input`` (double, groups 3/4),
``analog_input`` (analog, groups 30/32), ``counter`` (groups 20/22), ``analog_output_status`` (set-point status,
group 40). Controls: single and double commands are CROBs (group 12) at the control's index, set-points are analog
outputs (group 41). Each object type has its own index space.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from models.measurement_points import DerivedPoint
from models.points import ControlType, PointDef, PointKind
from models.protocols import SETPOINT_CONTROL, DerivedAddress, OptionReader

MONITOR_TYPES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({"binary_input"}),
    PointKind.DOUBLE: frozenset({"double_bit_binary_input"}),
    PointKind.ANALOG: frozenset({"analog_input"}),
    PointKind.COUNTER: frozenset({"counter"}),
    PointKind.SETPOINT: frozenset({"analog_output_status"}),
    PointKind.COMMAND: frozenset({""}),
}
ADDRESS_RANGE = (0, 65_535)
LINK_ADDRESS_RANGE = (0, 65_519)  # 0xFFF0.. are broadcast/reserved


@dataclass(frozen=True, slots=True)
class Options:
    master_address: int = 1  # the master's own link address
    # Event (class 1/2/3) poll period; 0 derives it from the RTU's update budgets. The master accepts unsolicited
    # responses (opendnp3 enables them after its start-up sequence and offers no way to leave them off), the poll is
    # what carries events from outstations that cannot send them with time (see the simulator).
    event_poll_period_s: float = 0.0
    response_timeout_s: float = 5.0
    keepalive_s: float = 10.0  # link status request after this much silence
    time_sync: bool = True  # write the time when the outstation asks for it (IIN1.4 NEED_TIME)
    # Simulator only: let the simulated outstation send unsolicited responses. Off by default because the yadnp3
    # binding cannot configure event variations, so they would carry integers without time (g32v1, g2v1).
    sim_unsolicited: bool = False


def parse_options(r: OptionReader) -> Options:
    master = r.get("master_address", int, 1)
    assert isinstance(master, int)
    if not LINK_ADDRESS_RANGE[0] <= master <= LINK_ADDRESS_RANGE[1]:
        raise r.fail("master_address", f"must be {LINK_ADDRESS_RANGE[0]}..{LINK_ADDRESS_RANGE[1]}, got {master}")
    opts = Options(
        master_address=master,
        event_poll_period_s=r.positive("event_poll_period_s", 0.0, allow_zero=True),
        response_timeout_s=r.positive("response_timeout_s", 5.0),
        keepalive_s=r.positive("keepalive_s", 10.0),
        time_sync=bool(r.get("time_sync", bool, True)),
        sim_unsolicited=bool(r.get("sim_unsolicited", bool, False)),
    )
    r.finish()
    return opts


def control_object(ctype: ControlType) -> str:
    return "analog_output" if ctype in (ControlType.SETPOINT_FLOAT, ControlType.SETPOINT_SCALED) else "crob"


def address_keys(p: PointDef) -> list[Hashable]:
    keys: list[Hashable] = [] if p.kind is PointKind.COMMAND else [(p.source.type_id, p.source.address)]
    if p.control is not None:
        keys.append((control_object(p.control.type), p.control.address))
    return keys


_TYPE_OF_KIND = {"single": "binary_input", "double": "double_bit_binary_input", "analog": "analog_input",
                 "counter": "counter", "setpoint": "analog_output_status"}


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    """Indexes from 0 per object type in the derived order (status points by name, then analogs, then set-points):
    a set-point is an analog output status (g40) commanded by the analog output (g41) of its own index space."""
    next_index: dict[str, int] = {}
    out = []
    for d in points:
        t = _TYPE_OF_KIND[d.kind]
        index = next_index.get(t, 0)
        next_index[t] = index + 1
        if d.kind == PointKind.SETPOINT.value:
            ctl = next_index.get("analog_output", 0)
            next_index["analog_output"] = ctl + 1
            out.append(DerivedAddress(t, index, control_address=ctl, **SETPOINT_CONTROL))
            continue
        ctl = None
        if d.control_address is not None:
            ctl = next_index.get("crob", 0)
            next_index["crob"] = ctl + 1
        out.append(DerivedAddress(t, index, control_address=ctl))
    return out
