"""The DMS applications attached to a running control centre: one place that builds them, wires them to each other
(the estimator's loads feed FLISR, Volt/VAR and studies; FLISR records outages in the OMS) and registers their gRPC
services on the centre's server.

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
from typing import Any

from dms.live_state import LiveStateSource
from dms.study import StudyManager, open_store
from dms.switching import SwitchingService
from scada.server import ControlCenter

__all__ = ["DmsApplications"]

log = logging.getLogger(__name__)


class DmsApplications:
    def __init__(self, center: ControlCenter) -> None:
        self.center = center
        self.enabled = center.topology is not None and center.config.network is not None
        self.live: LiveStateSource | None = None
        self.studies: StudyManager | None = None
        self.switching: SwitchingService | None = None
        self._started: list[Any] = []
        if not self.enabled:
            return
        assert center.topology is not None
        config = center.config
        self.live = LiveStateSource(config, center.rtdb, center.topology)
        point_ids = {p.name: p.id for p in config.points}
        self._study_store = open_store(center.data_dir)
        self.studies = StudyManager(self.live.state, center.rtdb.snapshot, point_ids=point_ids,
                                    store=self._study_store)
        studies = self.studies
        self.switching = SwitchingService.for_center(center, live_state=self.live.state,
                                                     study_state=lambda i: studies.get(i).state)
        self._started.append(self.switching)
        center.add_grpc_registrar(self._register)

    def _register(self, server: Any) -> list[str]:
        from dms.api import study_servicer, switching_servicer

        assert self.studies is not None and self.switching is not None
        services = self.center.services
        return [*study_servicer.register(server, services, self.studies),
                *switching_servicer.register(server, services, self.switching)]

    def start(self) -> None:
        for service in self._started:
            service.start()

    def stop(self) -> None:
        for service in reversed(self._started):
            try:
                service.stop()
            except Exception:  # one failing stop must not keep the others running
                log.exception("stopping %s failed", type(service).__name__)
        if self.enabled:
            self._study_store.close()
