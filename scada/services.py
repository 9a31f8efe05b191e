"""The bundle of running services the gRPC API serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from models.config import StationConfig

if TYPE_CHECKING:
    from scada.alarms import AlarmManager
    from scada.audit import AuditLog
    from scada.auth import Authenticator
    from scada.commands import CommandService
    from scada.historian import Historian
    from scada.rtdb import Rtdb
    from scada.soe import SoeJournal
    from scada.tags import TagStore


class RtuRequests(Protocol):
    """Requests an operator may send to RTUs through their adapters; each returns False if the adapter is down."""

    def interrogate(self, rtu: str, *, counters: bool = False) -> bool: ...

    def sync_clock(self, rtu: str) -> bool: ...

    def adapter_status(self) -> list[AdapterState]: ...


@dataclass(frozen=True, slots=True)
class AdapterState:
    name: str
    running: bool
    restarts: int
    pid: int  # 0 when not running
    last_heartbeat_ms: int  # -1 if none yet
    counters: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class Services:
    config: StationConfig
    rtdb: Rtdb
    commands: CommandService
    alarms: AlarmManager
    soe: SoeJournal
    historian: Historian
    tags: TagStore
    audit: AuditLog
    auth: Authenticator
    rtus: RtuRequests | None = None  # None: no adapters behind this API (tests, studies)
