"""Bilateral tables: per peer control centre, which objects of our VCC/ICC it may read, write and operate.

A peer is recognised by the calling AP title and AE qualifier of its association. Everything not in its table is
denied (:class:`AccessDenied`, naming the peer, the object and the operation). The table itself is configuration
data (``models.iccp_config.BilateralTable``, built and checked against the station's points by its ``[iccp]``
parser; re-exported here with its value types); the checks that deny access are the functions of this module.
"""

from __future__ import annotations

from iccp.errors import IccpError
from models.iccp_config import (
    ApTitle,
    BilateralDevice,
    BilateralPoint,
    BilateralTable,
    BilateralTableError,
    Operation,
    PeerIdentity,
    TransferSetLimits,
)
from models.protocols.iccp import Scope

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
    "check_device",
    "check_read",
    "check_write",
]


class AccessDenied(IccpError):
    """The peer's bilateral table does not allow the operation on the object."""

    def __init__(self, peer: str, name: str, operation: Operation, why: str = "not in its bilateral table") -> None:
        self.peer, self.name, self.operation = peer, name, operation
        super().__init__(f"peer {peer!r}: {operation.value} of {name!r} denied: {why}")


def check_read(table: BilateralTable, name: str, scope: Scope = Scope.ICC) -> BilateralPoint:
    """The point ``table``'s peer reads as ``name``; :class:`AccessDenied` if its table does not list it."""
    p = table.point(name, scope)
    if p is None:
        raise AccessDenied(table.peer, name, Operation.READ)
    return p


def check_write(table: BilateralTable, name: str, scope: Scope = Scope.ICC) -> BilateralPoint:
    """The point ``table``'s peer writes as ``name``; :class:`AccessDenied` if unlisted or read-only for it."""
    p = table.point(name, scope)
    if p is None:
        raise AccessDenied(table.peer, name, Operation.WRITE)
    if not p.writable:
        raise AccessDenied(table.peer, name, Operation.WRITE, "the point is read-only for this peer")
    return p


def check_device(table: BilateralTable, name: str, operation: Operation) -> BilateralDevice:
    """The device whose object ``name`` the peer accesses for ``operation`` (``X`` operate, ``X_SBO`` select,
    ``X_TAG`` tag); :class:`AccessDenied` if unlisted or the object is for another operation."""
    found = table.device_object(name)
    if found is None:
        raise AccessDenied(table.peer, name, operation)
    device, op = found
    if op is not operation:
        raise AccessDenied(table.peer, name, operation, f"the object is for {op.value}, not {operation.value}")
    return device
