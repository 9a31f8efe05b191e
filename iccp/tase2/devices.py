"""TASE.2 device control (Block 5) for our server: the :class:`DeviceControl` interface the server calls, the
select/tag bookkeeping every implementation shares, and two implementations:

* :class:`CommandServiceDevices` maps devices onto the SCADA command path (``scada.commands.CommandService``): roles,
  tags, interlocks, link state, select-before-operate with the field and the audit log, all as the peer's operator
  (``BilateralTable.operator``, an operator of the station config);
* :class:`CallbackDevices` hands operations to a function (the transmission simulator operates its breakers).

Select-before-operate: reading ``<Device>_SBO`` selects the device for this peer and returns a CheckBackID
(Integer16, increasing); writing ``<Device>`` operates it within ``select_timeout_s`` of the select (one operate per
select). A device with ``sbo = false`` is operated directly. ``<Device>_TAG`` read gives the peer's tag with the
``armed`` bit set while the device is selected (a blocking SCADA tag on the point reads as open-and-close inhibit);
writing it sets the peer's tag: OPEN_AND_CLOSE_INHIBIT refuses every operate, CLOSE_ONLY_INHIBIT refuses a close
(command 1). Refusals raise :class:`DeviceRefused` carrying the MMS data-access code the peer gets:

==========================================  ==========================
refusal                                     DataAccessError
==========================================  ==========================
not selected / selection expired, tagged,   object-access-denied (3)
interlocked, role, unknown operator
value the control cannot take               object-value-invalid (11)
link down, busy, adapter down, time-out     temporarily-unavailable (2)
negative answer of the field                hardware-fault (1)
==========================================  ==========================

Peer tags with :class:`CommandServiceDevices` and the SCADA tag store (``scada.tags.TagStore``, ``center.tags``):
a tag the peer writes is a SCADA tag on the device's point, placed as the peer's operator (``BilateralTable.operator``),
so operators see it and it blocks their commands like any tag; an operator's tag shows to the peer. The mapping:

=================================  ==========================================================================
peer writes ``<Device>_TAG``       SCADA tag store
=================================  ==========================================================================
OPEN_AND_CLOSE_INHIBIT             HOLD on the point, reason ``[TASE.2 <peer>: open and close inhibit] <reason>``
CLOSE_ONLY_INHIBIT                 HOLD as well (SCADA has no close-only kind: HOLD is the safe superset, it
                                   blocks opening too, for operators and the peer), reason
                                   ``[TASE.2 <peer>: close only inhibit] <reason>``
NONE                               this peer's active tags on the point removed (as its operator); tags placed
                                   by operators or other peers stay
INVALID                            refused: object-value-invalid
=================================  ==========================================================================

A new peer tag replaces the peer's previous one on that point. Reading ``<Device>_TAG``: any blocking tag (HOLD,
CLEARANCE, on the point or its network element) that is not this peer's reads as OPEN_AND_CLOSE_INHIBIT with
``<kind> by <operator>: <reason>``; otherwise the peer's own tag reads back with its class and reason; otherwise
NONE (INFO, FAULTED and PARALLEL_ALLOWED block no command on the device and read as NONE). The ``armed`` bit is set
while the device is selected. The store is the only state (the reason prefix identifies the peer's tags), so a
restart or a second server sees the same tags. Without a tag store the peer's tag stays in :class:`SelectBook`.

The command service blocks for the field round trip (up to the control's ``timeout_s``) and the tag store reads a
database: the server calls device control on its worker pool, never on its event loop (see ``iccp.tase2.server``).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from iccp.mms.codec import DataAccessCode
from iccp.tase2.bilateral import BilateralDevice, BilateralTable
from iccp.tase2.model import ControlKind, TagClass, TagValue, Tase2Error
from models.points import ControlType, DoubleState, PointDef

__all__ = [
    "CallbackDevices",
    "CommandServiceDevices",
    "DeviceControl",
    "DeviceRefused",
    "SelectBook",
]

log = logging.getLogger("iccp.tase2.devices")


class DeviceRefused(Tase2Error):
    """A device operation refused; ``code`` is what the peer's read or write gets."""

    def __init__(self, code: DataAccessCode, message: str) -> None:
        self.code = code
        super().__init__(message)


class DeviceControl(Protocol):
    """What the TASE.2 server calls for ``<Device>_SBO`` reads, ``<Device>`` writes and ``<Device>_TAG``."""

    def select(self, table: BilateralTable, device: BilateralDevice) -> int:
        """Select for ``table``'s peer; the CheckBackID."""
        ...

    def operate(self, table: BilateralTable, device: BilateralDevice, value: float) -> None:
        ...

    def tag(self, table: BilateralTable, device: BilateralDevice) -> TagValue:
        ...

    def set_tag(self, table: BilateralTable, device: BilateralDevice, tag: TagValue) -> None:
        ...


@dataclass(slots=True)
class _Selection:
    peer: str
    check_back_id: int
    expires_mono: float


class SelectBook:
    """Selections and peer tags per device (thread-safe); the shared half of every implementation."""

    def __init__(self, select_timeout_s: float | None = None) -> None:
        self.select_timeout_s = select_timeout_s  # None: each peer's own (``[[iccp.peers]] select_timeout_s``)
        self._selections: dict[str, _Selection] = {}
        self._tags: dict[str, TagValue] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @staticmethod
    def key(table: BilateralTable, device: BilateralDevice) -> str:
        return f"{table.domain}/{device.device.name}"

    def check_tag(self, table: BilateralTable, device: BilateralDevice, value: float) -> None:
        tag = self._tags.get(self.key(table, device))
        if tag is None:
            return
        closing = device.device.kind is ControlKind.COMMAND and value == 1
        if tag.tag is TagClass.OPEN_AND_CLOSE_INHIBIT or (tag.tag is TagClass.CLOSE_ONLY_INHIBIT and closing):
            raise DeviceRefused(DataAccessCode.OBJECT_ACCESS_DENIED,
                                f"device {device.device.name!r}: tagged {tag.tag.name} ({tag.reason or 'no reason'})")

    def select(self, table: BilateralTable, device: BilateralDevice) -> int:
        self.check_tag(table, device, -1)
        key = self.key(table, device)
        now = time.monotonic()
        with self._lock:
            sel = self._selections.get(key)
            if sel is not None and sel.expires_mono > now and sel.peer != table.peer:
                raise DeviceRefused(DataAccessCode.OBJECT_ACCESS_DENIED,
                                    f"device {device.device.name!r} is selected by {sel.peer}")
            cbid = next(self._ids) % 32768
            self._selections[key] = _Selection(table.peer, cbid, now + self.timeout_s(table))
        return cbid

    def timeout_s(self, table: BilateralTable) -> float:
        return self.select_timeout_s if self.select_timeout_s is not None else table.select_timeout_s

    def take_selection(self, table: BilateralTable, device: BilateralDevice) -> None:
        """Check and consume the selection before an operate (devices without SBO need none)."""
        if not device.device.sbo:
            return
        key = self.key(table, device)
        with self._lock:
            sel = self._selections.pop(key, None)
        if sel is None or sel.expires_mono <= time.monotonic() or sel.peer != table.peer:
            raise DeviceRefused(DataAccessCode.OBJECT_ACCESS_DENIED,
                                f"device {device.device.name!r}: operate without a valid select (read "
                                f"{device.device.sbo_name} first; a selection lasts {self.timeout_s(table):g} s)")

    def selected(self, table: BilateralTable, device: BilateralDevice) -> bool:
        sel = self._selections.get(self.key(table, device))
        return sel is not None and sel.expires_mono > time.monotonic()

    def tag(self, table: BilateralTable, device: BilateralDevice) -> TagValue:
        tag = self._tags.get(self.key(table, device), TagValue())
        return TagValue(tag.tag, self.selected(table, device), tag.reason)

    def set_tag(self, table: BilateralTable, device: BilateralDevice, tag: TagValue) -> None:
        if tag.tag is TagClass.INVALID:
            raise DeviceRefused(DataAccessCode.OBJECT_VALUE_INVALID,
                                f"device {device.device.name!r}: tag class INVALID cannot be set")
        with self._lock:
            self._tags[self.key(table, device)] = TagValue(tag.tag, False, tag.reason)
        log.info("device %s: peer %s set tag %s (%s)", device.device.name, table.peer, tag.tag.name, tag.reason)


class CallbackDevices:
    """Device control by a function ``operate(device, value) -> None or a refusal sentence``."""

    def __init__(self, operate: Callable[[BilateralDevice, float], str | None], *,
                 select_timeout_s: float | None = None) -> None:
        self._operate = operate
        self.book = SelectBook(select_timeout_s)
        self.operations: list[tuple[str, str, float]] = []  # (peer, device, value)

    def select(self, table: BilateralTable, device: BilateralDevice) -> int:
        return self.book.select(table, device)

    def operate(self, table: BilateralTable, device: BilateralDevice, value: float) -> None:
        self.book.check_tag(table, device, value)
        self.book.take_selection(table, device)
        why = self._operate(device, value)
        if why:
            raise DeviceRefused(DataAccessCode.HARDWARE_FAULT, f"device {device.device.name!r}: {why}")
        self.operations.append((table.peer, device.device.name, value))

    def tag(self, table: BilateralTable, device: BilateralDevice) -> TagValue:
        return self.book.tag(table, device)

    def set_tag(self, table: BilateralTable, device: BilateralDevice, tag: TagValue) -> None:
        self.book.set_tag(table, device, tag)


_REFUSAL_CODES = {
    "not_authorised": DataAccessCode.OBJECT_ACCESS_DENIED,
    "tagged": DataAccessCode.OBJECT_ACCESS_DENIED,
    "interlocked": DataAccessCode.OBJECT_ACCESS_DENIED,
    "not_selected": DataAccessCode.OBJECT_ACCESS_DENIED,
    "selected_by_other": DataAccessCode.OBJECT_ACCESS_DENIED,
    "not_controllable": DataAccessCode.OBJECT_ACCESS_DENIED,
    "unknown_point": DataAccessCode.OBJECT_NON_EXISTENT,
    "invalid_value": DataAccessCode.OBJECT_VALUE_INVALID,
    "link_down": DataAccessCode.TEMPORARILY_UNAVAILABLE,
    "busy": DataAccessCode.TEMPORARILY_UNAVAILABLE,
}
_TRANSIENT_STATUS = {"timeout", "link_down", "adapter_down"}
_TAG_LABELS = {TagClass.OPEN_AND_CLOSE_INHIBIT: "open and close inhibit",
               TagClass.CLOSE_ONLY_INHIBIT: "close only inhibit"}
_TAG_REASON_BYTES = 255


def _peer_tag_prefix(peer: str) -> str:
    return f"[TASE.2 {peer}: "


def _peer_tag_class(peer: str, reason: str) -> tuple[TagClass, str] | None:
    """(class, peer's reason) when ``reason`` is that of a tag this peer placed, else None."""
    prefix = _peer_tag_prefix(peer)
    if not reason.startswith(prefix):
        return None
    label, sep, rest = reason[len(prefix):].partition("] ")
    if not sep and reason.endswith("]"):
        label, rest = reason[len(prefix):-1], ""
    for tag_class, text in _TAG_LABELS.items():
        if label == text:
            return tag_class, rest
    return None


def _tag_reason(text: str) -> str:
    """A TASE.2 tag Reason: visible ASCII, at most 255 characters."""
    return text.encode("ascii", "replace").decode("ascii")[:_TAG_REASON_BYTES]


class CommandServiceDevices:
    """Device control over ``scada.commands.CommandService``. ``operators``: the station's operators (the peer's
    ``operator`` must be one of them); ``tags``: the SCADA tag store (``scada.tags.TagStore``: peer tags go there,
    see the module docstring), or any object with ``blocking(point)`` (then a blocking tag reads as inhibit and
    the peer's tags stay in the device layer)."""

    def __init__(self, commands: Any, points: Iterable[PointDef], operators: Iterable[Any], *,
                 tags: Any | None = None, audit: Any | None = None, select_timeout_s: float | None = None) -> None:
        self._commands = commands
        self._points: Mapping[str, PointDef] = {p.name: p for p in points}
        self._operators = {o.name: o for o in operators}
        self._tags = tags
        self._store = tags if all(hasattr(tags, m) for m in ("place", "remove", "active", "blocking")) else None
        self._audit = audit
        self.book = SelectBook(select_timeout_s)
        self._tag_lock = threading.Lock()  # one peer tag change at a time (remove the old, place the new)

    def _resolve(self, table: BilateralTable, device: BilateralDevice) -> tuple[PointDef, Any]:
        return self._resolve_point(table, device.point, f"device {device.device.name!r}")

    def _resolve_point(self, table: BilateralTable, point: str, label: str) -> tuple[PointDef, Any]:
        p = self._points.get(point)
        if p is None or p.control is None:
            raise DeviceRefused(DataAccessCode.OBJECT_NON_EXISTENT,
                                f"{label}: point {point!r} is not a controllable point")
        op = self._operators.get(table.operator)
        if op is None:
            raise DeviceRefused(DataAccessCode.OBJECT_ACCESS_DENIED,
                                f"peer {table.peer!r}: operator {table.operator!r} is not a configured operator")
        return p, op

    def _record(self, op: Any, p: PointDef, action: str, value: float, outcome: str, reason: str,
                detail: str) -> None:
        if self._audit is not None:  # the audit knows refused/sent/answered: a local select or tag is "answered"
            refused = outcome == "refused"
            self._audit.record(operator=op.name, role=op.role.value, point=p.id, point_name=p.name, action=action,
                               value=float(value), outcome="refused" if refused else "answered", reason=reason,
                               field_status="" if refused else outcome, field_detail=detail)

    def select(self, table: BilateralTable, device: BilateralDevice) -> int:
        p, op = self._resolve(table, device)
        from scada.auth import Permission, allowed

        if not allowed(op.role, Permission.CONTROL):
            self._record(op, p, "tase2_select", -1, "refused", "not_authorised", f"peer {table.peer}")
            raise DeviceRefused(DataAccessCode.OBJECT_ACCESS_DENIED,
                                f"operator {op.name} (role {op.role.value}) may not control {p.name!r}")
        try:
            cbid = self.book.select(table, device)
        except DeviceRefused as exc:
            self._record(op, p, "tase2_select", -1, "refused", "tagged", str(exc))
            raise
        self._record(op, p, "tase2_select", -1, "selected", "", f"peer {table.peer}, CheckBackID {cbid}")
        return cbid

    def operate(self, table: BilateralTable, device: BilateralDevice, value: float) -> None:
        p, op = self._resolve(table, device)
        try:
            self.book.check_tag(table, device, value)
            self.book.take_selection(table, device)
        except DeviceRefused as exc:
            self._record(op, p, "tase2_operate", value, "refused", "not_selected", str(exc))
            raise
        self._command(p, op, _control_value(p, device, value), f"device {device.device.name!r}")

    def execute(self, table: BilateralTable, point: str, value: float, label: str) -> None:
        """One SCADA command of ``point`` (its control value ``value``) as ``table``'s peer's operator, without a
        TASE.2 selection: a peer's write of a set-point (``iccp.tase2.peer_writes``). ``label`` names it in refusals."""
        p, op = self._resolve_point(table, point, label)
        self._command(p, op, value, label)

    def _command(self, p: PointDef, op: Any, value: float, label: str) -> None:
        """The command path (the select of an SBO-mode control included); blocks for the field's answer."""
        from scada.errors import CommandRefused

        assert p.control is not None
        try:
            if p.control.mode.selects:
                outcome = self._commands.select(p.id, value, op)
                if outcome.status.value != "success":
                    raise _field_refusal(label, outcome)
            outcome = self._commands.operate(p.id, value, op)
        except CommandRefused as exc:
            raise DeviceRefused(_REFUSAL_CODES.get(str(exc.reason), DataAccessCode.OBJECT_ACCESS_DENIED),
                                f"{label}: {exc}") from None
        if outcome.status.value != "success":
            raise _field_refusal(label, outcome)

    def tag(self, table: BilateralTable, device: BilateralDevice) -> TagValue:
        tag = self.book.tag(table, device)
        p = self._points.get(device.point)
        if self._tags is None or p is None:
            return tag
        if self._store is None:
            blocking = self._tags.blocking(p)
            if tag.tag is TagClass.NONE and blocking:
                reason = str(getattr(blocking[0], "reason", ""))
                return TagValue(TagClass.OPEN_AND_CLOSE_INHIBIT, tag.armed, _tag_reason(reason))
            return tag
        for t in self._store.blocking(p):
            if _peer_tag_class(table.peer, t.reason) is None:  # an operator's (or another peer's) tag
                return TagValue(TagClass.OPEN_AND_CLOSE_INHIBIT, tag.armed,
                                _tag_reason(f"{t.kind} by {t.operator}: {t.reason}"))
        for t in self._store.active(p.name):
            own = _peer_tag_class(table.peer, t.reason)
            if own is not None:
                return TagValue(own[0], tag.armed, _tag_reason(own[1]))
        return TagValue(TagClass.NONE, tag.armed, "")

    def set_tag(self, table: BilateralTable, device: BilateralDevice, tag: TagValue) -> None:
        if self._store is None:
            self.book.set_tag(table, device, tag)
            return
        from scada.errors import ScadaError
        from scada.tags import TagKind

        p, op = self._resolve(table, device)
        if tag.tag is TagClass.INVALID:
            raise DeviceRefused(DataAccessCode.OBJECT_VALUE_INVALID,
                                f"device {device.device.name!r}: tag class INVALID cannot be set")
        reason = (f"{_peer_tag_prefix(table.peer)}{_TAG_LABELS[tag.tag]}] {tag.reason or 'no reason given'}"
                  if tag.tag is not TagClass.NONE else "")
        try:
            with self._tag_lock:
                own = [t for t in self._store.active(p.name) if _peer_tag_class(table.peer, t.reason) is not None]
                if reason and [t.reason for t in own] == [reason]:
                    return  # the same tag again
                for t in own:
                    self._store.remove(t.id, op.name, f"replaced or cleared by TASE.2 peer {table.peer}")
                if reason:
                    placed = self._store.place(p.name, TagKind.HOLD, op.name, reason)
        except ScadaError as exc:
            log.warning("device %s: peer %s tag %s not stored: %s", device.device.name, table.peer, tag.tag.name, exc)
            raise DeviceRefused(DataAccessCode.TEMPORARILY_UNAVAILABLE,
                                f"device {device.device.name!r}: tag not stored: {exc}") from None
        detail = f"peer {table.peer}: {tag.tag.name}" + (f" (tag {placed.id})" if reason else "")
        self._record(op, p, "tase2_tag", float(tag.tag), "tagged" if reason else "untagged", "", detail)
        log.info("device %s: peer %s set tag %s (%s)", device.device.name, table.peer, tag.tag.name, tag.reason)


def _control_value(p: PointDef, device: BilateralDevice, value: float) -> float:
    """TASE.2 command 0 (OFF/TRIP/OPEN) / 1 (ON/CLOSE) -> the SCADA control value of the point."""
    assert p.control is not None
    if device.device.kind is ControlKind.COMMAND and p.control.type is ControlType.DOUBLE:
        return float(DoubleState.ON if value == 1 else DoubleState.OFF)
    return float(value)


def _field_refusal(label: str, outcome: Any) -> DeviceRefused:
    status = outcome.status.value
    code = DataAccessCode.TEMPORARILY_UNAVAILABLE if status in _TRANSIENT_STATUS else DataAccessCode.HARDWARE_FAULT
    return DeviceRefused(code, f"{label}: field answered {status} {outcome.field_detail}".strip())
