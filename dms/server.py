"""The DMS applications (and the OMS, which shares FLISR's outage records) attached to a running control centre: one
place that builds them, wires them to each other (the estimator's loads feed Volt/VAR, reconfiguration and studies;
FLISR records outages in the OMS store) and registers their gRPC services on the centre's server.

Usage::

    center = ControlCenter(config)
    dms = DmsApplications(center)   # before center.start(): registers the gRPC services
    center.start(); dms.start()
    ...
    dms.stop(); center.stop()

A station without a network model gets no DMS (``DmsApplications.enabled`` is False).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from dms.flisr.plan import FlisrMode
from dms.flisr.service import FlisrService
from dms.live_state import LiveStateSource, held_switches
from dms.reconfig.service import ReconfigService
from dms.se.realtime import RealtimeEstimator
from dms.study import StudyManager, open_store
from dms.switching import SwitchingService
from dms.voltvar.service import VoltVarService
from oms.billing import BillingService, BillingSettings
from oms.outage_records import OutageRecordStore
from oms.planned import PlannedOutageService
from oms.reliability_service import ReliabilityService
from oms.service import OmsService
from scada.server import ControlCenter

__all__ = ["DmsApplications"]

log = logging.getLogger(__name__)


class DmsApplications:
    def __init__(self, center: ControlCenter, *, flisr_mode: FlisrMode = FlisrMode.SEMI_AUTOMATIC) -> None:
        self.center = center
        self.enabled = center.topology is not None and center.config.network is not None
        self.live: LiveStateSource | None = None
        self.studies: StudyManager | None = None
        self.switching: SwitchingService | None = None
        self.flisr: FlisrService | None = None
        self.voltvar: VoltVarService | None = None
        self.outages: OutageRecordStore | None = None
        self.estimator: RealtimeEstimator | None = None
        self.reconfig: ReconfigService | None = None
        self.oms: OmsService | None = None
        self.planned: PlannedOutageService | None = None
        self.billing: BillingService | None = None
        self.reliability: ReliabilityService | None = None
        self._started: list[Any] = []
        self._stores: list[Any] = []
        if not self.enabled:
            return
        assert center.topology is not None
        config = center.config
        self.estimator = RealtimeEstimator.for_center(center)
        # loads from the estimate when there is one (else feeder-metered model loads) for studies and Volt/VAR
        self.live = LiveStateSource(config, center.rtdb, center.topology, load_estimates=self.estimator.load_estimates)
        study_store = open_store(center.data_dir)
        self.outages = OutageRecordStore(center.data_dir / "outages.sqlite")
        self._stores += [study_store, self.outages]
        topology, tags = center.topology, center.tags

        def held() -> frozenset[str]:
            return held_switches(topology.model, tags.active())

        self.studies = StudyManager(self.live.state, center.rtdb.snapshot,
                                    point_ids={p.name: p.id for p in config.points}, store=study_store,
                                    estimate=self.estimator.latest, held=held)
        studies = self.studies
        self.switching = SwitchingService.for_center(center, live_state=self.live.state,
                                                     study_state=lambda i: studies.get(i).state)
        # FLISR keeps its own pre-trip feeder loading: after a trip the tripped feeder's meter reads 0.
        self.flisr = FlisrService.from_center(center, mode=flisr_mode, recorder=self.outages)
        self.voltvar = VoltVarService.from_center(center, state_source=self.live.state)
        # the estimated loads, not the nominal ones; tagged switches and faulted/earthed sections left alone
        self.reconfig = ReconfigService(self.live.state, held_provider=held)
        # the OMS on the same outage store as FLISR (AMI, calls and SCADA trips -> predicted outages, crews)
        self.oms = OmsService(config, center.rtdb, center.topology, center.data_dir, store=self.outages,
                              commands=center.commands, headend_url=config.oms.headend_url)
        # planned outages: isolated through switching orders, recorded as planned; the OMS asks them whether an
        # opening is planned work before it records an unplanned outage
        self.planned = PlannedOutageService.for_center(center, switching=self.switching, records=self.outages)
        planned = self.planned

        def planned_work(switch: str, time_ms: int) -> str | None:
            o = planned.covering(switch, time_ms)
            return f"PO-{o.id} ({o.title})" if o is not None else None

        self.oms.planned_lookup = planned_work
        # daily energy values per feeder for billing, on the utility's local days
        local = timedelta(minutes=config.oms.utc_offset_min)
        self.billing = BillingService(config, center.historian, topology.model, center.data_dir, local,
                                      settings=BillingSettings(settle_delay_s=config.oms.settle_s), audit=center.audit)
        # IEEE 1366 indices from the outage records, a report every local day (after the same settle delay)
        self.reliability = ReliabilityService(self.outages, topology.model, center.data_dir, utc_offset=local,
                                              history_path=config.oms.saidi_history,
                                              report_hour=config.oms.settle_s / 3600.0)
        self._started += [self.estimator, self.switching, self.flisr, self.voltvar, self.reconfig, self.planned,
                          self.oms, self.billing, self.reliability]
        center.add_grpc_registrar(self._register)

    def _register(self, server: Any) -> list[str]:
        from dms.api import (
            flisr_servicer,
            reconfig_servicer,
            se_servicer,
            study_servicer,
            switching_servicer,
            voltvar_servicer,
        )
        from oms import api_servicer as oms_servicer
        from oms import billing_servicer, planned_servicer, reliability_servicer

        assert self.studies and self.switching and self.flisr and self.voltvar and self.estimator and self.reconfig
        assert self.oms and self.planned and self.billing and self.reliability
        services = self.center.services
        return [*se_servicer.register(server, services, self.estimator),
                *oms_servicer.register(server, services, self.oms),
                *planned_servicer.register(server, services, self.planned),
                *billing_servicer.register(server, services, self.billing),
                *reliability_servicer.register(server, services, self.reliability),
                *reconfig_servicer.register(server, services, self.reconfig),
                *study_servicer.register(server, services, self.studies),
                *switching_servicer.register(server, services, self.switching),
                *flisr_servicer.register(server, services, self.flisr),
                *voltvar_servicer.register(server, services, self.voltvar)]

    def start(self) -> None:
        for service in self._started:
            service.start()

    def stop(self) -> None:
        for service in reversed(self._started):
            try:
                service.stop()
            except Exception:  # one failing stop must not keep the others running
                log.exception("stopping %s failed", type(service).__name__)
        for store in self._stores:
            store.close()
