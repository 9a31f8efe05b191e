"""Peer writes to writable RTDB points: what a plain TASE.2 data-value write of a bilateral table's ``write`` entry
does in the distribution centre.

A peer may write a point of its table's ``write`` list; what the write becomes depends on the point
(:func:`write_kind`):

* :attr:`WriteKind.COMMAND`, a point with a set-point control (``PointDef.control`` of type ``setpoint_float`` or
  ``setpoint_scaled``): a SCADA set-point command on the command path (``scada.commands.CommandService``) as the
  peer's ``operator``, through :class:`iccp.tase2.devices.CommandServiceDevices` (roles, SCADA tags, interlocks,
  link state, audit, the select of an SBO-mode control included: one write is one command). The write answers when
  the field has answered; refusals carry the same data-access codes as device control;
* :attr:`WriteKind.VALUE`, a point without a control imported from a remote control centre (an RTU of protocol
  ``iccp``): a value the transmission side supplies (a schedule, a limit, a remote measurement). It enters the RTDB on
  the one update path: an :class:`models.updates.UpdateBatch` of the ICCP server's own adapter name, with the
  quality and time of the written TASE.2 value (``iccp.tase2.mapping.from_tase2``: ENTERED reads as SUBSTITUTED),
  cause spontaneous, audited as the peer's operator (outcome ``sent``: handed to the RTDB). The RTDB has no separate
  manual-entry store (``Permission.MANUAL_ENTRY`` guards operators' substitutions); the bilateral table's grant is
  the authorisation, and the operator must hold CONTROL or MANUAL_ENTRY (a viewer account writes nothing);
* anything else (a point a field front end or the calculation engine feeds, a breaker or other command control that
  TASE.2 device control operates): read-only, object-access-denied.

Refusals raise :class:`iccp.tase2.point_source.PointSourceError` carrying the data-access code the peer gets:

==========================================  ==========================
refusal                                     DataAccessError
==========================================  ==========================
read-only point, unknown operator, role,    object-access-denied (3)
tagged, interlocked
value not finite / outside the control      object-value-invalid (11)
link down, busy, field time-out             temporarily-unavailable (2)
negative answer of the field                hardware-fault (1)
==========================================  ==========================

A wrong TASE.2 type (the value does not fit the bilateral entry, ``iccp.tase2.mapping.value_fits``) never reaches
here: the server answers type-inconsistent.

Threads: the TASE.2 server calls :meth:`RtdbPeerWrites.write` on its device worker pool and answers the peer through
a deferred MMS response, so the set-point command (:meth:`RtdbPeerWrites.command`, the one call that waits for the
field round trip) holds no other association.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Protocol

from iccp.mms.codec import DataAccessCode
from iccp.tase2.bilateral import BilateralTable
from iccp.tase2.devices import CommandServiceDevices, DeviceRefused
from iccp.tase2.mapping import RtdbValue
from iccp.tase2.point_source import PointSourceError
from models.iccp_config import peer_read_only_reason, peer_writable
from models.points import PointDef

__all__ = ["PeerWrites", "RtdbPeerWrites", "WriteKind", "write_kind"]

log = logging.getLogger("iccp.tase2.peer_writes")

_DENIED = DataAccessCode.OBJECT_ACCESS_DENIED


class WriteKind(StrEnum):
    COMMAND = "command"  # a set-point command on the SCADA command path
    VALUE = "value"  # an RTDB update from the ICCP server's source


def write_kind(p: PointDef) -> WriteKind | None:
    """What a peer's write of ``p`` becomes; None: the point is read-only for peers (the station's configuration
    refuses such a ``write`` entry with the same rule, ``models.iccp_config.peer_writable``)."""
    if not peer_writable(p):
        return None
    return WriteKind.COMMAND if p.control is not None else WriteKind.VALUE


class PeerWrites(Protocol):
    """What :class:`iccp.tase2.point_source.RtdbPointSource` hands a peer's write to."""

    def write(self, table: BilateralTable, point: PointDef, value: RtdbValue) -> None:
        """Apply ``table``'s peer's write of ``point``; raise ``PointSourceError`` (with its code) to refuse."""
        ...


class RtdbPeerWrites:
    """Peer writes onto the SCADA command path (``devices``, the server's device control over the command service)
    and the RTDB (``rtdb``: ``scada.rtdb.Rtdb``). ``operators``: the station's operators; ``audit``: the audit log
    (``scada.audit.AuditLog`` or anything with its ``record``); ``adapter``: the adapter name of the RTDB batches."""

    def __init__(self, rtdb: Any, devices: CommandServiceDevices, operators: Iterable[Any], *,
                 audit: Any | None = None, adapter: str = "iccp-server") -> None:
        self._rtdb = rtdb
        self._devices = devices
        self._operators = {o.name: o for o in operators}
        self._audit = audit
        self.adapter = adapter

    def write(self, table: BilateralTable, point: PointDef, value: RtdbValue) -> None:
        op = self._operators.get(table.operator)
        if op is None:
            raise PointSourceError(f"peer {table.peer!r}: writes need the SCADA operator they are audited as; "
                                   f"{table.operator!r} is not a configured operator", _DENIED)
        kind = write_kind(point)
        if kind is None:
            why = peer_read_only_reason(point)
            self._record(op, point, value.value, "refused", "read_only", f"peer {table.peer}: {why}")
            raise PointSourceError(f"peer {table.peer!r}: {why}", _DENIED)
        if not math.isfinite(value.value):
            self._record(op, point, value.value, "refused", "invalid_value", f"peer {table.peer}: not a number")
            raise PointSourceError(f"peer {table.peer!r}: point {point.name!r}: {value.value} is not a value",
                                   DataAccessCode.OBJECT_VALUE_INVALID)
        if kind is WriteKind.COMMAND:
            self.command(table, point, value.value)
        else:
            self._enter(table, op, point, value)

    def command(self, table: BilateralTable, point: PointDef, value: float) -> None:
        """The set-point command of a peer write: blocks for the field round trip (up to the control's time-out).
        The one place a peer write waits for the field, so that it can move to a worker thread."""
        try:
            self._devices.execute(table, point.name, value, f"peer {table.peer!r}: write of {point.name!r}")
        except DeviceRefused as exc:
            raise PointSourceError(str(exc), exc.code) from None
        log.info("peer %s: set-point %s = %g executed as %s", table.peer, point.name, value, table.operator)

    def _enter(self, table: BilateralTable, op: Any, point: PointDef, value: RtdbValue) -> None:
        from models.timebase import now_ms
        from models.updates import Cause, UpdateBatch, new_update_rows
        from scada.auth import Permission, allowed

        if not (allowed(op.role, Permission.CONTROL) or allowed(op.role, Permission.MANUAL_ENTRY)):
            why = f"operator {op.name} (role {op.role.value}) may not enter values into {point.name!r}"
            self._record(op, point, value.value, "refused", "not_authorised", f"peer {table.peer}: {why}")
            raise PointSourceError(f"peer {table.peer!r}: {why}", _DENIED)
        rows = new_update_rows(1)
        rows[0] = (point.id, value.value, int(value.quality), value.source_time_ms, Cause.SPONTANEOUS)
        self._rtdb.ingest(UpdateBatch(self.adapter, rows, now_ms()))
        self._record(op, point, value.value, "sent", "", f"peer {table.peer}: quality {value.quality!r}, source time "
                     f"{value.source_time_ms} ms")
        log.info("peer %s: %s = %g (%r) entered as %s", table.peer, point.name, value.value, value.quality, op.name)

    def _record(self, op: Any, p: PointDef, value: float, outcome: str, reason: str, detail: str) -> None:
        if self._audit is not None:
            self._audit.record(operator=op.name, role=op.role.value, point=p.id, point_name=p.name,
                               action="tase2_write", value=float(value), outcome=outcome, reason=reason,
                               field_detail=detail)

