"""Meter pings: the OMS reads meters through the AMI head-end (instantaneous reads, IEC 61968-9 GetMeterReadings
style; the endpoint is ``rtu_sim.ami_service``) to confirm a predicted outage or to verify a restoration.

Policy:

* ``ping_plan(predictor, prediction, n)``: up to ``n`` meters below the prediction's device that the predictor does
  not believe off, picked round-robin over the device's downstream branches (one child device after another, then
  meters fed directly by it) and over the loads of each branch, so a few reads cover the whole area. For a
  PREDICTED outage these are the meters that did not report; for a RESTORED one, the meters believed back on.
* ``ping_events(readings, time_ms)``: each reading becomes ``PING_OFF`` (dead) or ``PING_ON`` (energised) for the
  predictor. A dead meter confirms the prediction above it (CONFIRMED, "confirmed by meter ping"); an energised one
  is energised evidence: a device with an energised meter below it since its first report is not out (the
  prediction dissolves or moves down). After a restoration a dead meter stays off (nested outage or SLO).
* ``assess(readings)``: the verdict an operator sees: ALL_DEAD (confirms), MOSTLY_ENERGISED, MIXED, NONE.

``PingPolicy`` does it once per outage and state: plan under the OMS lock (the predictor is single-owner), read the
head-end outside it (HTTP must not block evidence), submit the events::

    policy = PingPolicy(MeterPinger("http://127.0.0.1:8470/meter-readings"), meters_per_outage=5)
    with lock:
        plans = policy.plan(predictor, predictor.predictions(active_only=False))
    oms.submit(policy.read(plans, clock()))  # [] when there is nothing to ping
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from oms.connectivity import NO_DEVICE, Connectivity
from oms.errors import OmsError
from oms.events import EventKind, OmsEvent, parse_time_ms
from oms.prediction import OutagePredictor, Prediction, PredictionState

log = logging.getLogger(__name__)

__all__ = ["MeterPingError", "MeterPinger", "MeterRead", "PingPolicy", "PingResult", "PingVerdict", "assess",
           "ping_events", "ping_plan"]


class MeterPingError(OmsError):
    """The head-end could not be read; the text names the head-end URL and the problem."""


@dataclass(frozen=True, slots=True)
class MeterRead:
    meter: str
    energised: bool
    voltage_v: float
    time_ms: int  # the head-end's time of the read, UTC epoch ms
    power_on_count: int


@dataclass(frozen=True, slots=True)
class PingResult:
    source: str  # the head-end's name
    readings: tuple[MeterRead, ...]
    unknown: tuple[str, ...]  # meters the head-end does not know


class PingVerdict(StrEnum):
    NONE = "none"  # nothing read
    ALL_DEAD = "all_dead"  # confirms the outage
    MOSTLY_ENERGISED = "mostly_energised"  # the device is not out: the prediction dissolves or moves down
    MIXED = "mixed"


class MeterPinger:
    """Client of a head-end's ``POST /meter-readings`` endpoint (urllib: one HTTP request per ``read``)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise MeterPingError(f"head-end {url!r}: not an http(s) URL")
        if timeout_s <= 0:
            raise MeterPingError(f"head-end {url}: timeout_s must be > 0 (got {timeout_s})")
        self.url = url
        self.timeout_s = timeout_s

    def read(self, meters: Sequence[str]) -> PingResult:
        """Instantaneous reads of ``meters``; MeterPingError names the head-end and what went wrong."""
        body = json.dumps({"meters": list(meters)}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise MeterPingError(f"head-end {self.url}: HTTP {exc.code} {exc.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MeterPingError(f"head-end {self.url}: unreachable ({reason})") from None
        try:
            data = json.loads(raw)
            readings = tuple(MeterRead(str(r["meter"]), bool(r["energised"]), float(r["voltage_v"]),
                                       int(r["time_ms"]) if "time_ms" in r else parse_time_ms(r["time"]),
                                       int(r.get("power_on_count", 0))) for r in data["readings"])
            return PingResult(str(data.get("source", "")), readings, tuple(str(m) for m in data.get("unknown", ())))
        except (ValueError, KeyError, TypeError) as exc:
            raise MeterPingError(f"head-end {self.url}: malformed answer ({type(exc).__name__}: {exc})") from None


def ping_plan(predictor: OutagePredictor, prediction: Prediction, n: int) -> list[str]:
    """Up to ``n`` meters below ``prediction``'s device, spread over its branches: for an active prediction those
    not believed off (they did not report); for a restored one first those still believed off (are they?), then
    those believed back on (are they?)."""
    if n <= 0:
        return []
    conn = predictor.conn
    d = conn.device_index.get(prediction.device)
    if d is None:
        raise MeterPingError(f"ping plan: prediction {prediction.id} names device {prediction.device!r}, not in the "
                             f"connectivity of {conn.model_name!r}")
    off = predictor.off_mask()
    if prediction.state is PredictionState.RESTORED:
        order = _spread(conn, d, off) + _spread(conn, d, ~off)
    else:
        order = _spread(conn, d, ~off)
    return [conn.meter_ids[m] for m in order[:n]]


def _spread(conn: Connectivity, d: int, wanted: np.ndarray) -> list[int]:
    """Meters below device ``d`` with ``wanted`` set, round-robin over its branches (child devices in device
    order, meters fed directly by it last) and, inside a branch, over its loads."""
    loads = conn.downstream_loads(d)
    if not len(loads):
        return []
    chains = conn.load_chain[loads]
    pos = np.argmax(chains == d, axis=1)  # where the device sits in each load's chain (nearest first)
    branch = np.where(pos > 0, chains[np.arange(len(loads)), np.maximum(pos - 1, 0)], NO_DEVICE)
    candidates: dict[int, list[int]] = {}  # load -> its wanted meters
    ml = conn.meter_load
    for m in np.flatnonzero(np.isin(ml, loads) & wanted):
        candidates.setdefault(int(ml[m]), []).append(int(m))
    branches: dict[int, list[list[int]]] = {}
    for load, b in sorted(zip(loads.tolist(), branch.tolist(), strict=True), key=lambda x: (x[1] < 0, x[1], x[0])):
        if load in candidates:
            branches.setdefault(b, []).append(candidates[load])
    return _interleave([_interleave(lists) for lists in branches.values()])


def _interleave(lists: Sequence[Sequence[int]]) -> list[int]:
    """Round-robin merge: the first of each list, then the second of each, ..."""
    out: list[int] = []
    depth = max((len(x) for x in lists), default=0)
    for i in range(depth):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def ping_events(readings: Sequence[MeterRead], time_ms: int) -> list[OmsEvent]:
    """One PING_OFF/PING_ON per reading, stamped ``time_ms`` (the OMS clock when the answer came; the head-end's
    read time is its ``received_ms``)."""
    return [OmsEvent(int(time_ms), EventKind.PING_ON if r.energised else EventKind.PING_OFF, r.meter,
                     f"meter ping: {r.voltage_v:.0f} V", r.time_ms) for r in readings]


def assess(readings: Sequence[MeterRead], *, energised_share: float = 0.5) -> PingVerdict:
    """ALL_DEAD when every read meter is dead, MOSTLY_ENERGISED when more than ``energised_share`` are energised."""
    if not readings:
        return PingVerdict.NONE
    live = sum(1 for r in readings if r.energised)
    if live == 0:
        return PingVerdict.ALL_DEAD
    return PingVerdict.MOSTLY_ENERGISED if live > energised_share * len(readings) else PingVerdict.MIXED


class PingPolicy:
    """When to ping: each PREDICTED outage once (confirm or dissolve it) and each RESTORED one once (verify it).
    A read that fails is retried after ``retry_s``. Not thread-safe: one owner (the OMS analysis thread)."""

    _STATES = (PredictionState.PREDICTED, PredictionState.RESTORED)

    def __init__(self, pinger: MeterPinger, *, meters_per_outage: int = 5, retry_s: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if meters_per_outage < 1 or retry_s <= 0:
            raise MeterPingError(f"ping policy for {pinger.url}: meters_per_outage must be >= 1 and retry_s > 0 "
                                 f"(got {meters_per_outage}, {retry_s})")
        self.pinger = pinger
        self.meters_per_outage = meters_per_outage
        self.retry_s = retry_s
        self._monotonic = monotonic
        self._done: dict[tuple[str, PredictionState], float] = {}  # -> when it may be pinged again (inf: never)
        self.failures = 0

    def plan(self, predictor: OutagePredictor, predictions: Sequence[Prediction]) -> dict[tuple[str, PredictionState],
                                                                                          list[str]]:
        """Meters to read per (prediction id, state) not pinged yet; call it under the predictor's lock."""
        now = self._monotonic()
        plans = {}
        for p in predictions:
            key = (p.id, p.state)
            if p.state not in self._STATES or self._done.get(key, 0.0) > now:
                continue
            self._done[key] = float("inf")
            meters = ping_plan(predictor, p, self.meters_per_outage)
            if meters:
                plans[key] = meters
        return plans

    def read(self, plans: Mapping[tuple[str, PredictionState], list[str]], time_ms: int) -> list[OmsEvent]:
        """Read the planned meters (one request per outage); the events to submit. A failing head-end is logged
        and the outage planned again after ``retry_s``."""
        events: list[OmsEvent] = []
        for key, meters in plans.items():
            try:
                result = self.pinger.read(meters)
            except MeterPingError as exc:
                self.failures += 1
                self._done[key] = self._monotonic() + self.retry_s
                log.warning("meter ping for outage %s (%s) failed: %s", key[0], key[1].value, exc)
                continue
            events += ping_events(result.readings, time_ms)
        return events
