"""The transmission-SCADA simulator process: a :class:`TransmissionSystem` stepping in real time, published by the
TASE.2 server (``iccp.tase2.server``) to the distribution centre under one bilateral table, with the DR snapshot
files (``iccp.recovery.SnapshotWriter``) written next to it and the tie breakers operable over TASE.2 device control.

The simulator is the remote centre a station's ``[[iccp.remotes]]`` entry points to, so it is configured from that
station file (:func:`sim_iccp_config`):

=========================  ====================================================================================
simulator                  taken from the station
=========================  ====================================================================================
our AP title / AE qual.    the remote's ``ap_title`` / ``ae_qualifier`` (the station's client calls them)
listen address             the remote's first (primary) address, unless ``--listen`` says otherwise
the one peer allowed in    the station's ``[iccp] ap_title`` / ``ae_qualifier`` (its client's calling identity)
bilateral table            id = the remote's ``bilateral_table_id``, ICC domain = the remote's ``domain``
published points           every simulator point (``FREQ_SYS``, ``TIE<n>_MW`` ... see ``iccp.sim.transmission``),
                           read-only, under its own name and type; the station imports any subset of them
devices                    ``CB_T<n>`` (select-before-operate, tag) per tie: writing 0 opens, 1 closes
                           ``CB_T<n>_STATE`` through :meth:`TransmissionSystem.operate_breaker`
=========================  ====================================================================================

Stepping: every ``period_s`` the system advances to the wall clock (dt = now - simulated time, so simulated time
stays equal to UTC); its report-by-exception changes go to the TASE.2 point source (which drives RBE transfer
reports) and to the snapshot writer. A breaker operation wakes the stepper at once, so the operated breaker is
reported without waiting for the next period. All access to the system holds one lock: the server's loop thread
(device control) and the stepper thread are its only users.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iccp.errors import IccpError
from iccp.recovery import SnapshotWriter
from iccp.sim.transmission import (
    BreakerResult,
    PointValue,
    SimPointType,
    TieFlows,
    TransmissionConfig,
    TransmissionSystem,
)
from iccp.tase2.bilateral import BilateralDevice, BilateralPoint, BilateralTable, TransferSetLimits
from iccp.tase2.model import ControlKind, DeviceDef, PointType
from models.iccp_config import IccpConfig, IccpConfigError, RemoteCentre
from models.points import PointDef, PointKind, PointSource
from models.timebase import now_ms

__all__ = [
    "SIM_FRONTEND",
    "SIM_OPERATOR",
    "SimSettings",
    "SimulatorError",
    "TransmissionSimulator",
    "breaker_device_name",
    "choose_remote",
    "sim_iccp_config",
    "sim_point_defs",
]

log = logging.getLogger("iccp.sim.server")

SIM_FRONTEND = "tase2-sim"  # the ``source.frontend`` of the simulator's own point definitions
SIM_OPERATOR = "distribution-centre"  # who device operations are logged as


class SimulatorError(IccpError):
    """The simulator cannot be configured or started as asked (names the field or the cause)."""


@dataclass(frozen=True, slots=True)
class SimSettings:
    """How the simulator process runs (the CLI's options)."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see ``TransmissionSimulator.port``)
    seed: int = 0
    period_s: float = 1.0
    snapshots_dir: Path | None = None  # None: no DR snapshot files
    snapshot_interval_s: float = 60.0
    snapshot_retention_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SimulatorError(f"simulator: port {self.port} out of range 0..65535")
        if not 0.01 <= self.period_s <= 3600:
            raise SimulatorError(f"simulator: period_s must be in [0.01, 3600] s, not {self.period_s}")
        if not self.snapshot_interval_s >= 1:
            raise SimulatorError(f"simulator: snapshot_interval_s must be at least 1 s, not {self.snapshot_interval_s}")


def breaker_device_name(point: str) -> str:
    """``CB_T1_STATE`` -> ``CB_T1``: the TASE.2 device operating that breaker."""
    return point.removesuffix("_STATE")


def sim_point_defs(system: TransmissionSystem, rtu: str = "TSO") -> tuple[PointDef, ...]:
    """Point definitions of the simulator's points, as the TASE.2 mapping (``iccp.tase2.mapping``) needs them:
    frequency, flows and voltages are analog, the breakers double points, the energy registers counters."""
    out = []
    for j, d in enumerate(system.points):
        if d.type is SimPointType.STATE:
            kind = PointKind.DOUBLE
        elif d.units == "MWh":
            kind = PointKind.COUNTER
        else:
            kind = PointKind.ANALOG
        out.append(PointDef(j, d.name, kind, PointSource(SIM_FRONTEND, rtu, 0, j, d.type.value, d.name),
                            units=d.units, description=d.description))
    return tuple(out)


def choose_remote(station_iccp: IccpConfig, remote: str | None = None) -> RemoteCentre:
    """The ``[[iccp.remotes]]`` entry the simulator plays: ``remote`` by name, or the only one."""
    if not station_iccp.remotes:
        raise SimulatorError("the station's [iccp] has no [[iccp.remotes]]: nothing says who the simulator is")
    if remote is None:
        if len(station_iccp.remotes) > 1:
            names = ", ".join(r.name for r in station_iccp.remotes)
            raise SimulatorError(f"the station has several ICCP remotes ({names}): choose one with --remote")
        rc = station_iccp.remotes[0]
    else:
        try:
            rc = station_iccp.remote(remote)
        except IccpConfigError as exc:
            raise SimulatorError(str(exc)) from None
    return rc


def sim_iccp_config(station_iccp: IccpConfig, system: TransmissionSystem, *, remote: str | None = None,
                    listen: str | None = None, peer_name: str = "DSO",
                    imported_types: Mapping[str, str] | None = None) -> IccpConfig:
    """The simulator's own ``IccpConfig``: it is ``station_iccp.remotes[remote]`` and lets in exactly the station.

    ``imported_types`` (TASE.2 name -> type name, from the station's points of that remote) publishes a point with
    the type the station imports it as (e.g. ``Data_RealQTimeTagExtended`` for millisecond time stamps) when its
    base (Real/State) is the simulator's; other points keep the simulator's type.
    """
    rc = choose_remote(station_iccp, remote)
    wanted = dict(imported_types or {})

    def type_of(name: str, own: PointType) -> PointType:
        try:
            chosen = PointType(wanted.get(name, own.value))
        except ValueError:
            raise SimulatorError(f"point {name!r}: unknown TASE.2 type {wanted[name]!r}") from None
        return chosen if chosen.base == own.base else own

    points = tuple(BilateralPoint(d.name, d.name, type_of(d.name, PointType(d.type.value))) for d in system.points)
    devices = tuple(BilateralDevice(DeviceDef(breaker_device_name(d.name), ControlKind.COMMAND, sbo=True, tag=True),
                                    d.name) for d in system.points if d.commandable)
    table = BilateralTable(peer_name, rc.bilateral_table_id, station_iccp.identity, rc.domain, points, devices,
                           TransferSetLimits(max_transfer_sets=64, max_data_sets=64,
                                             max_data_set_size=max(1000, len(points)), min_integrity_s=1),
                           rc.flags_layout, rc.state_encoding, SIM_OPERATOR)
    return IccpConfig(rc.identity, listen or rc.addresses[0], (table,), ())


ChangeListener = Callable[[Sequence[PointValue], float], None]


class TransmissionSimulator:
    """The simulator process minus its command line. ``start()``/``stop()``; safe to stop twice.

    ``server_factory(iccp_config, simulator, host, port)`` builds the TASE.2 server (an object with ``start()``,
    ``stop()`` and ``port``) and ``publish(changes)`` (called on the stepper thread); the default is
    :func:`iccp.sim.tase2_link.build_server` over ``iccp.tase2.server.Tase2Server``.
    """

    def __init__(self, iccp_config: IccpConfig, settings: SimSettings = SimSettings(), *,
                 transmission: TransmissionConfig | None = None, source_name: str = "TSO",
                 server_factory: Callable[..., Any] | None = None, tie_flows: TieFlows | None = None) -> None:
        self.settings = settings
        self.iccp_config = iccp_config
        self.system = TransmissionSystem(transmission, seed=settings.seed, start_ms=now_ms(), tie_flows=tie_flows)
        self.point_defs = sim_point_defs(self.system, source_name)
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: list[ChangeListener] = []
        self._writer = (SnapshotWriter(settings.snapshots_dir, source=source_name,
                                       interval_s=settings.snapshot_interval_s,
                                       retention_s=max(settings.snapshot_retention_s, settings.snapshot_interval_s))
                        if settings.snapshots_dir is not None else None)
        if server_factory is None:
            from iccp.sim.tase2_link import build_server

            server_factory = build_server
        self._server_factory = server_factory
        self._server: Any = None
        self._importer: Any = None  # the transmission side's import of distribution points (attach_import)
        self._link_cut = False
        self._port = 0
        self.steps = 0
        self.changes_published = 0
        self.operations = 0

    # ----------------------------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        if self._port == 0:
            raise SimulatorError("simulator is not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def add_listener(self, listener: ChangeListener) -> None:
        """``listener(changes, published_monotonic_s)`` after each step that changed something (benchmarks)."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._thread is not None:
            raise SimulatorError("simulator already started")
        with self._lock:
            state = self.system.snapshot()
            if self._writer is not None:
                self._writer.start(state, self.system.now_ms)
        self._server = self._server_factory(self.iccp_config, self, self.settings.host, self.settings.port)
        try:
            self._server.start()
        except Exception:
            self._server = None
            raise
        self._port = int(self._server.port)  # kept across link cuts: the restored server listens there again
        self._thread = threading.Thread(target=self._run, name="iccp-sim-stepper", daemon=True)
        self._thread.start()
        if self._importer is not None:
            self._importer.start()
        log.info("transmission simulator: %d points on port %d", len(self.system.points), self.port)

    def attach_import(self, importer: Any) -> None:
        """Also import from the distribution centre (``iccp.sim.distribution_import.DistributionImport``): started
        and stopped with the simulator, and cut with the link. Before ``start``."""
        if self._thread is not None:
            raise SimulatorError("attach the import before starting the simulator")
        self._importer = importer

    @property
    def importer(self) -> Any:
        return self._importer

    @property
    def link_cut(self) -> bool:
        return self._link_cut

    def cut_link(self) -> None:
        """A communication outage between the centres: the TASE.2 server stops (its associations are aborted, new
        ones refused) and the import stops, while the transmission system keeps running and the DR snapshot files
        keep being written, so the distribution centre can recover the gap afterwards."""
        with self._lock:
            if self._server is None or self._link_cut:
                return
            self._link_cut = True
            server, self._server = self._server, None
        server.stop()
        if self._importer is not None:
            self._importer.stop()
        log.info("transmission simulator: link cut")

    def restore_link(self) -> None:
        """End of the outage: a new server on the same port, holding the current values; the import restarts."""
        with self._lock:
            if not self._link_cut:
                return
            server = self._server_factory(self.iccp_config, self, self.settings.host, self._port)
            server.start()
            self._server = server
            self._link_cut = False
        if self._importer is not None:
            self._importer.start()
        log.info("transmission simulator: link restored on port %d", self._port)

    def stop(self) -> None:
        """Stop stepping, stop the server (its associations are aborted), write the snapshot in progress."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10.0)
        if self._importer is not None and not self._link_cut:
            self._importer.stop()
        with self._lock:
            server, self._server = self._server, None
        if server is not None:
            server.stop()
        with self._lock:
            if self._writer is not None:
                self._writer.close(max(self.system.now_ms, now_ms()))
                self._writer = None

    def __enter__(self) -> TransmissionSimulator:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------------- access
    def snapshot(self) -> tuple[PointValue, ...]:
        with self._lock:
            return self.system.snapshot()

    def operate_breaker(self, point: str, close: bool) -> BreakerResult:
        """Operate a tie breaker (``CB_T<n>_STATE``); the stepper reports it at once."""
        with self._lock:
            result = self.system.operate_breaker(point, close)
            self.operations += 1
        log.info("breaker %s %s: %s", point, "close" if close else "open", result.value)
        self._wake.set()
        return result

    @property
    def snapshot_files(self) -> tuple[Path, ...]:
        d = self.settings.snapshots_dir
        return tuple(sorted(d.glob("*.csv"))) if d is not None and d.is_dir() else ()

    # -------------------------------------------------------------------------------------------------- steps
    def step_now(self) -> tuple[PointValue, ...]:
        """Advance the system to the wall clock and publish its changes (the stepper's body; tests call it)."""
        with self._lock:
            wall = now_ms()
            dt_ms = wall - self.system.now_ms
            if dt_ms < 1:  # same millisecond (a wake-up right after a step): only pending operations
                dt_ms = 1
            changes = self.system.step(dt_ms / 1000.0)
            self.steps += 1
            if self._writer is not None:
                self._writer.record(self.system.now_ms, changes)
        server = self._server
        if changes and server is not None:  # during a link cut the snapshot files still record the changes
            server.publish(changes)
            self.changes_published += len(changes)
            t = time.monotonic()
            for listener in self._listeners:
                listener(changes, t)
        return changes

    def _run(self) -> None:
        period = self.settings.period_s
        next_at = time.monotonic() + period
        while not self._stop.is_set():
            self._wake.wait(max(0.0, next_at - time.monotonic()))
            if self._stop.is_set():
                break
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                self.step_now()
            except Exception:  # noqa: BLE001 - a failed step is logged; the simulator keeps its link alive
                log.exception("transmission simulator step failed")
            if not woken or time.monotonic() >= next_at:
                next_at += period
                if next_at < time.monotonic():  # fell behind (a long pause): do not try to catch up
                    next_at = time.monotonic() + period
