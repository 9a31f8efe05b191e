"""Selections held by the adapter (DNP3, IEC 104, Modbus) and the select/direct mode check shared with IEC 61850."""

from __future__ import annotations

import pytest

from frontend_protocols.held_selections import HeldSelections, mode_error
from models.commands import ControlAction, ControlRequest, ControlStatus
from models.points import ControlDef, ControlMode, ControlType, PointDef, PointKind, PointSource

SBO = PointDef(0, "CB1", PointKind.DOUBLE, PointSource("dnp3", "R", 1, 0, "double_bit_binary_input"),
               control=ControlDef(ControlType.DOUBLE, 7, ControlMode.SELECT_BEFORE_OPERATE, timeout_s=10.0))
DIRECT = PointDef(1, "FAN", PointKind.SINGLE, PointSource("dnp3", "R", 1, 1, "binary_input"),
                  control=ControlDef(ControlType.SINGLE, 8, ControlMode.DIRECT))


def req(action: ControlAction, rid: int = 1) -> ControlRequest:
    return ControlRequest(rid, 0, "R", 1, 7, ControlType.DOUBLE, action, 1.0, 5.0)


def test_select_then_execute_goes_to_the_field_once() -> None:
    held: HeldSelections[int] = HeldSelections("selected (held)")
    assert held.decide(req(ControlAction.SELECT), 7, SBO, 100.0) == (ControlStatus.SUCCESS, "selected (held)")
    assert held.decide(req(ControlAction.EXECUTE), 7, SBO, 105.0) is None  # within the select time-out
    assert held.decide(req(ControlAction.EXECUTE), 7, SBO, 106.0) == (
        ControlStatus.ERROR, "execute on CB1 without a valid select")  # the execute used the selection up


def test_expired_cancelled_and_cleared_selections_refuse_the_execute() -> None:
    held: HeldSelections[int] = HeldSelections("selected")
    held.decide(req(ControlAction.SELECT), 7, SBO, 100.0)
    assert held.decide(req(ControlAction.EXECUTE), 7, SBO, 110.5)[0] is ControlStatus.ERROR  # type: ignore[index]
    held.decide(req(ControlAction.SELECT), 7, SBO, 200.0)
    assert held.decide(req(ControlAction.CANCEL), 7, SBO, 201.0) == (ControlStatus.SUCCESS, "deselected")
    assert held.decide(req(ControlAction.EXECUTE), 7, SBO, 202.0)[0] is ControlStatus.ERROR  # type: ignore[index]
    held.decide(req(ControlAction.SELECT), 7, SBO, 300.0)
    held.clear()
    assert held.decide(req(ControlAction.EXECUTE), 7, SBO, 301.0)[0] is ControlStatus.ERROR  # type: ignore[index]


@pytest.mark.parametrize(("action", "point", "expected"), [
    (ControlAction.DIRECT, SBO, "CB1 requires select before operate"),
    (ControlAction.SELECT, DIRECT, "FAN is configured for direct operate"),
    (ControlAction.CANCEL, DIRECT, "FAN is configured for direct operate"),
    (ControlAction.EXECUTE, DIRECT, "FAN is direct operate: use action direct"),
])
def test_action_that_does_not_fit_the_mode_is_an_error(action: ControlAction, point: PointDef, expected: str) -> None:
    assert mode_error(action, point.control.mode.selects, point.name) == expected  # type: ignore[union-attr]
    assert HeldSelections("x").decide(req(action), 7, point, 0.0) == (ControlStatus.ERROR, expected)


def test_direct_operate_on_a_direct_command_goes_to_the_field() -> None:
    assert mode_error(ControlAction.DIRECT, False, "FAN") is None
    assert HeldSelections("x").decide(req(ControlAction.DIRECT), 8, DIRECT, 0.0) is None
