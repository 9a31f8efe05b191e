"""Routing of the server's requests inside an adapter process, shared by the protocol masters.

A request that fails in its handler must not take the adapter down: it is logged and counted, and a command that is
not yet in progress is answered ERROR, so every ControlRequest still gets exactly one ControlResult.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Mapping
from typing import Any, TypeVar

from models.commands import ClockSyncRequest, ControlRequest, ControlStatus, InterrogationRequest

T = TypeVar("T")


class RequestRouter:
    """Calls the adapter's handler for each request type; see the module docstring for failures."""

    __slots__ = ("_answer", "_clock_sync", "_control", "_count", "_error_detail", "_in_progress", "_interrogation",
                 "_log", "_name")

    def __init__(self, name: str, log: logging.Logger, *, control: Callable[[ControlRequest], None],
                 interrogation: Callable[[InterrogationRequest], None],
                 clock_sync: Callable[[ClockSyncRequest], None], count: Callable[[str], None],
                 answer: Callable[[ControlRequest, ControlStatus, str, float], None],
                 in_progress: Container[int] = (),
                 error_detail: str = "adapter error while sending the command") -> None:
        self._name = name  # "DNP3 adapter A1": names the adapter in the log
        self._log = log  # the protocol module's logger
        self._control = control
        self._interrogation = interrogation
        self._clock_sync = clock_sync
        self._count = count
        self._answer = answer
        self._in_progress = in_progress  # request ids already answered by the field path: never answer twice
        self._error_detail = error_detail

    def handle(self, msg: Any) -> None:
        try:
            if isinstance(msg, ControlRequest):
                self._control(msg)
            elif isinstance(msg, InterrogationRequest):
                self._interrogation(msg)
            elif isinstance(msg, ClockSyncRequest):
                self._clock_sync(msg)
            else:
                self._count("unknown_messages")
        except Exception:
            self._log.exception("%s: failed to handle %r", self._name, msg)
            self._count("handler_errors")
            if isinstance(msg, ControlRequest) and msg.request_id not in self._in_progress:
                self._answer(msg, ControlStatus.ERROR, self._error_detail, time.monotonic())


def select_rtus(rtus: Mapping[str, T], name: str, count: Callable[[str], None]) -> list[T]:
    """Every RTU for an empty ``name``, else the named one; an unknown name is counted and selects none."""
    if not name:
        return list(rtus.values())
    rtu = rtus.get(name)
    if rtu is None:
        count("unknown_rtu_requests")
        return []
    return [rtu]


__all__ = ["RequestRouter", "select_rtus"]
