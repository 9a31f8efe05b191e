"""Real-time three-phase state estimation on live RTDB data (issue #5).

:class:`RealtimeEstimator` runs every ``period_s`` (default 10 s) and on every topology change (a TopologyService
subscription), from the RTDB snapshot of every bound VOLTAGE_KV / P_KW / Q_KVAR / CURRENT_A point
(:mod:`dms.se.live_measurements`), pseudo loads scaled to the feeder meters and virtual zero injections
(:mod:`dms.se.pseudo`), on the estimator network of the live topology and telemetered tap positions
(:mod:`dms.se.phase_network`, cached per switch/tap configuration). Observability first: unobservable buses are
reported and left out, never filled in. De-energised parts are not estimated.

Bad data (chi-square + largest normalised residual removal): each removed telemetered measurement is flagged
QUESTIONABLE in the RTDB through the one update path (an UpdateBatch from adapter ``dms:se`` with the same value and
time tag, quality | QUESTIONABLE, cause SUPERVISION) and raised as a system alarm ``se.bad_data.<point>`` naming the
point and its normalised residual. When a flagged point is used again and not removed, the alarm is cleared and, if
the RTDB still carries the flag, QUESTIONABLE is taken off the same way. The estimator keeps using the points it
flagged itself (so it sees them come good); QUESTIONABLE set by anyone else excludes a point.

Results: the latest :class:`~dms.se.results.EstimateResult` (``latest()``), published to subscribers (bounded
queues: on overflow the backlog is dropped for the newest result) and ``load_estimates()`` per model load.

Calculated points (a station with ``[calculated] state_estimate = true``, :mod:`models.calculated_points`): after
every estimate one UpdateBatch from adapter ``dms:se`` (cause PERIODIC, source time = the snapshot's time) writes
the voltages, their standard deviations, the flows at the measured terminals and the losses. Quality: GOOD for an
estimated value; GOOD 0 for a de-energised bus, for an element on a de-energised bus and for an open switch (the
live topology proves them dead: that is a fact, not a missing estimate); INVALID, keeping the last value, for an
unobservable bus, a flow touching one, a standard deviation not computed, and every point when the estimate fails.
The source ``DMS-SE`` is linked up on ``start()`` and down on ``stop()``, so its points read COMM_LOST while no
estimator runs and the alarm reads "calculation stopped".
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from dms.network_state import NetworkState
from dms.se.errors import SeError
from dms.se.live_measurements import live_measurements
from dms.se.model_estimate import EstimatorOptions, estimate_with_pseudo
from dms.se.phase_network import ModelNetwork, build_model_network
from dms.se.pseudo import profile_multiplier
from dms.se.results import BadMeasurement, EstimateResult
from models.calculated_points import SE_SOURCE, CalculatedQuantity
from models.config import StationConfig
from models.measurement_points import Quantity
from models.points import Priority, Quality
from models.timebase import now_ms
from models.updates import Cause, LinkEvent, UpdateBatch, new_update_rows
from scada.alarms import AlarmManager
from scada.bounded_queue import BoundedQueue
from scada.rtdb import Rtdb
from scada.topology_service import TopologyService

__all__ = ["ALARM_PREFIX", "EstimateSubscription", "RealtimeEstimator", "RealtimeOptions"]

log = logging.getLogger(__name__)

ADAPTER = "dms:se"
ALARM_PREFIX = "se.bad_data."
_MODEL_CACHE = 8


@dataclass(frozen=True, slots=True)
class RealtimeOptions:
    period_s: float = 10.0
    estimator: EstimatorOptions = field(default_factory=EstimatorOptions)
    # Voltage standard deviations cost a gain-matrix inverse diagonal (~0.5 s on the sample network) and change only
    # with the measurement configuration: recomputed at most this often per topology, reused in between.
    std_dev_period_s: float = 60.0
    alarm_priority: Priority = Priority.MEDIUM
    flag_bad_data: bool = True  # mark removed measurements QUESTIONABLE in the RTDB and raise alarms

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"real-time estimator: period_s must be > 0, got {self.period_s}")


class EstimateSubscription(BoundedQueue[EstimateResult]):
    """A bounded queue of estimates; on overflow the backlog is replaced by the newest result."""

    def __init__(self, name: str, max_pending: int) -> None:
        super().__init__(name, max_pending)
        self.drops = 0

    def _overflow(self, backlog: list[EstimateResult], item: EstimateResult) -> list[EstimateResult]:
        self.drops += len(backlog)
        return [item]


class RealtimeEstimator:
    """Build with what a ControlCenter has: ``RealtimeEstimator(center.config, center.rtdb, center.topology,
    center.alarms)`` (or :meth:`for_center`), then ``start()`` / ``stop()``."""

    def __init__(self, config: StationConfig, rtdb: Rtdb, topology: TopologyService, alarms: AlarmManager, *,
                 options: RealtimeOptions | None = None) -> None:
        if config.network is None:
            raise SeError(f"{config.source_path}: the station has no network model to estimate")
        self.config = config
        self.rtdb = rtdb
        self.topology = topology
        self.alarms = alarms
        self.options = options or RealtimeOptions()
        self._points = np.array([p.id for p in config.points if (b := config.binding(p)) is not None
                                 and b.quantity in (Quantity.VOLTAGE_KV, Quantity.P_KW, Quantity.Q_KVAR,
                                                    Quantity.CURRENT_A)], dtype=np.int64)
        self._tap_points = [(p.id, b.tap_changer_mrid) for p in config.points
                            if (b := config.binding(p)) is not None and b.quantity is Quantity.TAP_POSITION
                            and b.tap_changer_mrid]
        self._point_id = {p.name: p.id for p in config.points}
        self._calc = tuple(c for c in config.calculated if config.points[c.point].source.rtu == SE_SOURCE)
        self._calc_ids = np.array([c.point for c in self._calc], dtype=np.int64)
        self._lock = threading.Lock()  # one estimate at a time
        self._state_lock = threading.Lock()
        self._latest: EstimateResult | None = None
        self._last_error = ""
        self._x0: dict[bytes, np.ndarray] = {}
        self._std: dict[bytes, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}
        self._models: dict[bytes, ModelNetwork] = {}
        self._flagged: dict[int, float] = {}  # point id -> normalised residual, flagged by us
        self._subs: list[EstimateSubscription] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.runs = 0

    @classmethod
    def for_center(cls, center: object, *, options: RealtimeOptions | None = None) -> RealtimeEstimator:
        """From a ``scada.server.ControlCenter`` (its config, rtdb, topology and alarms)."""
        topology = getattr(center, "topology", None)
        if topology is None:
            raise SeError("the control centre has no topology service (no network model)")
        return cls(center.config, center.rtdb, topology, center.alarms, options=options)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        _, sub = self.topology.subscribe("dms:se")
        self._topo_sub = sub
        if self._calc:
            self.rtdb.ingest(LinkEvent(ADAPTER, SE_SOURCE, True, address="dms:se", time_ms=now_ms()))
        self._thread = threading.Thread(target=self._run, name="dms-se", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self.topology.unsubscribe(self._topo_sub)
        self._thread.join(timeout=30)
        self._thread = None
        if self._calc:  # its points turn COMM_LOST: nothing calculates them any more
            self.rtdb.ingest(LinkEvent(ADAPTER, SE_SOURCE, False, reason="state estimator stopped", time_ms=now_ms()))
        with self._state_lock:
            for s in self._subs:
                s.close()
            self._subs.clear()

    def _run(self) -> None:
        trigger = "periodic"
        while not self._stop.is_set():
            try:
                self.run_now(trigger)
            except Exception:  # the service must survive one bad snapshot
                log.exception("state estimation failed")
            due = time.monotonic() + self.options.period_s
            trigger = "periodic"
            while not self._stop.is_set():
                left = due - time.monotonic()
                if left <= 0:
                    break
                update = self._topo_sub.get(timeout_s=min(left, 0.5))
                if update is not None and (update.switches or update.full):
                    while self._topo_sub.get(timeout_s=0.0) is not None:  # coalesce a burst of changes
                        pass
                    trigger = "topology"
                    break

    # ------------------------------------------------------------------------------------------ queries
    def latest(self) -> EstimateResult | None:
        return self._latest

    def load_estimates(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(p_w, q_var) per model load from the latest converged estimate, None before there is one."""
        r = self._latest
        if r is None or not r.converged:
            return None
        return r.load_p_w.copy(), r.load_q_var.copy()

    def bad_data(self) -> tuple[BadMeasurement, ...]:
        r = self._latest
        return () if r is None else r.bad_data

    def flagged_points(self) -> dict[str, float]:
        """Points this estimator has flagged QUESTIONABLE, with their normalised residual."""
        with self._state_lock:
            return {self.config.points[i].name: rn for i, rn in self._flagged.items()}

    def subscribe(self, name: str, *, max_pending: int = 16) -> EstimateSubscription:
        sub = EstimateSubscription(name, max_pending)
        with self._state_lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: EstimateSubscription) -> None:
        sub.close()
        with self._state_lock:
            if sub in self._subs:
                self._subs.remove(sub)

    # ------------------------------------------------------------------------------------------ estimation
    def _live_state(self) -> NetworkState:
        snap = self.topology.snapshot()
        model = snap.model
        state = NetworkState.from_model(model, label="real time", frequency_hz=self.config.frequency_hz)
        state = state.with_switch_array(np.asarray(snap.switch_closed, dtype=bool))
        if self._tap_points:
            rows = self.rtdb.snapshot([pid for pid, _ in self._tap_points])
            by_mrid = {tc.mrid: tc for tc in model.tap_changers}
            steps: dict[str, float] = {}
            for (_pid, mrid), row in zip(self._tap_points, rows, strict=True):
                tc = by_mrid.get(mrid)
                if tc is None or int(row["quality"]) & (Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL):
                    continue
                step = float(row["value"])
                if np.isfinite(step) and tc.low_step <= step <= tc.high_step:
                    steps[tc.name] = step
            if steps:
                state = state.with_taps(steps)
        return state

    def _model_network(self, state: NetworkState) -> tuple[bytes, ModelNetwork]:
        key = state.switch_closed.tobytes() + state.tap_step.tobytes()
        mn = self._models.get(key)
        if mn is None:
            mn = build_model_network(state, s_base_va=self.options.estimator.s_base_va)
            if len(self._models) >= _MODEL_CACHE:
                self._models.pop(next(iter(self._models)))
            self._models[key] = mn
        return key, mn

    def run_now(self, trigger: str = "request") -> EstimateResult:
        """Estimate from the live data now (serialised with the periodic runs); publishes and returns the result."""
        with self._lock:
            stamp = now_ms()
            state = self._live_state()
            key, mn = self._model_network(state)
            snap = self.rtdb.snapshot(self._points)
            opts = self.options.estimator
            with self._state_lock:
                own = set(self._flagged)
            base = profile_multiplier(opts.pseudo.profile, stamp / 1e3)
            cached = self._std.get(key)
            fresh_sd = opts.std_dev and (cached is None
                                         or time.monotonic() - cached[0] >= self.options.std_dev_period_s)
            if not fresh_sd:
                opts = dataclasses.replace(opts, std_dev=False)
            result, x = estimate_with_pseudo(
                mn, lambda b: live_measurements(b, self.config, snap, accuracy=opts.accuracy, own_flags=own),
                state.load_p_w * base, state.load_q_var * base, options=opts, x0=self._x0.get(key),
                trigger=trigger, time_ms=stamp)
            if result.converged and self.options.estimator.std_dev:
                result = self._with_std_devs(key, result, fresh_sd)
            if x is not None:
                self._x0[key] = x
            else:
                self._x0.pop(key, None)
            if self.options.flag_bad_data and result.converged:
                left_out = {p for p, _ in result.excluded}
                used = {self.config.points[int(i)].name for i in self._points} - left_out
                self._flag(result, snap, used)
            if len(self._calc):
                self.rtdb.ingest(UpdateBatch(ADAPTER, self._calculated_rows(result, state), now_ms()))
            self._latest = result
            self.runs += 1
            with self._state_lock:
                subs = list(self._subs)
            for s in subs:
                s.offer(result)
            if not result.converged and result.error != self._last_error:
                log.warning("%s (logged again only when the reason changes)", result.summary())
            self._last_error = "" if result.converged else result.error
            return result

    def _with_std_devs(self, key: bytes, result: EstimateResult, fresh: bool) -> EstimateResult:
        """Cache fresh standard deviations, or fill the cached ones into a result computed without them."""
        nodes = result.nodes
        if fresh:
            self._std[key] = (time.monotonic(), nodes["node"].copy(), nodes["v_sigma_pu"].copy(),
                              nodes["angle_sigma_deg"].copy())
            return result
        cached = self._std.get(key)
        if cached is None or len(cached[1]) != len(nodes) or not (cached[1] == nodes["node"]).all():
            return result
        filled = nodes.copy()
        observable = filled["observable"]
        filled["v_sigma_pu"] = np.where(observable, cached[2], np.nan)
        filled["angle_sigma_deg"] = np.where(observable, cached[3], np.nan)
        return dataclasses.replace(result, nodes=filled)

    def _flag(self, result: EstimateResult, snap: np.ndarray, used: set[str]) -> None:
        """QUESTIONABLE + alarm for newly removed telemetry; clear both for flagged points that came good."""
        rows = {int(r["point"]): r for r in snap}
        bad = {self._point_id[b.measurement]: b for b in result.bad_data if b.measurement in self._point_id}
        updates: list[tuple[int, float, int, int]] = []
        with self._state_lock:
            for pid, b in bad.items():
                name = self.config.points[pid].name
                self.alarms.raise_system(
                    ALARM_PREFIX + name, f"state estimation: {name} suspected bad data (normalised residual "
                    f"{b.normalized_residual:.1f}, reads {b.value:.4g}, estimate {b.estimate:.4g})",
                    self.options.alarm_priority)
                row = rows[pid]
                if not int(row["quality"]) & Quality.QUESTIONABLE:
                    updates.append((pid, float(row["value"]), int(row["quality"]) | Quality.QUESTIONABLE,
                                    int(row["source_time_ms"])))
                self._flagged[pid] = b.normalized_residual
            for pid in list(self._flagged):
                name = self.config.points[pid].name
                if pid in bad or name not in used:
                    continue  # still bad, or not used this time (stale...): no verdict
                del self._flagged[pid]
                self.alarms.clear_system(ALARM_PREFIX + name)
                row = rows.get(pid)
                if row is not None and int(row["quality"]) & Quality.QUESTIONABLE:
                    updates.append((pid, float(row["value"]), int(row["quality"]) & ~int(Quality.QUESTIONABLE),
                                    int(row["source_time_ms"])))
        if updates:
            batch = new_update_rows(len(updates))
            for i, (pid, value, quality, t_ms) in enumerate(updates):
                batch[i] = (pid, value, quality, t_ms, Cause.SUPERVISION)
            self.rtdb.ingest(UpdateBatch(ADAPTER, batch, now_ms()))

    def _calculated_rows(self, result: EstimateResult, state: NetworkState) -> np.ndarray:
        """The calculated points' rows for one estimate (quality rules in the module docstring)."""
        n = len(self._calc)
        rows = new_update_rows(n)
        rows["point"] = self._calc_ids
        rows["value"] = self.rtdb.snapshot(self._calc_ids)["value"]  # INVALID rows keep the last value
        rows["quality"] = int(Quality.INVALID)
        rows["source_time_ms"] = result.time_ms
        rows["cause"] = Cause.PERIODIC
        if not result.converged:
            return rows
        nodes, br = result.nodes, result.branches
        node_at = {(str(b), str(ph)): i for i, (b, ph) in enumerate(zip(nodes["bus"], nodes["phase"], strict=True))}
        at_bus = {(str(e), str(b), str(ph)): i
                  for i, (e, b, ph) in enumerate(zip(br["element"], br["bus"], br["phase"], strict=True))}
        at_terminal = {(str(e), int(t), str(ph)): i
                       for i, (e, t, ph) in enumerate(zip(br["element"], br["terminal"], br["phase"], strict=True))}
        dead = set(result.deenergised_buses)
        model = state.model
        open_switches = {sw.name for sw, closed in zip(model.switches, state.switch_closed, strict=True) if not closed}
        value, good = rows["value"], np.zeros(n, dtype=bool)
        for k, c in enumerate(self._calc):
            q = c.quantity
            if q is CalculatedQuantity.LOSSES_KW:
                value[k], good[k] = result.loss_p_w / 1e3, np.isfinite(result.loss_p_w)
                continue
            if q in (CalculatedQuantity.V_KV, CalculatedQuantity.V_SD_KV):
                i = node_at.get((c.bus, c.phase))
                if i is None or not nodes["observable"][i]:
                    if c.bus in dead:
                        value[k], good[k] = 0.0, True
                    continue
                v_kv = float(nodes["v_kv"][i])
                x = v_kv if q is CalculatedQuantity.V_KV else float(nodes["v_sigma_pu"][i]) * v_kv / float(
                    nodes["v_pu"][i])
                if np.isfinite(x):
                    value[k], good[k] = x, True
                continue
            j = at_bus.get((c.element, c.bus, c.phase))
            if j is None and c.terminal is not None:
                j = at_terminal.get((c.element, c.terminal, c.phase))
            if j is None:
                if c.bus in dead or c.element in open_switches:
                    value[k], good[k] = 0.0, True
                continue
            x = (br["p_w"][j] / 1e3 if q is CalculatedQuantity.P_KW else br["q_var"][j] / 1e3
                 if q is CalculatedQuantity.Q_KVAR else br["i_a"][j])
            if np.isfinite(x):
                value[k], good[k] = float(x), True
        rows["quality"][good] = int(Quality.GOOD)
        return rows
