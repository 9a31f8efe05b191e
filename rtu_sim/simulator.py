"""The multi-RTU host: builds one outstation per configured RTU (of its protocol) and drives them from one loop thread.

The loop thread (every ``loop_period_s``) generates load-test changes, runs the load-curve tick every ``tick_s`` and
pumps each RTU's paced send queue. Scripted events (trip, set, FPI, link, block, fault) may come from any thread.
When the station has a network model, the points derived from its measurements are driven by the grid physics
(``rtu_sim.physics`` through ``rtu_sim.grid_driver``): a power flow of the model, rerun periodically and on switching.
"""

from __future__ import annotations

import importlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from models.config import Protocol, StationConfig
from models.points import DoubleState, PointDef, PointKind, Quality
from models.timebase import now_ms
from rtu_sim.errors import SimulatorError, UnknownPointError, UnknownRtuError
from rtu_sim.outstation import Outstation, RtuStats, SharedResources

if TYPE_CHECKING:
    from iccp.sim.server import TransmissionSimulator
    from rtu_sim.grid_driver import PhysicsDriver, PhysicsSettings
    from rtu_sim.physics import FaultKind, FaultResult, GridPhysics

log = logging.getLogger(__name__)

#: The outstation class of each protocol ("module:class"), imported only when a station uses that protocol.
OUTSTATION_CLASSES = {
    "iec104": "rtu_sim.outstation104:Outstation104",
    "dnp3": "rtu_sim.outstation_dnp3:OutstationDnp3",
    "modbus": "rtu_sim.outstation_modbus:OutstationModbus",
    "iec61850": "rtu_sim.outstation61850:Outstation61850",
}


def outstation_class(protocol: str) -> type[Outstation]:
    module, _, cls = OUTSTATION_CLASSES[protocol].partition(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


LOOP_PERIOD_S = 0.002  # sender loop: short enough that a 5k/s bucket is drained in small, even bursts


@dataclass(frozen=True, slots=True)
class SimStats:
    """A snapshot of the simulator's counters."""

    rtus: dict[str, RtuStats]
    commands_executed: int
    commands_refused: int
    changes_generated: int  # by the load generator
    load_changes_per_s: float  # configured load-generator rate, 0 when stopped

    @property
    def sent(self) -> dict[str, int]:
        """Reports transmitted per RTU (each counted once on a redundant pair)."""
        return {name: r.sent for name, r in self.rtus.items()}

    @property
    def total_sent(self) -> int:
        return sum(r.sent for r in self.rtus.values())

    @property
    def queued(self) -> int:
        return sum(r.queued for r in self.rtus.values())

    @property
    def dropped(self) -> int:
        return sum(r.dropped for r in self.rtus.values())


class RtuSimulator:
    """Simulated IEC 104 RTUs of a station configuration (all of them, or the ones named in ``rtus``)."""

    def __init__(self, config: StationConfig, rtus: Sequence[str] | None = None, *, seed: int = 0,
                 tick_s: float = 0.1, physics: PhysicsSettings | None | bool = True,
                 iccp_snapshot_interval_s: float = 60.0) -> None:
        """``physics``: settings of the grid physics, True for the defaults, False/None for none (the points bound to
        measurements then keep their static profile). ICCP remote centres (``[[iccp.remotes]]``) are hosted as
        transmission simulators (``iccp.sim``), writing their DR snapshot files every ``iccp_snapshot_interval_s``
        into the remote's ``dr_directory``."""
        if tick_s <= 0:
            raise SimulatorError(f"tick_s must be > 0, got {tick_s}")
        # Calculated sources have no field device.
        names = ([r.name for r in config.rtus if r.protocol is not Protocol.CALCULATED]
                 if rtus is None else list(rtus))
        if not names:
            raise SimulatorError(f"{config.source_path}: no RTU to simulate")
        known = {r.name for r in config.rtus}
        missing = [n for n in names if n not in known]
        if missing:
            raise UnknownRtuError(f"{config.source_path}: no RTU named {', '.join(map(repr, missing))} "
                                  f"(configured: {', '.join(sorted(known))})")
        calculated = [n for n in names if config.rtu(n).protocol is Protocol.CALCULATED]
        if calculated:
            raise SimulatorError(f"{config.source_path}: {', '.join(map(repr, calculated))} is calculated in the "
                                 "control centre, there is no field device to simulate")
        remote = list(dict.fromkeys(n for n in names if config.rtu(n).protocol is Protocol.ICCP))
        names = [n for n in names if config.rtu(n).protocol is not Protocol.ICCP]
        self.config = config
        self.seed = seed
        self.tick_s = tick_s
        self._rng = random.Random(f"rtu_sim:{seed}:load")
        self._outstations: dict[str, Outstation] = {}
        self._shared = SharedResources()  # one DNP3 manager, one asyncio loop... for all outstations
        try:
            for name in dict.fromkeys(names):
                rtu = config.rtu(name)
                idx = [i for i, p in enumerate(config.points) if p.source.rtu == name]
                self._outstations[name] = outstation_class(rtu.protocol.value)(
                    rtu, [config.points[i] for i in idx], [config.sim[i] for i in idx],
                    rng=random.Random(f"rtu_sim:{seed}:{name}"), shared=self._shared)
        except BaseException:
            for o in self._outstations.values():
                o.close()
            self._shared.close_all()
            raise
        self._point_rtu: dict[str, Outstation] = {}
        for o in self._outstations.values():
            for p in o.point_names:
                self._point_rtu[p] = o
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._stopped = False
        self._load_rate_per_s = 0.0
        self._load_status_share = 0.1
        self._load_carry = 0.0
        self._load_last_s = 0.0
        self._load_candidates: tuple[list[tuple[Outstation, str]], list[tuple[Outstation, str]]] = ([], [])
        self._changes_generated = 0
        self._driver: PhysicsDriver | None = None
        if physics:
            self._driver = self._build_physics(seed, physics)
        # Built, not started (no socket yet): with grid physics, the ties carry what the network draws at its sources.
        self._transmission: dict[str, TransmissionSimulator] = {}
        if remote:
            from iccp.sim.hosted import station_transmission_simulator  # only stations with ICCP remotes

            try:
                for name in remote:
                    self._transmission[name] = station_transmission_simulator(
                        config, name, seed=seed, snapshot_interval_s=iccp_snapshot_interval_s,
                        tie_flows=self._driver.physics.source_injections if self._driver is not None else None)
            except BaseException:
                self.stop()  # the outstations and the physics built above
                raise

    def _build_physics(self, seed: int, settings: PhysicsSettings | bool) -> PhysicsDriver | None:
        model = self.config.network
        if model is None or not self.config.bindings:
            return None
        bound = []
        for p in self.config.points:
            b = self.config.binding(p)
            if b is not None and p.name in self._point_rtu:
                bound.append((self._point_rtu[p.name], p, b))
        if not bound:
            return None
        from rtu_sim.grid_driver import PhysicsDriver, PhysicsSettings  # pandapower loads only when needed
        from rtu_sim.physics import GridPhysics

        if not isinstance(settings, PhysicsSettings):
            settings = PhysicsSettings()
        f_hz = settings.frequency_hz or self.config.frequency_hz
        driver = PhysicsDriver(GridPhysics(model, seed=seed, noise_pct=settings.noise_pct, f_hz=f_hz,
                                           flow=settings.flow), bound, settings)
        driver.initialise()
        return driver

    # ------------------------------------------------------------------------------------------- lifecycle

    @property
    def rtu_names(self) -> tuple[str, ...]:
        """The field RTUs hosted (the ICCP remote centres are in ``transmission_names``)."""
        return tuple(self._outstations)

    @property
    def transmission_names(self) -> tuple[str, ...]:
        return tuple(self._transmission)

    def transmission(self, remote: str) -> TransmissionSimulator:
        """The transmission simulator playing ICCP remote centre ``remote``."""
        try:
            return self._transmission[remote]
        except KeyError:
            raise UnknownRtuError(f"ICCP remote {remote!r} is not simulated here (hosted: "
                                  f"{', '.join(self._transmission) or 'none'})") from None

    def outstation(self, rtu: str) -> Outstation:
        try:
            return self._outstations[rtu]
        except KeyError:
            raise UnknownRtuError(f"RTU {rtu!r} is not simulated here (hosted: {', '.join(self._outstations)})"
                                  ) from None

    def start(self) -> None:
        """Start every outstation's server(s) and the loop thread; all are listening when this returns."""
        with self._lock:
            if self._stopped:
                raise SimulatorError("the simulator was stopped; build a new one")
            if self._started:
                return
            self._started = True
        try:
            for o in self._outstations.values():
                o.start()
            for t in self._transmission.values():
                t.start()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._run, name="rtu-sim-loop", daemon=True)
        self._thread.start()
        if self._driver is not None:
            self._driver.start()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop.set()
        if self._driver is not None:
            self._driver.stop()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            if self._thread.is_alive():
                log.error("rtu-sim loop thread did not stop within 10 s")
        for name, t in self._transmission.items():
            try:
                t.stop()
            except Exception:
                log.exception("ICCP remote %r: stopping its simulator failed", name)
        for o in self._outstations.values():
            try:
                o.close()
            except Exception:
                log.exception("RTU %r: stopping its servers failed", o.name)
        self._shared.close_all()

    def __enter__(self) -> RtuSimulator:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        next_tick_s = 0.0
        while not self._stop.is_set():
            mono = time.monotonic()
            try:
                self._generate_load(mono)
                if mono >= next_tick_s:
                    next_tick_s = mono + self.tick_s
                    epoch = time.time()
                    for o in self._outstations.values():
                        o.tick(epoch)
                for o in self._outstations.values():
                    o.pump(time.monotonic())
            except Exception:  # keep simulating; a broken point must not silence the whole station
                log.exception("rtu-sim loop iteration failed")
            self._stop.wait(LOOP_PERIOD_S)

    # ------------------------------------------------------------------------------------------- points

    def _rtu_of(self, point: str) -> Outstation:
        o = self._point_rtu.get(point)
        if o is None:
            try:
                p = self.config.point(point)
            except Exception:
                raise UnknownPointError(f"no point named {point!r} in {self.config.source_path}") from None
            raise UnknownPointError(f"point {point!r} is on RTU {p.source.rtu!r}, which this simulator does not "
                                    f"host") from None
        return o

    def point(self, point: str) -> PointDef:
        return self._rtu_of(point).point(point)

    def value(self, point: str) -> float:
        """The point's current engineering value (possibly not yet transmitted if the queue is paced)."""
        return self._rtu_of(point).value(point)

    def quality(self, point: str) -> Quality:
        return self._rtu_of(point).quality(point)

    def set_value(self, point: str, value: float, *, quality: Quality = Quality.GOOD) -> None:
        """Set a point's value and quality and report it spontaneously, time-tagged now.

        An analog or counter set this way is held there (the load curve stops driving it) until ``release``.
        """
        self._rtu_of(point).set_value(point, value, Quality(quality))
        self._follow_switch(point, value)

    def release(self, point: str) -> None:
        """Let the load curve drive a point again after ``set_value``."""
        self._rtu_of(point).release(point)

    def trip(self, breaker_point: str) -> tuple[str, ...]:
        """Protection trip: breaker OFF plus its 'PROT' single points on the same element to 1, same time tag.

        Returns the protection points that were set.
        """
        protection = self._rtu_of(breaker_point).trip(breaker_point)
        self._follow_switch(breaker_point, float(DoubleState.OFF))
        return protection

    def _follow_switch(self, point: str, value: float) -> None:
        """A bound Pos point was set from outside the physics: the physics follows the switch."""
        from models.measurement_points import Quantity

        b = self._driver.binding(point) if self._driver is not None else None
        if b is not None and b.quantity is Quantity.SWITCH_POSITION and value in (DoubleState.ON, DoubleState.OFF):
            assert self._driver is not None
            self._driver.switch_changed(point, value == DoubleState.ON)

    # ------------------------------------------------------------------------------------------- grid physics

    @property
    def physics(self) -> GridPhysics | None:
        """The grid physics driving the measurement points, None when the station has no network model."""
        return self._driver.physics if self._driver is not None else None

    def _require_driver(self) -> PhysicsDriver:
        if self._driver is None:
            raise SimulatorError(f"{self.config.source_path}: no grid physics (the station has no [network] model "
                                 f"or no RTU hosted here has equipment)")
        return self._driver

    def place_fault(self, line: str, kind: FaultKind | str = "three_phase") -> FaultResult:
        """Fault a line (name or mRID): the upstream breaker/recloser trips, FPIs on the path pick up, the flow
        is rerun (downstream dead) and all of it is reported spontaneously."""
        from rtu_sim.physics import FaultKind, PhysicsError

        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            raise PhysicsError(f"unknown fault kind {kind!r} (expected: "
                               f"{', '.join(k.value for k in FaultKind)})") from None
        return self._require_driver().place_fault(line, fault_kind)

    def set_tap(self, tap_changer: str, step: float) -> bool:
        """Move a tap changer (name or mRID) in the physics, as a local tap-up/down would; the tap position and
        set-point points follow at the re-solve. False when it is already there; PhysicsError when the tap changer
        is unknown or the step is not a whole step in its range."""
        driver = self._require_driver()
        moved = driver.physics.set_tap(tap_changer, step)
        driver.request_solve()
        return moved

    def clear_fault(self, line: str | None = None) -> tuple[str, ...]:
        """Remove a line's fault (None: all); returns the lines cleared. Tripped devices stay open."""
        return self._require_driver().clear_fault(line)

    def reset_fpis(self, switch: str | None = None) -> tuple[str, ...]:
        return self._require_driver().reset_fpis(switch)

    def solve_now(self) -> None:
        """Rerun the flow at once (asynchronously, on the physics thread)."""
        self._require_driver().request_solve()

    def fpi(self, point: str, picked_up: bool = True) -> None:
        self._rtu_of(point).fpi(point, picked_up)

    def block(self, point: str, blocked: bool = True) -> None:
        """Refuse (negative confirmation) every command to this point's control until unblocked."""
        self._rtu_of(point).block(point, blocked)

    # ------------------------------------------------------------------------------------------- links

    def link_down(self, rtu: str, address: str | None = None) -> None:
        """Stop the RTU's server on ``address`` (None: all of its addresses); connected masters lose TCP."""
        self.outstation(rtu).link_down(address)

    def link_up(self, rtu: str, address: str | None = None) -> None:
        self.outstation(rtu).link_up(address)

    # ------------------------------------------------------------------------------------------- load

    def start_change_load(self, changes_per_s: float, *, status_share: float = 0.1) -> None:
        """Change randomly chosen points at ``changes_per_s`` in total over all hosted RTUs.

        A share ``status_share`` of the changes flips a status point, the rest give an analog a fresh value; each
        is reported spontaneously with the moment of the change as time tag, paced per RTU like everything else.
        """
        if changes_per_s <= 0:
            raise SimulatorError(f"changes_per_s must be > 0, got {changes_per_s}")
        if not 0.0 <= status_share <= 1.0:
            raise SimulatorError(f"status_share must be within 0..1, got {status_share}")
        status = [(o, n) for o in self._outstations.values() for n in o.load_candidates(True)]
        analog = [(o, n) for o in self._outstations.values() for n in o.load_candidates(False)]
        if not status and not analog:
            raise SimulatorError("no status or analog point to change on the hosted RTUs")
        with self._lock:
            self._load_candidates = (status, analog)
            self._load_status_share = status_share
            self._load_carry = 0.0
            self._load_last_s = time.monotonic()
            self._load_rate_per_s = float(changes_per_s)

    def stop_change_load(self) -> None:
        with self._lock:
            self._load_rate_per_s = 0.0

    def _generate_load(self, mono: float) -> None:
        with self._lock:
            rate = self._load_rate_per_s
            if rate <= 0:
                return
            due = self._load_carry + rate * (mono - self._load_last_s)
            self._load_last_s = mono
            n = int(due)
            self._load_carry = due - n
            status, analog = self._load_candidates
            share = self._load_status_share
        if n <= 0:
            return
        stamp = now_ms()
        for _ in range(n):
            pick_status = (self._rng.random() < share and bool(status)) or not analog
            o, name = self._rng.choice(status if pick_status else analog)
            o.random_change(name, stamp)
        with self._lock:
            self._changes_generated += n

    # ------------------------------------------------------------------------------------------- stats

    def pending(self) -> int:
        """Reports waiting in the paced send queues."""
        return sum(o.pending() for o in self._outstations.values())

    def wait_sent(self, timeout_s: float) -> bool:
        """Wait until every send queue is empty; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stats(self) -> SimStats:
        rtus = {name: o.stats() for name, o in self._outstations.items()}
        with self._lock:
            generated, rate = self._changes_generated, self._load_rate_per_s
        return SimStats(
            rtus=rtus,
            commands_executed=sum(r.commands_executed for r in rtus.values()),
            commands_refused=sum(r.commands_refused for r in rtus.values()),
            changes_generated=generated,
            load_changes_per_s=rate,
        )

    def points_of_kind(self, kind: PointKind) -> tuple[str, ...]:
        """Names of hosted points of one kind, in configuration order."""
        return tuple(p.name for p in self.config.points if p.kind is kind and p.name in self._point_rtu)
