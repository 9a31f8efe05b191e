"""Command service: every control passes its server-side checks here before anything reaches the field.

Checks, in order: the point exists and is controllable, the value fits the control, the operator's role allows
control, no blocking tag (hold/clearance) is on the point or its element, every interlock hook agrees, the RTU link is
up, no other command is in flight on the point. Select-before-operate keeps the selection per point (who, which value,
until when); execute must come from the same operator with the same value before the selection expires. After a
positive execute of a status point the service waits for the status to follow (command feedback). Every attempt,
refused or sent, and the field's answer, goes to the audit log.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from models.commands import ControlAction, ControlRequest, ControlResult, ControlStatus
from models.config import OperatorConfig
from models.points import ControlMode, ControlType, DoubleState, PointDef, PointKind, Quality
from scada.auth import Permission, allowed
from scada.errors import CommandRefused, UnknownPointError
from scada.rtdb import Rtdb


class RefusalReason(StrEnum):
    UNKNOWN_POINT = "unknown_point"
    NOT_CONTROLLABLE = "not_controllable"
    NOT_AUTHORISED = "not_authorised"
    TAGGED = "tagged"
    INTERLOCKED = "interlocked"
    NOT_SELECTED = "not_selected"
    SELECTED_BY_OTHER = "selected_by_other"
    INVALID_VALUE = "invalid_value"
    LINK_DOWN = "link_down"
    BUSY = "busy"


class FeedbackStatus(StrEnum):
    NOT_APPLICABLE = "not_applicable"
    CONFIRMED = "confirmed"
    NOT_CONFIRMED = "not_confirmed"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    request_id: int
    point: int
    point_name: str
    action: ControlAction
    value: float
    status: ControlStatus
    field_detail: str
    feedback: FeedbackStatus
    elapsed_ms: float


class ControlTransport(Protocol):
    """Delivers a request to the adapter serving the RTU; False if that adapter is not running."""

    def send_control(self, request: ControlRequest) -> bool: ...


class TagChecker(Protocol):
    def blocking(self, point: PointDef) -> Sequence[Any]: ...


class AuditSink(Protocol):
    def record(self, **fields: Any) -> Any: ...


#: An interlock returns None to allow, or a sentence saying why the command must not go out.
Interlock = Callable[[PointDef, ControlAction, float], str | None]


@dataclass(slots=True)
class _Selection:
    operator: str
    value: float
    expires_mono: float


class CommandService:
    def __init__(
        self,
        rtdb: Rtdb,
        transport: ControlTransport,
        *,
        tags: TagChecker | None = None,
        audit: AuditSink | None = None,
        interlocks: Sequence[Interlock] = (),
    ) -> None:
        self._rtdb = rtdb
        self._points = rtdb.config.points
        self._transport = transport
        self._tags = tags
        self._audit = audit
        self._interlocks = list(interlocks)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Event, list[ControlResult]]] = {}
        self._busy: set[int] = set()
        self._selections: dict[int, _Selection] = {}
        self._outcome_listeners: list[Callable[[CommandOutcome], None]] = []

    def add_outcome_listener(self, fn: Callable[[CommandOutcome], None]) -> None:
        """``fn`` sees every command that reached the field, with the field's answer (e.g. to alarm failures)."""
        self._outcome_listeners.append(fn)

    def add_interlock(self, interlock: Interlock) -> None:
        self._interlocks.append(interlock)

    # ------------------------------------------------------------------------------------------ public
    def select(self, point: int, value: float, operator: OperatorConfig) -> CommandOutcome:
        p = self._check(point, value, operator, ControlAction.SELECT)
        if p.control is not None and p.control.mode is ControlMode.DIRECT:
            self._refuse(p, operator, ControlAction.SELECT, value, RefusalReason.INVALID_VALUE,
                         f"point {p.name!r} is configured for direct operate; send operate without select")
        sel = self._selections.get(p.id)
        if sel is not None and sel.expires_mono > time.monotonic() and sel.operator != operator.name:
            self._refuse(p, operator, ControlAction.SELECT, value, RefusalReason.SELECTED_BY_OTHER,
                         f"point {p.name!r} is selected by {sel.operator}")
        outcome = self._send(p, ControlAction.SELECT, value, operator)
        if outcome.status is ControlStatus.SUCCESS:
            assert p.control is not None
            self._selections[p.id] = _Selection(operator.name, value, time.monotonic() + p.control.timeout_s)
        return outcome

    def operate(self, point: int, value: float, operator: OperatorConfig) -> CommandOutcome:
        p = self._check(point, value, operator, ControlAction.EXECUTE)
        assert p.control is not None
        action = ControlAction.DIRECT
        if p.control.mode.selects:
            sel = self._selections.get(p.id)
            if sel is None or sel.expires_mono <= time.monotonic():
                self._selections.pop(p.id, None)
                self._refuse(p, operator, ControlAction.EXECUTE, value, RefusalReason.NOT_SELECTED,
                             f"point {p.name!r} must be selected before operate (no selection or it expired)")
            if sel.operator != operator.name:
                self._refuse(p, operator, ControlAction.EXECUTE, value, RefusalReason.SELECTED_BY_OTHER,
                             f"point {p.name!r} is selected by {sel.operator}")
            if sel.value != value:
                self._refuse(p, operator, ControlAction.EXECUTE, value, RefusalReason.INVALID_VALUE,
                             f"point {p.name!r} was selected for {sel.value:g}, not {value:g}")
            action = ControlAction.EXECUTE
            self._selections.pop(p.id, None)  # one execute per select, whatever the field answers
        return self._send(p, action, value, operator, feedback=True)

    def cancel(self, point: int, operator: OperatorConfig) -> CommandOutcome:
        p = self._point(point, operator, ControlAction.CANCEL, math.nan)
        if not allowed(operator.role, Permission.CONTROL):
            self._refuse(p, operator, ControlAction.CANCEL, math.nan, RefusalReason.NOT_AUTHORISED,
                         f"operator {operator.name} (role {operator.role.value}) may not control {p.name!r}")
        sel = self._selections.get(p.id)
        if sel is None:
            self._refuse(p, operator, ControlAction.CANCEL, math.nan, RefusalReason.NOT_SELECTED,
                         f"point {p.name!r} is not selected")
        if sel.operator != operator.name:
            self._refuse(p, operator, ControlAction.CANCEL, sel.value, RefusalReason.SELECTED_BY_OTHER,
                         f"point {p.name!r} is selected by {sel.operator}")
        self._selections.pop(p.id, None)
        return self._send(p, ControlAction.CANCEL, sel.value, operator)

    def on_control_result(self, result: ControlResult) -> None:
        """Called with the adapter's answer (from the supervisor's thread)."""
        with self._lock:
            entry = self._pending.get(result.request_id)
        if entry is not None:
            entry[1].append(result)
            entry[0].set()

    def fail_adapter(self, rtus: Sequence[str]) -> None:
        """An adapter went down: commands in flight to its RTUs will not be answered."""
        with self._lock:
            pending = list(self._pending.items())
        for rid, (ev, box) in pending:
            box.append(ControlResult(rid, ControlStatus.ADAPTER_DOWN, "protocol adapter restarted"))
            ev.set()

    # ------------------------------------------------------------------------------------------ checks
    def _point(self, point: int, operator: OperatorConfig, action: ControlAction, value: float) -> PointDef:
        try:
            return self._points[self._rtdb.check_id(point)]
        except UnknownPointError as exc:
            self._audit_record(operator, None, action, value, "refused", RefusalReason.UNKNOWN_POINT.value, str(exc))
            raise CommandRefused(RefusalReason.UNKNOWN_POINT, str(exc)) from None

    def _check(self, point: int, value: float, operator: OperatorConfig, action: ControlAction) -> PointDef:
        p = self._point(point, operator, action, value)
        if p.control is None:
            self._refuse(p, operator, action, value, RefusalReason.NOT_CONTROLLABLE,
                         f"point {p.name!r} is not controllable")
        problem = _value_problem(p, value)
        if problem:
            self._refuse(p, operator, action, value, RefusalReason.INVALID_VALUE, f"point {p.name!r}: {problem}")
        if not allowed(operator.role, Permission.CONTROL):
            self._refuse(p, operator, action, value, RefusalReason.NOT_AUTHORISED,
                         f"operator {operator.name} (role {operator.role.value}) may not control {p.name!r}")
        if self._tags is not None:
            tags = self._tags.blocking(p)
            if tags:
                t = tags[0]
                self._refuse(p, operator, action, value, RefusalReason.TAGGED,
                             f"point {p.name!r} is tagged {_tag_text(t)}")
        for interlock in self._interlocks:
            why = interlock(p, action, value)
            if why:
                self._refuse(p, operator, action, value, RefusalReason.INTERLOCKED, f"point {p.name!r}: {why}")
        if not self._rtdb.rtu_link_up(p.source.rtu):
            self._refuse(p, operator, action, value, RefusalReason.LINK_DOWN,
                         f"point {p.name!r}: RTU {p.source.rtu} is not connected")
        return p

    def _refuse(self, p: PointDef, operator: OperatorConfig, action: ControlAction, value: float,
                reason: RefusalReason, message: str) -> None:
        self._audit_record(operator, p, action, value, "refused", reason.value, message)
        raise CommandRefused(reason, message)

    # ------------------------------------------------------------------------------------------ field
    def _send(self, p: PointDef, action: ControlAction, value: float, operator: OperatorConfig,
              *, feedback: bool = False) -> CommandOutcome:
        assert p.control is not None
        with self._lock:
            if p.id in self._busy:
                busy = True
            else:
                busy = False
                self._busy.add(p.id)
        if busy:
            self._refuse(p, operator, action, value, RefusalReason.BUSY,
                         f"point {p.name!r} already has a command in progress")
        rid = next(self._ids)
        ev, box = threading.Event(), []
        sub = None
        try:
            with self._lock:
                self._pending[rid] = (ev, box)
            want_feedback = feedback and p.kind.is_status
            if want_feedback:
                sub = self._rtdb.subscribe(f"cmd-{rid}", points=[p.id], status_only=True, max_pending=16)
            self._audit_record(operator, p, action, value, "sent", "", "", request_id=rid)
            t0 = time.monotonic()
            req = ControlRequest(rid, p.id, p.source.rtu, p.source.common_address, p.control.address,
                                 p.control.type, action, float(value), p.control.timeout_s)
            if not self._transport.send_control(req):
                result = ControlResult(rid, ControlStatus.ADAPTER_DOWN, f"no running adapter for RTU {p.source.rtu}")
            elif ev.wait(p.control.timeout_s + 1.0):
                result = box[0]
            else:
                result = ControlResult(rid, ControlStatus.TIMEOUT, f"no answer from {p.source.rtu} "
                                                                   f"within {p.control.timeout_s:g} s")
            fb = FeedbackStatus.NOT_APPLICABLE
            if want_feedback and result.status is ControlStatus.SUCCESS and sub is not None:
                fb = self._await_feedback(p, value, sub, p.control.feedback_timeout_s)
            elapsed_ms = (time.monotonic() - t0) * 1000.0
            outcome = CommandOutcome(rid, p.id, p.name, action, float(value), result.status, result.detail, fb,
                                     elapsed_ms)
            detail = result.detail if fb is FeedbackStatus.NOT_APPLICABLE else f"{result.detail} [feedback {fb}]"
            self._audit_record(operator, p, action, value, "answered", result.status.value, detail.strip(),
                               request_id=rid, field_status=result.status.value, elapsed_ms=elapsed_ms)
            for fn in self._outcome_listeners:
                fn(outcome)
            return outcome
        finally:
            with self._lock:
                self._pending.pop(rid, None)
                self._busy.discard(p.id)
            if sub is not None:
                self._rtdb.unsubscribe(sub)

    def _await_feedback(self, p: PointDef, value: float, sub: Any, timeout_s: float) -> FeedbackStatus:
        target = _expected_state(p, value)
        deadline = time.monotonic() + timeout_s
        snap = self._rtdb.snapshot([p.id])[0]
        if snap["value"] == target and not snap["quality"] & int(Quality.INVALID | Quality.COMM_LOST):
            return FeedbackStatus.CONFIRMED
        while (left := deadline - time.monotonic()) > 0:
            cs = sub.get(timeout_s=left)
            if cs is None:
                continue
            if ((cs.rows["value"] == target) & ((cs.rows["quality"] & int(Quality.INVALID)) == 0)).any():
                return FeedbackStatus.CONFIRMED
        return FeedbackStatus.NOT_CONFIRMED

    def _audit_record(self, operator: OperatorConfig, p: PointDef | None, action: ControlAction, value: float,
                      outcome: str, reason: str, detail: str, **extra: Any) -> None:
        if self._audit is None:
            return
        self._audit.record(
            operator=operator.name,
            role=operator.role.value,
            point=-1 if p is None else p.id,
            point_name="" if p is None else p.name,
            action=action.value,
            value=float(value),
            outcome=outcome,
            reason=reason,
            field_status=extra.get("field_status", ""),
            field_detail=detail,
            elapsed_ms=float(extra.get("elapsed_ms", 0.0)),
            request_id=int(extra.get("request_id", 0)),
        )


def _value_problem(p: PointDef, value: float) -> str:
    if not math.isfinite(value):
        return "value must be a finite number"
    ctype = p.control.type if p.control is not None else None
    if ctype is ControlType.DOUBLE and value not in (DoubleState.OFF, DoubleState.ON):
        return f"a double command takes 1 (open/off) or 2 (close/on), not {value:g}"
    if ctype is ControlType.SINGLE and value not in (0, 1):
        return f"a single command takes 0 or 1, not {value:g}"
    if ctype is ControlType.SETPOINT_SCALED and not -32768 <= (value - p.offset) / p.scale <= 32767:
        return f"set-point {value:g} {p.units} is outside the scaled range"
    return ""


def _expected_state(p: PointDef, value: float) -> float:
    """The status value a successful command should produce."""
    if p.kind is PointKind.SINGLE:
        return 1.0 if value else 0.0
    return float(value)


def _tag_text(tag: Any) -> str:
    kind = getattr(tag, "kind", "")
    kind = getattr(kind, "value", kind)
    return f"{kind} by {getattr(tag, 'operator', '?')}: {getattr(tag, 'reason', '')}".strip()
