"""Bilateral tables: per peer control centre, which objects of our VCC/ICC it may read, write and operate.

A peer is recognised by the calling AP title and AE qualifier of its association. Everything not in its table is
denied (:class:`AccessDenied`, naming the peer, the object and the operation). Built by ``iccp.config`` and checked
there against the station's points; pure data otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from iccp.errors import IccpError
from iccp.tase2.model import (
    IDENTIFIER_RE,
    DeviceDef,
    FlagsLayout,
    PointType,
    Scope,
    StateEncoding,
)

__all__ = [
    "AccessDenied",
    "ApTitle",
    "BilateralDevice",
    "BilateralPoint",
    "BilateralTable",
    "BilateralTableError",
    "Operation",
    "PeerIdentity",
    "TransferSetLimits",
]


class BilateralTableError(IccpError):
    """A bilateral table that does not hold together (duplicate names, bad identifiers)."""


class Operation(StrEnum):
    READ = "read"
    WRITE = "write"
    SELECT = "select"  # read <Device>_SBO
    OPERATE = "operate"  # write <Device>
    TAG = "tag"  # read or write <Device>_TAG


class AccessDenied(IccpError):
    """The peer's bilateral table does not allow the operation on the object."""

    def __init__(self, peer: str, name: str, operation: Operation, why: str = "not in its bilateral table") -> None:
        self.peer, self.name, self.operation = peer, name, operation
        super().__init__(f"peer {peer!r}: {operation.value} of {name!r} denied: {why}")


_OID_RE = re.compile(r"[0-2](\.(0|[1-9][0-9]*))+")


@dataclass(frozen=True, slots=True)
class ApTitle:
    """An AP title in its object-identifier form, e.g. ``1.3.9999.13``."""

    arcs: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> ApTitle:
        if not _OID_RE.fullmatch(text):
            raise BilateralTableError(f"AP title {text!r} is not an object identifier such as \"1.3.9999.13\"")
        arcs = tuple(int(a) for a in text.split("."))
        if arcs[0] < 2 and arcs[1] > 39:
            raise BilateralTableError(f"AP title {text!r}: second arc must be 0..39 under arc {arcs[0]}")
        return cls(arcs)

    def __str__(self) -> str:
        return ".".join(map(str, self.arcs))


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What an association presents: AP title and AE qualifier (calling ones for a peer, called ones for us)."""

    ap_title: ApTitle
    ae_qualifier: int

    def __str__(self) -> str:
        return f"{self.ap_title}/{self.ae_qualifier}"


@dataclass(frozen=True, slots=True)
class BilateralPoint:
    """A point exchanged with the peer: ``name`` on the wire (in ``scope``), ``point`` the RTDB point name."""

    name: str
    point: str
    type: PointType
    writable: bool = False
    scope: Scope = Scope.ICC


@dataclass(frozen=True, slots=True)
class BilateralDevice:
    """A device the peer may operate: TASE.2 ``device`` (kind, SBO, tag) mapped onto RTDB point ``point`` (which
    has a control); commands go through the SCADA command path as ``operator``."""

    device: DeviceDef
    point: str


@dataclass(frozen=True, slots=True)
class TransferSetLimits:
    """What the peer may ask of our server."""

    max_transfer_sets: int = 16
    max_data_sets: int = 32
    max_data_set_size: int = 1000  # members per data set
    min_interval_s: int = 1
    min_integrity_s: int = 10
    min_buffer_time_s: int = 0

    def __post_init__(self) -> None:
        for name in ("max_transfer_sets", "max_data_sets", "max_data_set_size"):
            if getattr(self, name) < 1:
                raise BilateralTableError(f"transfer-set limits: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_interval_s", "min_integrity_s", "min_buffer_time_s"):
            if getattr(self, name) < 0:
                raise BilateralTableError(f"transfer-set limits: {name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class BilateralTable:
    """One peer's table. ``domain`` is the ICC domain our server shows this peer (its points, transfer sets,
    ``Bilateral_Table_ID``); ``operator`` is the SCADA user its commands are audited as."""

    peer: str
    table_id: str
    identity: PeerIdentity
    domain: str
    points: tuple[BilateralPoint, ...] = ()
    devices: tuple[BilateralDevice, ...] = ()
    limits: TransferSetLimits = TransferSetLimits()
    flags_layout: FlagsLayout = FlagsLayout.MSB_FIRST
    state_encoding: StateEncoding = StateEncoding.IN_FLAGS
    operator: str = ""
    _by_name: dict[tuple[Scope, str], BilateralPoint] = field(init=False, repr=False, compare=False)
    _devices: dict[str, tuple[BilateralDevice, Operation]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"bilateral table of {self.peer!r}"
        if not self.table_id or len(self.table_id) > 32 or not self.table_id.isascii():
            raise BilateralTableError(f"{where}: Bilateral_Table_ID {self.table_id!r} must be 1..32 ASCII characters")
        if not IDENTIFIER_RE.fullmatch(self.domain):
            raise BilateralTableError(f"{where}: domain {self.domain!r} is not an MMS identifier")
        by_name: dict[tuple[Scope, str], BilateralPoint] = {}
        for p in self.points:
            if not IDENTIFIER_RE.fullmatch(p.name):
                raise BilateralTableError(f"{where}: point name {p.name!r} is not an MMS identifier")
            if (p.scope, p.name) in by_name:
                raise BilateralTableError(f"{where}: TASE.2 name {p.name!r} listed twice")
            by_name[(p.scope, p.name)] = p
        devices: dict[str, tuple[BilateralDevice, Operation]] = {}
        ops = {"": Operation.OPERATE, "_SBO": Operation.SELECT, "_TAG": Operation.TAG}
        for d in self.devices:
            for wire in d.device.names:
                if wire in devices or (Scope.ICC, wire) in by_name:
                    raise BilateralTableError(f"{where}: device object {wire!r} clashes with another name")
                devices[wire] = (d, ops[wire[len(d.device.name):]])
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_devices", devices)

    # ----------------------------------------------------------------------------------------- look-ups
    def point(self, name: str, scope: Scope = Scope.ICC) -> BilateralPoint | None:
        return self._by_name.get((scope, name))

    def check_read(self, name: str, scope: Scope = Scope.ICC) -> BilateralPoint:
        p = self._by_name.get((scope, name))
        if p is None:
            raise AccessDenied(self.peer, name, Operation.READ)
        return p

    def check_write(self, name: str, scope: Scope = Scope.ICC) -> BilateralPoint:
        p = self._by_name.get((scope, name))
        if p is None:
            raise AccessDenied(self.peer, name, Operation.WRITE)
        if not p.writable:
            raise AccessDenied(self.peer, name, Operation.WRITE, "the point is read-only for this peer")
        return p

    def device_object(self, name: str) -> tuple[BilateralDevice, Operation] | None:
        """The device a wire name (``X``, ``X_SBO``, ``X_TAG``) belongs to, and what access to it means."""
        return self._devices.get(name)

    def check_device(self, name: str, operation: Operation) -> BilateralDevice:
        found = self._devices.get(name)
        if found is None:
            raise AccessDenied(self.peer, name, operation)
        device, op = found
        if op is not operation:
            raise AccessDenied(self.peer, name, operation, f"the object is for {op.value}, not {operation.value}")
        return device

    def names(self, scope: Scope = Scope.ICC) -> list[str]:
        """Every variable name this peer sees in ``scope``, sorted (GetNameList order)."""
        out = [n for (s, n) in self._by_name if s is scope]
        if scope is Scope.ICC:
            out += list(self._devices)
        return sorted(out)
