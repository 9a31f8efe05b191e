"""Request routing inside an adapter process: each request type to its handler, failures answered exactly once."""

from __future__ import annotations

import logging

import pytest

from frontend_protocols.dispatch import RequestRouter, select_rtus
from models.commands import (
    ClockSyncRequest,
    ControlAction,
    ControlRequest,
    ControlStatus,
    InterrogationRequest,
)
from models.points import ControlType


class Adapter:
    """Records what the router calls; ``fail`` makes the control handler raise."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[object] = []
        self.counts: list[str] = []
        self.answers: list[tuple[int, ControlStatus, str]] = []
        self.pending: dict[int, object] = {}

    def control(self, req: ControlRequest) -> None:
        if self.fail:
            raise RuntimeError("library exploded")
        self.calls.append(req)

    def router(self) -> RequestRouter:
        return RequestRouter("TEST adapter A", logging.getLogger("test.dispatch"), control=self.control,
                             interrogation=self.calls.append, clock_sync=self.calls.append, count=self.counts.append,
                             answer=lambda r, s, d, t: self.answers.append((r.request_id, s, d)),
                             in_progress=self.pending)


def ctl(rid: int) -> ControlRequest:
    return ControlRequest(rid, 0, "R", 1, 1, ControlType.SINGLE, ControlAction.DIRECT, 1.0, 5.0)


def test_each_request_reaches_its_handler_and_unknown_ones_are_counted() -> None:
    a = Adapter()
    msgs = [ctl(1), InterrogationRequest("R", counters=True), ClockSyncRequest("")]
    for m in [*msgs, "garbage"]:
        a.router().handle(m)
    assert a.calls == msgs
    assert a.counts == ["unknown_messages"] and not a.answers


def test_failing_command_is_logged_counted_and_answered_once(caplog: pytest.LogCaptureFixture) -> None:
    a = Adapter(fail=True)
    with caplog.at_level(logging.ERROR, "test.dispatch"):
        a.router().handle(ctl(5))
    assert a.answers == [(5, ControlStatus.ERROR, "adapter error while sending the command")]
    assert a.counts == ["handler_errors"] and "TEST adapter A: failed to handle" in caplog.text
    a.pending[6] = object()  # the field path owns this one: its answer comes from there
    a.router().handle(ctl(6))
    assert [rid for rid, _, _ in a.answers] == [5]


def test_select_rtus_all_named_or_none() -> None:
    counts: list[str] = []
    rtus = {"A": 1, "B": 2}
    assert select_rtus(rtus, "", counts.append) == [1, 2]
    assert select_rtus(rtus, "B", counts.append) == [2]
    assert select_rtus(rtus, "X", counts.append) == [] and counts == ["unknown_rtu_requests"]
