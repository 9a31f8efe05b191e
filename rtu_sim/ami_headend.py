"""AMI head-end simulator: every customer's meter follows the energisation of its load's bus and reports power off
(last gasp) and power on as IEC 61968-9 ``EndDeviceEvents`` messages (``models.end_device_events``), batched and
handed to a sink, the way a head-end forwards meter events to an OMS. It also answers instantaneous meter reads
(the OMS "pings" meters to confirm an outage).

Meters: one per customer with a load (meter number = consumer number); for models without usage points one per
unit of each load's ``customer_count``, named ``<load name>-<k>`` (k = 1..customer_count).

Behaviour (delays in simulated seconds, multiplied by ``AmiOptions.time_scale`` so tests run fast):
- Loss of supply: the meter sends a last-gasp power-off event ``last_gasp_delay_s`` (+/- ``jitter_s``) later, stamped
  with the time of the loss. Supply returning before that cancels it (momentary interruptions are not reported,
  which is why meters wait). A seeded ``never_report_share`` of meters never reports (dead radio, no battery);
  ``late_share`` of events come ``late_extra_s`` late (mesh congestion); ``duplicate_share`` are delivered twice
  (same mRID, ``duplicate_delay_s`` apart; heard by two collectors).
- Restoration: a power-on event with the meter's power-on count after ``restore_delay_s`` (+/- jitter).
- Each poll (``poll_s``, real seconds) reads the supply, schedules events and sends the due ones in messages of at most
  ``max_batch`` events to ``sink(message_dict)``. A sink that raises is logged and counted; the batch is dropped.

Supply: a ``GridPhysics`` (bus energised when its solved voltage is non-zero: by default the latest solve of whoever
drives the physics, ``PhysicsRead.SOLVE`` solves on every poll) or a callable returning the energised bus indexes
(a collection of ints or a boolean mask per bus).
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from models.end_device_events import EndDeviceEvent, EndDeviceEventCode, EndDeviceEvents, format_end_device_events
from models.network import NetworkModel
from rtu_sim.errors import SimulatorError
from rtu_sim.physics import FlowSnapshot, GridPhysics

__all__ = ["AmiError", "AmiHeadEnd", "AmiOptions", "AmiStats", "MeterReading", "PhysicsRead", "meter_buses",
           "options_from_mapping"]

log = logging.getLogger(__name__)

SupplyFn = Callable[[], "Collection[int] | np.ndarray"]
Sink = Callable[[dict[str, Any]], None]


class AmiError(SimulatorError):
    """Bad head-end options or an unknown meter; the text names the option or meter."""


class PhysicsRead(StrEnum):
    LAST = "last"  # the physics driver's latest solve (solve once if there is none yet)
    SOLVE = "solve"  # solve on every poll and read


@dataclass(frozen=True, slots=True)
class AmiOptions:
    time_scale: float = 1.0  # multiplies every simulated delay (0.01: a 30 s last gasp comes after 0.3 s)
    last_gasp_delay_s: float = 30.0
    restore_delay_s: float = 10.0
    jitter_s: float = 10.0  # uniform +/- on each delay (never below 0)
    never_report_share: float = 0.1
    late_share: float = 0.05
    late_extra_s: float = 300.0
    duplicate_share: float = 0.03
    duplicate_delay_s: float = 5.0
    poll_s: float = 0.5  # real seconds between supply reads
    max_batch: int = 500
    source: str = "AMI-HE"
    physics_read: PhysicsRead = PhysicsRead.LAST

    def __post_init__(self) -> None:
        for name in ("time_scale", "poll_s"):
            if not getattr(self, name) > 0:
                raise AmiError(f"AmiOptions.{name} must be > 0, got {getattr(self, name)}")
        for name in ("last_gasp_delay_s", "restore_delay_s", "jitter_s", "late_extra_s", "duplicate_delay_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise AmiError(f"AmiOptions.{name} must be a finite number >= 0, got {value}")
        for name in ("never_report_share", "late_share", "duplicate_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise AmiError(f"AmiOptions.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_batch < 1:
            raise AmiError(f"AmiOptions.max_batch must be >= 1, got {self.max_batch}")
        if not self.source:
            raise AmiError("AmiOptions.source must not be empty")


@dataclass(frozen=True, slots=True)
class MeterReading:
    """Answer to an instantaneous read: ``voltage_v`` is the phase-neutral voltage of the meter's bus;
    ``power_on_count`` the meter's restorations seen since the head-end started."""

    meter: str
    energised: bool
    voltage_v: float
    time_ms: int
    power_on_count: int = 0


@dataclass(frozen=True, slots=True)
class AmiStats:
    meters: int
    silent_meters: int
    polls: int
    messages: int
    power_off_sent: int
    power_on_sent: int
    suppressed: int  # last gasps cancelled because supply came back first
    sink_errors: int
    supply_errors: int


def meter_buses(model: NetworkModel) -> dict[str, int]:
    """Meter number -> bus index (see the module docstring for the naming)."""
    if model.customers:
        return {c.consumer_number: c.bus for c in model.customers if c.bus is not None}
    return {f"{ld.name}-{k}": ld.bus for ld in model.loads for k in range(1, ld.customer_count + 1)}


class AmiHeadEnd:
    """The simulated head-end of one network model; ``start``/``stop`` run its poll thread."""

    def __init__(self, model: NetworkModel, supply: GridPhysics | SupplyFn, sink: Sink, *, seed: int = 0,
                 options: AmiOptions = AmiOptions(), clock: Callable[[], float] = time.time) -> None:
        self.model = model
        self.options = options
        self._supply = supply
        self._sink = sink
        self._clock = clock
        buses = meter_buses(model)
        if not buses:
            raise AmiError(f"network {model.name!r} has no customers or loads with customer_count: no meters")
        self.meters: tuple[str, ...] = tuple(buses)
        self._index = {m: i for i, m in enumerate(self.meters)}
        self._bus = np.array([buses[m] for m in self.meters], dtype=np.int64)
        profile = random.Random(f"ami:{seed}:profile")
        self._silent = np.array([profile.random() < options.never_report_share for _ in self.meters], dtype=bool)
        self._rng = random.Random(f"ami:{seed}:events")
        self._nominal_ln_v = np.array([b.nominal_v / math.sqrt(3) if math.isfinite(b.nominal_v) else 0.0
                                       for b in model.buses])
        n = len(self.meters)
        self._live: np.ndarray | None = None  # per meter, from the last poll; None before the first
        self._off_count = np.zeros(n, dtype=np.int64)
        self._on_count = np.zeros(n, dtype=np.int64)
        self._generation = np.zeros(n, dtype=np.int64)  # bumped on each supply change: cancels queued events
        self._queue: list[tuple[float, int, int, int, EndDeviceEvent]] = []  # (due, seq, meter, generation, event)
        self._seq = 0
        self._messages = 0
        self._counts = {"polls": 0, "off": 0, "on": 0, "suppressed": 0, "sink_errors": 0, "supply_errors": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------- public

    @property
    def silent_meters(self) -> frozenset[str]:
        """Meters that never report (drawn from the seed)."""
        return frozenset(m for m, s in zip(self.meters, self._silent, strict=True) if s)

    def start(self) -> None:
        if self._thread is not None:
            raise AmiError("AMI head-end already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"ami-headend-{self.options.source}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the poll thread and join it (queued events are dropped); AmiError if it does not end in time."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)
        if thread.is_alive():
            raise AmiError(f"AMI head-end thread did not stop within {timeout_s} s")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poll(self) -> int:
        """One poll (what the thread does each ``poll_s``): read the supply, queue and send due events; returns the
        number of events sent."""
        with self._lock:
            now = self._clock()
            self._counts["polls"] += 1
            try:
                live = self._energised_buses()[self._bus]
            except Exception:  # noqa: BLE001 - a failing supply must not kill the head-end; counted and logged
                self._counts["supply_errors"] += 1
                log.exception("AMI head-end %s: reading the supply failed", self.options.source)
                live = None
            if live is not None:
                self._track(live, now)
            due = self._due(now)
        return self._send(due, now)

    def read(self, meter: str) -> MeterReading:
        """Instantaneous read of one meter: energised and bus voltage now (a dead meter answers 0 V, not energised)."""
        index = self._index.get(meter)
        if index is None:
            raise AmiError(f"no meter {meter!r} in network {self.model.name!r}")
        bus = int(self._bus[index])
        now_ms = int(round(self._clock() * 1000))
        count = int(self._on_count[index])
        if isinstance(self._supply, GridPhysics):
            snap = self._snapshot()
            volts = float(snap.bus_v_ln_kv[bus]) * 1000.0
            return MeterReading(meter, volts > 0, volts, now_ms, count)
        live = bool(self._mask(self._supply())[bus])
        return MeterReading(meter, live, float(self._nominal_ln_v[bus]) if live else 0.0, now_ms, count)

    def stats(self) -> AmiStats:
        with self._lock:
            c = self._counts
            return AmiStats(len(self.meters), int(self._silent.sum()), c["polls"], self._messages, c["off"], c["on"],
                            c["suppressed"], c["sink_errors"], c["supply_errors"])

    # ------------------------------------------------------------------------------------------- internals

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.options.poll_s)

    def _snapshot(self) -> FlowSnapshot:
        physics = self._supply
        assert isinstance(physics, GridPhysics)
        snap = physics.last
        if snap is None or self.options.physics_read is PhysicsRead.SOLVE:
            snap = physics.solve()
        return snap

    def _energised_buses(self) -> np.ndarray:
        if isinstance(self._supply, GridPhysics):
            return np.asarray(self._snapshot().bus_v_ln_kv) > 0
        return self._mask(self._supply())

    def _mask(self, value: Collection[int] | np.ndarray) -> np.ndarray:
        n = len(self.model.buses)
        if isinstance(value, np.ndarray) and value.dtype == bool:
            if value.shape != (n,):
                raise AmiError(f"supply mask has shape {value.shape}, expected ({n},) for network {self.model.name!r}")
            return value
        mask = np.zeros(n, dtype=bool)
        mask[np.fromiter((int(b) for b in value), dtype=np.int64)] = True
        return mask

    def _delay(self, base_s: float) -> float:
        o = self.options
        jitter = self._rng.uniform(-o.jitter_s, o.jitter_s) if o.jitter_s else 0.0
        return max(0.0, base_s + jitter) * o.time_scale

    def _track(self, live: np.ndarray, now: float) -> None:
        previous, self._live = self._live, live.copy()
        if previous is None:  # first poll: the present state is the baseline, nothing to report
            return
        o = self.options
        now_ms = int(round(now * 1000))
        for i in np.flatnonzero(previous != live):
            i = int(i)
            self._generation[i] += 1
            went_off = not live[i]
            if went_off:
                self._off_count[i] += 1
            else:
                self._on_count[i] += 1
            if self._silent[i]:
                continue
            code = EndDeviceEventCode.POWER_OFF if went_off else EndDeviceEventCode.POWER_ON
            count = int(self._off_count[i] if went_off else self._on_count[i])
            self._seq += 1
            event = EndDeviceEvent(f"{o.source}-{self._seq}", now_ms, code, self.meters[i], count,
                                   "last gasp" if went_off else "power restored")
            due = now + self._delay(o.last_gasp_delay_s if went_off else o.restore_delay_s)
            if self._rng.random() < o.late_share:
                due += o.late_extra_s * o.time_scale
            self._push(due, i, event)
            if self._rng.random() < o.duplicate_share:
                self._push(due + o.duplicate_delay_s * o.time_scale, i, event)

    def _push(self, due: float, meter: int, event: EndDeviceEvent) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (due, self._seq, meter, int(self._generation[meter]), event))

    def _due(self, now: float) -> list[EndDeviceEvent]:
        due = []
        while self._queue and self._queue[0][0] <= now:
            _, _, meter, generation, event = heapq.heappop(self._queue)
            if generation != self._generation[meter]:
                # Supply changed again before the meter reported: a cancelled last gasp is a suppressed momentary.
                if event.code is EndDeviceEventCode.POWER_OFF:
                    self._counts["suppressed"] += 1
                continue
            due.append(event)
        return due

    def _send(self, events: list[EndDeviceEvent], now: float) -> int:
        sent = 0
        size = self.options.max_batch
        for start in range(0, len(events), size):
            batch = tuple(events[start:start + size])
            with self._lock:
                self._messages += 1
                message_id = f"{self.options.source}-M{self._messages}"
            message = EndDeviceEvents(int(round(now * 1000)), self.options.source, batch, message_id)
            try:
                self._sink(format_end_device_events(message))
            except Exception:  # noqa: BLE001 - the sink is the caller's code; the head-end keeps running
                with self._lock:
                    self._counts["sink_errors"] += 1
                log.exception("AMI head-end %s: sink failed on message %s", self.options.source, message_id)
                continue
            sent += len(batch)
            with self._lock:
                self._counts["off"] += sum(1 for e in batch if e.code is EndDeviceEventCode.POWER_OFF)
                self._counts["on"] += sum(1 for e in batch if e.code is EndDeviceEventCode.POWER_ON)
        return sent


def options_from_mapping(values: Mapping[str, Any]) -> AmiOptions:
    """AmiOptions from a config table (unknown keys are errors naming the key)."""
    known = set(AmiOptions.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise AmiError(f"unknown AMI option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    args = dict(values)
    if "physics_read" in args:
        try:
            args["physics_read"] = PhysicsRead(args["physics_read"])
        except ValueError:
            raise AmiError(f"AMI option physics_read: {args['physics_read']!r} is not one of "
                           f"{', '.join(PhysicsRead)}") from None
    return AmiOptions(**args)
