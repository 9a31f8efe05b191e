"""The control-centre server: RTDB, stores, alarm and historian subscribers, supervised adapters, gRPC API."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from frontend_protocols.supervisor import AdapterSupervisor, adapter_specs
from models.commands import (
    ClockSyncRequest,
    ControlAction,
    ControlRequest,
    ControlResult,
    ControlStatus,
    InterrogationRequest,
)
from models.config import Protocol, StationConfig
from models.points import Priority
from models.timebase import now_ms
from models.updates import InterrogationDone, LinkEvent, UpdateBatch
from scada.alarms import AlarmManager
from scada.audit import AuditLog
from scada.auth import Authenticator
from scada.commands import CommandOutcome, CommandService, FeedbackStatus
from scada.historian import Historian
from scada.model_service import ModelService
from scada.rtdb import Rtdb
from scada.services import AdapterState, Services
from scada.soe import SoeJournal
from scada.tags import TagStore
from scada.topology_service import ManualStateStore, TopologyService

log = logging.getLogger(__name__)

_PURGE_PERIOD_S = 3600.0


class ControlCenter:
    """Everything one server process runs. ``start`` brings it all up or raises; ``stop`` takes it down in order."""

    def __init__(
        self,
        config: StationConfig,
        *,
        data_dir: str | Path | None = None,
        grpc_address: str | None = None,
        start_adapters: bool = True,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir or config.server.data_dir)
        self.grpc_address = grpc_address or config.server.grpc_address
        self._start_adapters = start_adapters
        self.soe = SoeJournal(self.data_dir / "soe.sqlite", config.points)
        # Sequence numbers stay increasing across restarts without storing a counter: start from the wall clock in us.
        self.rtdb = Rtdb(config, soe=self.soe, start_seq=max(self.soe.last_seq(), time.time_ns() // 1000))
        self.alarms = AlarmManager(config, self.data_dir / "alarms.sqlite")
        self.historian = Historian(
            self.data_dir / "historian.sqlite",
            config.points,
            retention_days=config.historian.retention_days,
            max_interval_s=config.historian.max_interval_s,
        )
        self.tags = TagStore(self.data_dir / "tags.sqlite")
        self.audit = AuditLog(self.data_dir / "audit.sqlite")
        self.auth = Authenticator(config)
        self.commands = CommandService(self.rtdb, self, tags=self.tags, audit=self.audit)
        # The live topology and its interlocks exist only for a station with a network model.
        self.topology: TopologyService | None = None
        self.manual_states: ManualStateStore | None = None
        self.model: ModelService | None = None  # the live CIM model: GIS differences and reconfiguration export
        if config.network is not None:
            from scada.interlocks import TopologyInterlocks

            self.manual_states = ManualStateStore(self.data_dir / "topology.sqlite")
            self.topology = TopologyService(self.rtdb, config.network, audit=self.audit,
                                            manual_store=self.manual_states)
            self.commands.add_interlock(TopologyInterlocks(self.topology, self.rtdb, self.tags))
            self.model = ModelService(config, self.topology, data_dir=self.data_dir, audit=self.audit)
        self.supervisors = {s.name: AdapterSupervisor(s, config, self) for s in adapter_specs(config)}
        self._adapter_of = {rtu: s.spec.name for s in self.supervisors.values() for rtu in s.spec.rtus}
        self.services = Services(config, self.rtdb, self.commands, self.alarms, self.soe, self.historian,
                                 self.tags, self.audit, self.auth, self)
        self.grpc_server: Any = None
        self.grpc_port = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._registrars: list[Any] = []
        self.rtdb.add_link_listener(self._on_link)
        self.commands.add_outcome_listener(self._on_command_outcome)

    # ---------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        from scada.api.server import build_grpc_server  # grpc is only needed once serving

        self.rtdb.start()
        if self.topology is not None:
            self.topology.start()
        self.alarms.start(self.rtdb.subscribe("alarms", max_pending=1024))
        hist_sub = self.rtdb.subscribe("historian", max_pending=1024)
        self._threads.append(threading.Thread(target=self._historian_loop, args=(hist_sub,),
                                              name="historian", daemon=True))
        for t in self._threads:
            t.start()
        self.grpc_server, self.grpc_port = build_grpc_server(self.services, self.grpc_address,
                                                             topology=self.topology, model=self.model,
                                                             registrars=self._registrars)
        self.grpc_server.start()
        if self._start_adapters:
            for sup in self.supervisors.values():
                sup.start()
        log.info("dscada serving %s on port %d", self.config.name, self.grpc_port)

    def add_grpc_registrar(self, registrar: Any) -> None:
        """More gRPC servicers on the same server (the DMS and OMS applications); call before ``start``.
        ``registrar(server)`` adds them and returns their full service names (for health and reflection)."""
        if self.grpc_server is not None:
            raise RuntimeError("gRPC registrars must be added before the server starts")
        self._registrars.append(registrar)

    def stop(self) -> None:
        self._stop.set()
        for sup in self.supervisors.values():
            sup.stop()
        if self.grpc_server is not None:
            self.grpc_server.stop(grace=1.0).wait(3)
        self.alarms.stop()
        if self.topology is not None:
            self.topology.stop()
        self.rtdb.stop()
        for t in self._threads:
            t.join(5)
        for store in (self.soe, self.historian, self.tags, self.audit, self.manual_states):
            if store is not None:
                store.close()

    def __enter__(self) -> ControlCenter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- adapter sink
    def on_adapter_message(self, adapter: str, msg: Any) -> None:
        if isinstance(msg, UpdateBatch | LinkEvent | InterrogationDone):
            self.rtdb.ingest(msg)
        elif isinstance(msg, ControlResult):
            self.commands.on_control_result(msg)
        else:
            log.warning("adapter %s sent an unexpected %s", adapter, type(msg).__name__)

    def on_adapter_state(self, adapter: str, running: bool, detail: str) -> None:
        key = f"adapter:{adapter}"
        if running:
            self.alarms.clear_system(key)
            return
        self.alarms.raise_system(key, f"Protocol adapter {adapter} restarting: {detail}", Priority.HIGH)
        rtus = self.supervisors[adapter].spec.rtus
        now = now_ms()
        for rtu in rtus:
            self.rtdb.ingest(LinkEvent(adapter, rtu, False, reason=f"adapter down: {detail}", time_ms=now))
        self.commands.fail_adapter(rtus)

    def send_control(self, request: ControlRequest) -> bool:
        sup = self.supervisors.get(self._adapter_of.get(request.rtu, ""))
        return sup is not None and sup.send(request)

    def interrogate(self, rtu: str, *, counters: bool = False) -> bool:
        sup = self.supervisors.get(self._adapter_of.get(rtu, ""))
        return sup is not None and sup.send(InterrogationRequest(rtu, counters))

    def adapter_status(self) -> list[AdapterState]:
        out = []
        for sup in self.supervisors.values():
            hb = sup.last_heartbeat
            out.append(AdapterState(sup.spec.name, sup.running, sup.restarts, (sup.pid or 0) if sup.running else 0,
                                    hb.time_ms if hb else -1, hb.counters if hb else ()))
        return out

    def sync_clock(self, rtu: str) -> bool:
        sup = self.supervisors.get(self._adapter_of.get(rtu, ""))
        return sup is not None and sup.send(ClockSyncRequest(rtu))

    # ---------------------------------------------------------------------------------------------- internals
    def _on_link(self, ev: LinkEvent) -> None:
        key = f"link:{ev.rtu}"
        if ev.up:
            self.alarms.clear_system(key)
        else:
            rtu = self.config.rtu(ev.rtu)
            if rtu.protocol is Protocol.CALCULATED:  # a calculation in this server, not a field link
                self.alarms.raise_system(key, f"Calculated source {ev.rtu} calculation stopped "
                                              f"({ev.reason or 'not running'})", Priority.HIGH)
                return
            kind = "FRTU" if rtu.frtu else "RTU"
            self.alarms.raise_system(key, f"{kind} {ev.rtu} communication lost ({ev.reason or 'link down'})",
                                     Priority.HIGH)

    def _on_command_outcome(self, outcome: CommandOutcome) -> None:
        """A command the field refused, did not answer, or whose status did not follow is an event to acknowledge."""
        failed = outcome.status is not ControlStatus.SUCCESS or outcome.feedback is FeedbackStatus.NOT_CONFIRMED
        if not failed or outcome.action is ControlAction.CANCEL:
            return
        why = (f"status did not follow within {self.config.points[outcome.point].control.feedback_timeout_s:g} s"
               if outcome.status is ControlStatus.SUCCESS else f"{outcome.status.value}: {outcome.field_detail}")
        key = f"command:{outcome.point_name}:{outcome.request_id}"
        self.alarms.raise_system(key, f"{outcome.point_name}: {outcome.action.value} {outcome.value:g} failed ({why})",
                                 Priority.HIGH)
        self.alarms.clear_system(key)  # an event, not a condition: it waits only for acknowledgement

    def _historian_loop(self, sub: Any) -> None:
        next_purge = time.monotonic() + 60.0
        while not self._stop.is_set():
            cs = sub.get(timeout_s=0.5)
            try:
                if cs is not None:
                    self.historian.process(cs)
                if time.monotonic() >= next_purge:
                    self.historian.purge()
                    next_purge = time.monotonic() + _PURGE_PERIOD_S
            except Exception:
                log.exception("historian failed")
