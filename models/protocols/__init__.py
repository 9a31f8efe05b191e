"""Per-protocol addressing: which point types a protocol offers, how its addresses are checked for clashes, its RTU
options, and how the points derived from CIM measurements get addresses on it.

One module per protocol (``iec104``, ``dnp3``, ``modbus``, ``iec61850``), each exposing the same names:

- ``MONITOR_TYPES``: point kind -> the ``type`` strings a point of that kind may have on this protocol;
- ``address_keys(point)``: hashable keys of every protocol address the point occupies (monitoring and control);
  two points of one RTU sharing a key are a configuration error;
- ``Options`` and ``parse_options(reader)``: the RTU's protocol table (``dnp3 = {...}`` etc.), validated;
- ``assign_derived(points)``: protocol addresses for the CIM-derived points of one RTU (see ``DerivedAddress``).

Nothing here imports a protocol library: the configuration is loaded by every process.
"""

from __future__ import annotations

from dataclasses import dataclass

from models.points import ControlMode, ControlType, PointDef, TimeSource

#: Event-driven protocols report each change with the device's time; Modbus is polled.
TIME_SOURCE = {"iec104": TimeSource.FIELD, "dnp3": TimeSource.FIELD, "modbus": TimeSource.POLL,
               "iec61850": TimeSource.FIELD}


def time_source(p: PointDef) -> TimeSource:
    return TIME_SOURCE.get(p.source.frontend, TimeSource.FIELD)


def describe_address(p: PointDef) -> str:
    """The point's protocol address as an engineer reads it, e.g. ``CA 1 IOA 100002`` or ``unit 5 input_float32
    @1000``."""
    src = p.source
    if src.frontend == "iec104":
        where = f"CA {src.common_address} IOA {src.address}" if src.type_id else f"CA {src.common_address}"
    elif src.frontend == "dnp3":
        where = f"outstation {src.common_address} {src.type_id} #{src.address}" if src.type_id else \
            f"outstation {src.common_address}"
    elif src.frontend == "modbus":
        where = f"unit {src.common_address} {src.type_id} @{src.address}" if src.type_id else \
            f"unit {src.common_address}"
    elif src.frontend == "calculated":
        where = f"calculated {src.type_id} #{src.address}"
    else:
        where = src.reference
    if p.control is not None:
        ctl = p.control.reference if src.frontend == "iec61850" else str(p.control.address)
        where = f"{where}; control {ctl}".lstrip("; ")
    return where


@dataclass(frozen=True, slots=True)
class DerivedAddress:
    """Where a CIM-derived point lives on its RTU's protocol (``models.measurement_points`` numbers them for IEC 104).

    ``address``/``reference``: the monitored object; ``control_*``: its command object, if the point has one (a
    derived set-point is a direct-operate scaled set-point: ``SETPOINT_CONTROL``)."""

    type_id: str
    address: int
    reference: str = ""
    control_address: int | None = None
    control_reference: str = ""
    control_type: ControlType = ControlType.DOUBLE
    control_mode: ControlMode = ControlMode.SELECT_BEFORE_OPERATE


#: How every derived set-point (a tap changer's target step) is commanded.
SETPOINT_CONTROL = {"control_type": ControlType.SETPOINT_SCALED, "control_mode": ControlMode.DIRECT}


class OptionReader:
    """What a protocol module may call on the configuration reader of its RTU table (``models.config._Reader``)."""

    path: str

    def get(self, key: str, typ: type | tuple[type, ...], default: object = ..., *, required: bool = False
            ) -> object: ...

    def positive(self, key: str, default: float, *, allow_zero: bool = False) -> float: ...

    def fail(self, key: str | None, problem: str) -> Exception: ...

    def finish(self) -> None: ...
