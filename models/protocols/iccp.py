"""ICCP / TASE.2 addressing of the points imported from a remote control centre (``[[iccp.remotes]]``, see
``models.iccp_config``): a point names its TASE.2 object in ``reference`` (an MMS identifier in the remote's bilateral
ICC domain, e.g. ``FREQ_SYS``) and its TASE.2 type in ``type`` (``Data_RealQTimeTag``; empty: the default of the
point's kind). ``address`` is unused. Imported points carry no control (device control of a remote centre is not
offered).

Also the TASE.2 option enums and names the ``[iccp]`` configuration needs (:class:`PointType`, :class:`FlagsLayout`,
:class:`StateEncoding`, :class:`Scope`, :class:`ControlKind`): pure data, so that ``models`` never imports ``iccp``.
Their wire encoding is ``iccp.tase2.model``'s (which re-exports them).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from models.errors import ConfigError
from models.measurement_points import DerivedPoint
from models.points import PointDef, PointKind
from models.protocols import DerivedAddress, OptionReader

#: MMS Identifier as TASE.2 uses it: a letter or ``_``, then letters, digits, ``_`` or ``$``; at most 32 characters.
REFERENCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,31}")
IDENTIFIER_RE = REFERENCE_RE
REFERENCE_EXAMPLE = "FREQ_SYS"


class PointType(StrEnum):
    """TASE.2 indication point types; the value is the type name."""

    DATA_REAL = "Data_Real"
    DATA_STATE = "Data_State"
    DATA_DISCRETE = "Data_Discrete"
    DATA_REAL_Q = "Data_RealQ"
    DATA_STATE_Q = "Data_StateQ"
    DATA_DISCRETE_Q = "Data_DiscreteQ"
    DATA_REAL_Q_TIMETAG = "Data_RealQTimeTag"
    DATA_STATE_Q_TIMETAG = "Data_StateQTimeTag"
    DATA_DISCRETE_Q_TIMETAG = "Data_DiscreteQTimeTag"
    DATA_REAL_Q_TIMETAG_EXT = "Data_RealQTimeTagExtended"
    DATA_STATE_Q_TIMETAG_EXT = "Data_StateQTimeTagExtended"
    DATA_DISCRETE_Q_TIMETAG_EXT = "Data_DiscreteQTimeTagExtended"

    @property
    def base(self) -> str:
        """``Real``, ``State`` or ``Discrete``."""
        return self.value[5:].split("Q", 1)[0]

    @property
    def has_flags(self) -> bool:
        return "Q" in self.value[5:]

    @property
    def has_time(self) -> bool:
        return "TimeTag" in self.value

    @property
    def extended(self) -> bool:
        return self.value.endswith("Extended")

    @property
    def is_state(self) -> bool:
        return self.base == "State"


class FlagsLayout(StrEnum):
    """How named bits map onto the Data_Flags octet (see ``iccp.tase2.model``)."""

    MSB_FIRST = "msb_first"  # ASN.1 numbering: bit 0 is 0x80 of the first octet (standard-shaped)
    LSB_FIRST = "lsb_first"  # bit n is 1 << n (libiec61850's tase2 module and others reading the octet as an int)


class StateEncoding(StrEnum):
    """Where a Data_State value is encoded (see ``iccp.tase2.model``); decoders accept both."""

    IN_FLAGS = "in_flags"
    SEPARATE_VALUE = "separate_value"


class Scope(IntEnum):
    """Scope member of a TASE.2 ObjectName."""

    VCC = 0
    ICC = 1


class ControlKind(StrEnum):
    """What ``<Device>`` takes when written."""

    COMMAND = "command"  # Integer16: 0 OFF/TRIP/OPEN, 1 ON/CLOSE
    SETPOINT_REAL = "setpoint_real"  # Float32
    SETPOINT_DISCRETE = "setpoint_discrete"  # Integer16


TASE2_POINT_TYPES: tuple[str, ...] = tuple(t.value for t in PointType)
_REAL = frozenset(t for t in TASE2_POINT_TYPES if t.startswith("Data_Real"))
_STATE = frozenset(t for t in TASE2_POINT_TYPES if t.startswith("Data_State"))
_DISCRETE = frozenset(t for t in TASE2_POINT_TYPES if t.startswith("Data_Discrete"))

#: ``""`` takes the default type of the kind (``DEFAULT_TYPES``).
MONITOR_TYPES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({""}) | _STATE | _DISCRETE,
    PointKind.DOUBLE: frozenset({""}) | _STATE | _DISCRETE,
    PointKind.ANALOG: frozenset({""}) | _REAL | _DISCRETE,
    PointKind.COUNTER: frozenset({""}) | _REAL | _DISCRETE,
    PointKind.SETPOINT: frozenset(),
    PointKind.COMMAND: frozenset(),
}
DEFAULT_TYPES: dict[PointKind, str] = {
    PointKind.SINGLE: "Data_StateQTimeTag",
    PointKind.DOUBLE: "Data_StateQTimeTag",
    PointKind.ANALOG: "Data_RealQTimeTag",
    PointKind.COUNTER: "Data_RealQTimeTag",
}

#: Which TASE.2 base types fit which RTDB point kind (a point a peer reads or writes, in either direction).
_BASES: dict[PointKind, frozenset[str]] = {
    PointKind.SINGLE: frozenset({"State", "Discrete"}),
    PointKind.DOUBLE: frozenset({"State", "Discrete"}),
    PointKind.ANALOG: frozenset({"Real", "Discrete"}),
    PointKind.COUNTER: frozenset({"Real", "Discrete"}),
    PointKind.SETPOINT: frozenset({"Real", "Discrete"}),
    PointKind.COMMAND: frozenset(),
}


def value_fits(kind: PointKind, point_type: PointType) -> bool:
    """Whether a point of ``kind`` can be exchanged as ``point_type``."""
    return point_type.base in _BASES[kind]


def point_type_name(p: PointDef) -> str:
    """The TASE.2 type of an imported point (its ``type`` or the default of its kind)."""
    return p.source.type_id or DEFAULT_TYPES[p.kind]


@dataclass(frozen=True, slots=True)
class Options:
    """No per-RTU table: a remote centre is configured in ``[[iccp.remotes]]``."""


def parse_options(r: OptionReader) -> Options:
    r.finish()
    return Options()


def address_keys(p: PointDef) -> list[Hashable]:
    return [("ref", p.source.reference)]


def assign_derived(points: Sequence[DerivedPoint]) -> list[DerivedAddress]:
    if points:
        raise ConfigError("ICCP remote centres import named TASE.2 points; they cannot take CIM equipment")
    return []
