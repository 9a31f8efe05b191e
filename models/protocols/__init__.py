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

from models.points import ControlType


@dataclass(frozen=True, slots=True)
class DerivedAddress:
    """Where a CIM-derived point lives on its RTU's protocol (``models.measurement_points`` numbers them for IEC 104).

    ``address``/``reference``: the monitored object; ``control_*``: its command object, if the point has one."""

    type_id: str
    address: int
    reference: str = ""
    control_address: int | None = None
    control_reference: str = ""
    control_type: ControlType = ControlType.DOUBLE


class OptionReader:
    """What a protocol module may call on the configuration reader of its RTU table (``models.config._Reader``)."""

    path: str

    def get(self, key: str, typ: type | tuple[type, ...], default: object = ..., *, required: bool = False
            ) -> object: ...

    def positive(self, key: str, default: float, *, allow_zero: bool = False) -> float: ...

    def fail(self, key: str | None, problem: str) -> Exception: ...

    def finish(self) -> None: ...
