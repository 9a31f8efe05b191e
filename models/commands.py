"""Command messages flowing from the control centre to the field, and the field's answer."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from models.points import ControlType


class ControlAction(StrEnum):
    SELECT = "select"
    EXECUTE = "execute"  # after a successful select
    CANCEL = "cancel"  # deselect
    DIRECT = "direct"  # direct operate, no select


class ControlStatus(StrEnum):
    SUCCESS = "success"  # positive activation confirmation from the field
    REFUSED_BY_FIELD = "refused_by_field"  # negative confirmation
    TIMEOUT = "timeout"  # the field did not answer in time
    LINK_DOWN = "link_down"  # no link to the RTU
    ADAPTER_DOWN = "adapter_down"  # the protocol adapter is restarting
    UNKNOWN_ADDRESS = "unknown_address"  # the adapter has no such command object
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A command for one command object; ``value`` is 0/1 for single, DoubleState for double, a float otherwise."""

    request_id: int
    point: int
    rtu: str
    common_address: int
    address: int
    type: ControlType
    action: ControlAction
    value: float
    timeout_s: float


@dataclass(frozen=True, slots=True)
class ControlResult:
    request_id: int
    status: ControlStatus
    detail: str = ""
    elapsed_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class InterrogationRequest:
    """Ask an adapter for a general (or counter) interrogation of one RTU, or of all when ``rtu`` is empty."""

    rtu: str = ""
    counters: bool = False


@dataclass(frozen=True, slots=True)
class ClockSyncRequest:
    rtu: str = ""
