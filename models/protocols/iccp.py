"""ICCP / TASE.2 addressing of the points imported from a remote control centre (``[[iccp.remotes]]``, see
``iccp.config``): a point names its TASE.2 object in ``reference`` (an MMS identifier in the remote's bilateral ICC
domain, e.g. ``FREQ_SYS``) and its TASE.2 type in ``type`` (``Data_RealQTimeTag``; empty: the default of the point's
kind). ``address`` is unused. Imported points carry no control (device control of a remote centre is not offered).

The type names are those of ``iccp.tase2.model.PointType`` (a test keeps the two equal; models cannot import iccp).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from models.errors import ConfigError
from models.measurement_points import DerivedPoint
from models.points import PointDef, PointKind
from models.protocols import DerivedAddress, OptionReader

#: MMS Identifier as TASE.2 uses it: a letter or ``_``, then letters, digits, ``_`` or ``$``; at most 32 characters.
REFERENCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,31}")
REFERENCE_EXAMPLE = "FREQ_SYS"

_Q = ("", "Q", "QTimeTag", "QTimeTagExtended")
TASE2_POINT_TYPES: tuple[str, ...] = tuple(f"Data_{base}{q}" for q in _Q for base in ("Real", "State", "Discrete"))
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
