"""Operator selections held by the adapter, for protocols whose select cannot wait for the operator's execute.

DNP3 needs OPERATE as the very next request after its SELECT, c104 has no stand-alone select and Modbus has no select
at all: these adapters answer the operator's select themselves, hold it until the point's select time-out, and send
the field's select (if any) together with the operate on execute. IEC 61850 selects at the IED and only shares
``mode_error``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from models.commands import ControlAction, ControlRequest, ControlStatus
from models.points import PointDef

K = TypeVar("K", bound=Hashable)


def mode_error(action: ControlAction, sbo: bool, point_name: str) -> str | None:
    """Why ``action`` does not fit a command configured select-before-operate (``sbo``) or direct; None if it fits."""
    if action in (ControlAction.SELECT, ControlAction.CANCEL) and not sbo:
        return f"{point_name} is configured for direct operate"
    if action is ControlAction.EXECUTE and not sbo:
        return f"{point_name} is direct operate: use action direct"
    if action is ControlAction.DIRECT and sbo:  # it would skip the select the configuration demands
        return f"{point_name} requires select before operate"
    return None


class HeldSelections(Generic[K]):
    """The selections of one RTU, by command key, each until its expiry (monotonic seconds)."""

    __slots__ = ("_expiry", "_selected_detail")

    def __init__(self, selected_detail: str) -> None:
        self._selected_detail = selected_detail  # the protocol's answer to a select: what happens on execute
        self._expiry: dict[K, float] = {}

    def decide(self, req: ControlRequest, key: K, point: PointDef, started: float) -> tuple[ControlStatus, str] | None:
        """Answer (status, detail) for ``req`` on ``point`` at ``started``, or None when it goes to the field: a
        direct operate on a direct command, or an execute within its selection (which it uses up)."""
        control = point.control
        if control is None:
            raise ValueError(f"point {point.name} has no control definition")
        error = mode_error(req.action, control.mode.selects, point.name)
        if error is not None:
            return ControlStatus.ERROR, error
        if req.action is ControlAction.SELECT:
            self._expiry[key] = started + control.timeout_s
            return ControlStatus.SUCCESS, self._selected_detail
        if req.action is ControlAction.CANCEL:
            self._expiry.pop(key, None)
            return ControlStatus.SUCCESS, "deselected"
        if req.action is ControlAction.EXECUTE:
            expiry = self._expiry.pop(key, None)
            if expiry is None or started > expiry:
                return ControlStatus.ERROR, f"execute on {point.name} without a valid select"
        return None

    def clear(self) -> None:
        """Drop every selection (the link was lost: the field forgot its selects too)."""
        self._expiry.clear()


__all__ = ["HeldSelections", "mode_error"]
