"""A seeded, deterministic model of what a transmission SCADA sends a distribution control centre over ICCP.

One ``TransmissionSystem`` holds the grid frequency and, per tie (a 33 kV infeed from a transmission substation into
the distribution network; the sample network has two, feeding its grid sources ``SS-GRID1`` and ``SS-GRID2``), the
tie-line flows, the transmission substation's 33 kV bus voltage, the tie breaker and the energy counters. Points are
named as they will be published over TASE.2 (valid MMS identifiers, at most 32 characters):

==================  ==================  ======  ========================================================================
name                TASE.2 type         units   meaning
==================  ==================  ======  ========================================================================
``FREQ_SYS``        Data_RealQTimeTag   Hz      system frequency
``TIE<n>_MW``       Data_RealQTimeTag   MW      active power into the distribution network (negative: reverse flow)
``TIE<n>_MVAR``     Data_RealQTimeTag   Mvar    reactive power into the distribution network
``BUS_T<n>_KV``     Data_RealQTimeTag   kV      line voltage of the 33 kV bus feeding tie n (live when the CB is open)
``CB_T<n>_STATE``   Data_StateQTimeTag  --      tie breaker, ``models.points.DoubleState``: 1 open, 2 closed
``MWH_SENT_T<n>``   Data_RealQTimeTag   MWh     energy sent to distribution ("MU sent"), rolls over at the modulus
``MWH_RECV_T<n>``   Data_RealQTimeTag   MWh     energy received back from distribution ("MU received"), idem
==================  ==================  ======  ========================================================================

Every point carries a value, a quality (``models.points.Quality``, the RTDB vocabulary; the TASE.2 server maps it to
Data_Flags at its edge) and the time of its last reported change.

Physics (deliberately simple, but with the right shape and magnitudes):

- Frequency: a governor-like first-order return (time constant ``governor_time_s``) towards ``nominal - imbalance``,
  plus an Ornstein-Uhlenbeck random walk (stationary standard deviation ``freq_noise_hz``). Load-generation steps
  (Poisson, ``imbalance_rate_per_h``) add a frequency offset of up to ``imbalance_max_hz`` that secondary control
  (AGC) removes with time constant ``agc_time_s``. Clamped to [``f_min_hz``, ``f_max_hz``].
- Tie flows: the tie's peak load times a daily load curve (hourly factors in local time, linear in between, an
  Indian urban feeder mix with the evening peak), an AR(1) load fluctuation, minus rooftop PV behind the tie
  (``der_peak_mw`` times a half-sine between 06:00 and 18:00), plus I^2 losses; or, given the distribution
  network's own flows (``tie_flows``: a power flow of its model, see ``iccp.sim.hosted``), exactly what the
  distribution side draws at that source. Mvar follow the power factor plus
  transformer magnetising/leakage var. A tie whose breaker is open carries nothing.
- Breakers trip at random (``trip_rate_per_h`` each), auto-reclose after ``reclose_delay_s`` with probability
  ``reclose_success``, otherwise stay locked out until operated (``operate_breaker``).
- Counters integrate the flows with the trapezoid rule per step (the positive part into ``MWH_SENT``, the negative
  part into ``MWH_RECV``, split at the zero crossing), are reported at ``counter_resolution_mwh`` and wrap at
  ``counter_modulus_mwh``; they never decrease except at that roll-over.

Report by exception: ``step`` returns the points whose reported value changed (beyond the point's deadband, or a
quality change, or any change of a state or counter) since the previous step, including breaker operations made
between steps (with the time of the operation), in time order. Random draws come from one ``numpy`` generator in a
fixed order and number per step, so a seed gives the same series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum

import numpy as np

from iccp.errors import IccpError
from models.network import NetworkModel
from models.points import DoubleState, Quality
from models.timebase import now_ms as _now_ms

__all__ = [
    "DEFAULT_LOAD_SHAPE",
    "DEFAULT_TIES",
    "BreakerResult",
    "PointValue",
    "SimPointDef",
    "SimPointType",
    "TieFlows",
    "TieSpec",
    "TransmissionConfig",
    "TransmissionSimError",
    "TransmissionSystem",
    "ties_from_network",
]

#: Load factor per local hour 00..23 (fraction of the peak): night valley, morning ramp, midday plateau, evening peak.
DEFAULT_LOAD_SHAPE: tuple[float, ...] = (
    0.62, 0.57, 0.54, 0.52, 0.52, 0.55, 0.63, 0.72, 0.80, 0.85, 0.88, 0.90,
    0.90, 0.89, 0.88, 0.87, 0.86, 0.88, 0.93, 1.00, 0.99, 0.93, 0.82, 0.70,
)

_MAX_NAME = 32  # MMS Identifier length limit


class TransmissionSimError(IccpError):
    """A simulator configuration or request that cannot be honoured (names the field or point)."""


class SimPointType(StrEnum):
    """The TASE.2 type a point is published as."""

    REAL = "Data_RealQTimeTag"
    STATE = "Data_StateQTimeTag"


class _Role(Enum):
    FREQ = 0
    MW = 1
    MVAR = 2
    KV = 3
    CB = 4
    SENT = 5
    RECV = 6


@dataclass(frozen=True, slots=True)
class SimPointDef:
    """One published point. ``tie`` is the 1-based tie number, 0 for system-wide points."""

    name: str
    type: SimPointType
    units: str
    description: str
    tie: int = 0
    commandable: bool = False


@dataclass(frozen=True, slots=True)
class PointValue:
    """A reported value: ``time_ms`` is the UTC epoch ms of its last reported change."""

    name: str
    value: float
    quality: Quality
    time_ms: int


class BreakerResult(StrEnum):
    """What ``operate_breaker`` did."""

    OPERATED = "operated"
    ALREADY_IN_POSITION = "already_in_position"


@dataclass(frozen=True, slots=True)
class TieSpec:
    """One 33 kV infeed; ``source`` names the distribution network's EnergySource it feeds."""

    number: int
    source: str
    peak_mw: float
    power_factor: float = 0.95
    der_peak_mw: float = 0.0  # rooftop PV behind the tie: large values give reverse flow at midday
    nominal_kv: float = 33.0
    initial_sent_mwh: float = 0.0
    initial_recv_mwh: float = 0.0

    def __post_init__(self) -> None:
        where = f"tie {self.number} ({self.source})"
        if self.number < 1:
            raise TransmissionSimError(f"{where}: number must be >= 1")
        if not self.peak_mw > 0:
            raise TransmissionSimError(f"{where}: peak_mw must be positive, not {self.peak_mw}")
        if not 0.5 <= self.power_factor <= 1.0:
            raise TransmissionSimError(f"{where}: power_factor must be in [0.5, 1], not {self.power_factor}")
        if self.der_peak_mw < 0:
            raise TransmissionSimError(f"{where}: der_peak_mw must not be negative, not {self.der_peak_mw}")
        if not self.nominal_kv > 0:
            raise TransmissionSimError(f"{where}: nominal_kv must be positive, not {self.nominal_kv}")
        if self.initial_sent_mwh < 0 or self.initial_recv_mwh < 0:
            raise TransmissionSimError(f"{where}: initial counter values must not be negative")


#: The sample network's two infeeds: feeders F1-F3 (7.67 MW of peak load) behind SS-GRID1, F4-F6 (7.25 MW) behind
#: SS-GRID2, plus about 2 % losses in the 33/11 kV transformers and cables (``ties_from_network`` recomputes them).
DEFAULT_TIES: tuple[TieSpec, ...] = (TieSpec(1, "SS-GRID1", 7.8), TieSpec(2, "SS-GRID2", 7.4))


@dataclass(frozen=True, slots=True)
class TransmissionConfig:
    ties: tuple[TieSpec, ...] = DEFAULT_TIES
    nominal_hz: float = 50.0
    f_min_hz: float = 49.5  # hard limits (below the first under-frequency load-shedding stage is not modelled)
    f_max_hz: float = 50.5
    freq_noise_hz: float = 0.015  # stationary standard deviation of the random walk
    freq_noise_time_s: float = 30.0  # correlation time of the random walk
    governor_time_s: float = 8.0  # primary response: time constant of the return towards the target
    imbalance_rate_per_h: float = 2.0  # load-generation steps (unit trips, large load changes)
    imbalance_max_hz: float = 0.12  # largest frequency offset one step causes
    agc_time_s: float = 180.0  # secondary control removes an imbalance with this time constant
    load_shape: tuple[float, ...] = DEFAULT_LOAD_SHAPE
    load_noise_pct: float = 1.5  # standard deviation of the slow load fluctuation
    load_noise_time_s: float = 300.0
    losses_pct_at_peak: float = 2.0
    utc_offset_min: int = 330  # local time of the load curve (India: UTC+05:30)
    trip_rate_per_h: float = 0.01  # per breaker: about one trip in four days
    reclose_delay_s: float = 3.0
    reclose_success: float = 0.8
    counter_modulus_mwh: float = 1_000_000.0
    counter_resolution_mwh: float = 0.001
    freq_deadband_hz: float = 0.002  # report-by-exception deadbands; 0 reports every change
    flow_deadband_mw: float = 0.02  # MW and Mvar
    voltage_deadband_kv: float = 0.02

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> TransmissionSimError:
            return TransmissionSimError(f"transmission simulator config: {name} {why}, not {getattr(self, name)!r}")

        if not self.ties:
            raise TransmissionSimError("transmission simulator config: ties must name at least one tie")
        numbers = [t.number for t in self.ties]
        if len(set(numbers)) != len(numbers):
            raise bad("ties", "must have distinct numbers")
        if not self.f_min_hz < self.nominal_hz < self.f_max_hz:
            raise TransmissionSimError(
                f"transmission simulator config: need f_min_hz < nominal_hz < f_max_hz, not "
                f"{self.f_min_hz} / {self.nominal_hz} / {self.f_max_hz}")
        for name in ("freq_noise_time_s", "governor_time_s", "agc_time_s", "load_noise_time_s",
                     "counter_modulus_mwh", "counter_resolution_mwh"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be positive")
        for name in ("freq_noise_hz", "imbalance_rate_per_h", "imbalance_max_hz", "load_noise_pct",
                     "losses_pct_at_peak", "trip_rate_per_h", "reclose_delay_s", "freq_deadband_hz",
                     "flow_deadband_mw", "voltage_deadband_kv"):
            if not getattr(self, name) >= 0:
                raise bad(name, "must not be negative")
        if not 0.0 <= self.reclose_success <= 1.0:
            raise bad("reclose_success", "must be a probability in [0, 1]")
        if len(self.load_shape) != 24 or not all(f >= 0 for f in self.load_shape):
            raise bad("load_shape", "must hold 24 non-negative hourly factors")
        for t in self.ties:
            if t.initial_sent_mwh >= self.counter_modulus_mwh or t.initial_recv_mwh >= self.counter_modulus_mwh:
                raise TransmissionSimError(
                    f"tie {t.number}: initial counter values must be below counter_modulus_mwh "
                    f"{self.counter_modulus_mwh}")


@dataclass(slots=True)
class _Breakers:
    closed: np.ndarray  # bool per tie
    reclose_at_ms: np.ndarray  # int64 per tie; -1: no reclose pending
    locked_out: np.ndarray  # bool per tie: the auto-reclose failed, only an operation closes it


class TransmissionSystem:
    """The transmission side of an ICCP link; drive it with ``step`` and read it with ``snapshot``."""

    def __init__(self, config: TransmissionConfig | None = None, *, seed: int = 0, start_ms: int | None = None,
                 tie_flows: TieFlows | None = None) -> None:
        """``tie_flows``: the distribution network's own flows (source name -> MW, Mvar, e.g. from a power flow of
        its model); a tie whose ``source`` it names carries that flow instead of its load curve."""
        self.config = cfg = config or TransmissionConfig()
        self._tie_flows = tie_flows
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._now_ms = _now_ms() if start_ms is None else int(start_ms)
        ties = cfg.ties
        n = len(ties)
        self._n_ties = n
        self._peak = np.array([t.peak_mw for t in ties])
        self._tan_phi = np.array([math.tan(math.acos(t.power_factor)) for t in ties])
        self._der = np.array([t.der_peak_mw for t in ties])
        self._kv_nom = np.array([t.nominal_kv for t in ties])
        # points: FREQ_SYS, then per tie MW, MVAR, KV, CB, SENT, RECV
        defs: list[SimPointDef] = [SimPointDef("FREQ_SYS", SimPointType.REAL, "Hz", "system frequency")]
        roles: list[_Role] = [_Role.FREQ]
        tie_of: list[int] = [-1]
        for i, t in enumerate(ties):
            k = t.number
            for role, d in (
                (_Role.MW, SimPointDef(f"TIE{k}_MW", SimPointType.REAL, "MW",
                                       f"active power into the distribution network at {t.source}", k)),
                (_Role.MVAR, SimPointDef(f"TIE{k}_MVAR", SimPointType.REAL, "Mvar",
                                         f"reactive power into the distribution network at {t.source}", k)),
                (_Role.KV, SimPointDef(f"BUS_T{k}_KV", SimPointType.REAL, "kV",
                                       f"voltage of the transmission-side bus feeding {t.source}", k)),
                (_Role.CB, SimPointDef(f"CB_T{k}_STATE", SimPointType.STATE, "",
                                       f"breaker of the tie to {t.source} (1 open, 2 closed)", k, commandable=True)),
                (_Role.SENT, SimPointDef(f"MWH_SENT_T{k}", SimPointType.REAL, "MWh",
                                         f"energy sent to the distribution network at {t.source}", k)),
                (_Role.RECV, SimPointDef(f"MWH_RECV_T{k}", SimPointType.REAL, "MWh",
                                         f"energy received from the distribution network at {t.source}", k)),
            ):
                if len(d.name) > _MAX_NAME:
                    raise TransmissionSimError(f"tie {k}: point name {d.name!r} exceeds {_MAX_NAME} characters")
                defs.append(d)
                roles.append(role)
                tie_of.append(i)
        self.points: tuple[SimPointDef, ...] = tuple(defs)
        self._index = {d.name: j for j, d in enumerate(defs)}
        role_arr = np.array([r.value for r in roles])
        self._role = role_arr
        self._tie_of = np.array(tie_of)
        self._sel = {r: np.flatnonzero(role_arr == r.value) for r in _Role}  # point indices per role, in tie order
        dead = np.zeros(len(defs))
        dead[self._sel[_Role.FREQ]] = cfg.freq_deadband_hz
        dead[self._sel[_Role.MW]] = cfg.flow_deadband_mw
        dead[self._sel[_Role.MVAR]] = cfg.flow_deadband_mw
        dead[self._sel[_Role.KV]] = cfg.voltage_deadband_kv
        self._deadband = dead
        self._exact = np.isin(role_arr, [_Role.CB.value, _Role.SENT.value, _Role.RECV.value])  # any change reported
        # dynamic state
        self._df_hz = 0.0  # frequency deviation from nominal, without the noise
        self._noise_hz = 0.0
        self._imbalance_hz = 0.0  # offset caused by load-generation steps, decaying with AGC
        self._load_noise = np.zeros(n)  # relative AR(1) load fluctuation per tie
        self._breakers = _Breakers(np.ones(n, dtype=bool), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool))
        self._sent_mwh = np.array([t.initial_sent_mwh for t in ties])  # unwrapped totals
        self._recv_mwh = np.array([t.initial_recv_mwh for t in ties])
        self._forced_quality = np.zeros(len(defs), dtype=np.uint16)
        self._mw = np.zeros(n)
        self._true = np.zeros(len(defs))
        self._compute_outputs()
        self._pub_value = self._reported().copy()
        self._pub_quality = np.zeros(len(defs), dtype=np.uint16)
        self._pub_time = np.full(len(defs), self._now_ms, dtype=np.int64)
        self._pending: list[int] = []  # points changed between steps (breaker operations, quality forcing)

    # --------------------------------------------------------------------------------------------------- reading
    @property
    def now_ms(self) -> int:
        return self._now_ms

    def snapshot(self) -> tuple[PointValue, ...]:
        """Every point as last reported, in ``points`` order."""
        return tuple(self._value_of(j) for j in range(len(self.points)))

    def value(self, name: str) -> PointValue:
        return self._value_of(self._point(name))

    def energy_totals_mwh(self, tie: int) -> tuple[float, float]:
        """Unwrapped (sent, received) energy of tie ``tie`` since the counters' zero, before rounding and roll-over."""
        i = self._tie_index(tie)
        return float(self._sent_mwh[i]), float(self._recv_mwh[i])

    # -------------------------------------------------------------------------------------------------- commands
    def operate_breaker(self, name: str, close: bool) -> BreakerResult:
        """Open or close a tie breaker (``CB_T<n>_STATE``) now; the change is reported by the next ``step``.

        Closing clears a lock-out; opening cancels a pending auto-reclose.
        """
        j = self._point(name)
        if self._role[j] != _Role.CB.value:
            raise TransmissionSimError(f"point {name!r} is not a breaker: only CB_T<n>_STATE points can be operated")
        i = int(self._tie_of[j])
        br = self._breakers
        br.reclose_at_ms[i] = -1
        br.locked_out[i] = False
        if bool(br.closed[i]) == close:
            return BreakerResult.ALREADY_IN_POSITION
        br.closed[i] = close
        self._after_breaker_change(i)
        return BreakerResult.OPERATED

    def force_quality(self, name: str, quality: Quality) -> None:
        """Report ``name`` with ``quality`` from now on (e.g. a failed transmission RTU); ``Quality.GOOD`` clears it."""
        j = self._point(name)
        self._forced_quality[j] = int(quality)
        self._publish(np.array([j]), self._reported())

    # ----------------------------------------------------------------------------------------------------- steps
    def step(self, dt_s: float) -> tuple[PointValue, ...]:
        """Advance ``dt_s`` seconds; returns the points reported by exception since the previous step."""
        if not (dt_s > 0 and math.isfinite(dt_s)):
            raise TransmissionSimError(f"step: dt_s must be a positive number, not {dt_s}")
        cfg = self.config
        rng = self._rng
        n = self._n_ties
        # fixed draw order and sizes per step: determinism per seed does not depend on the path taken
        z_noise = rng.standard_normal()
        n_events = rng.poisson(cfg.imbalance_rate_per_h * dt_s / 3600.0)
        event_sizes = rng.uniform(-1.0, 1.0, size=8)
        z_load = rng.standard_normal(n)
        u_trip = rng.random(n)
        u_reclose = rng.random(n)
        z_meas = rng.standard_normal(3 * n + 1)

        prev_mw = self._mw.copy()
        self._now_ms += int(round(dt_s * 1000.0))
        # frequency
        a_noise = math.exp(-dt_s / cfg.freq_noise_time_s)
        self._noise_hz = a_noise * self._noise_hz + cfg.freq_noise_hz * math.sqrt(1.0 - a_noise * a_noise) * z_noise
        for k in range(min(int(n_events), len(event_sizes))):
            self._imbalance_hz += cfg.imbalance_max_hz * float(event_sizes[k])
        self._imbalance_hz = max(-cfg.imbalance_max_hz * 2, min(cfg.imbalance_max_hz * 2, self._imbalance_hz))
        self._imbalance_hz *= math.exp(-dt_s / cfg.agc_time_s)
        a_gov = math.exp(-dt_s / cfg.governor_time_s)
        self._df_hz = a_gov * self._df_hz + (1.0 - a_gov) * self._imbalance_hz
        # load fluctuation
        a_load = math.exp(-dt_s / cfg.load_noise_time_s)
        self._load_noise = a_load * self._load_noise + (cfg.load_noise_pct / 100.0) * np.sqrt(
            1.0 - a_load * a_load) * z_load
        # breakers: pending auto-reclose first, then random trips of closed breakers
        br = self._breakers
        changed_cb: list[int] = []
        due = (br.reclose_at_ms >= 0) & (br.reclose_at_ms <= self._now_ms)
        for i in np.flatnonzero(due):
            br.reclose_at_ms[i] = -1
            if u_reclose[i] < cfg.reclose_success:
                br.closed[i] = True
                changed_cb.append(int(i))
            else:
                br.locked_out[i] = True
        p_trip = 1.0 - math.exp(-cfg.trip_rate_per_h * dt_s / 3600.0)
        trips = br.closed & (u_trip < p_trip)
        trips[changed_cb] = False  # a breaker just reclosed does not trip in the same step
        for i in np.flatnonzero(trips):
            br.closed[i] = False
            br.reclose_at_ms[i] = self._now_ms + int(round(cfg.reclose_delay_s * 1000.0))
            changed_cb.append(int(i))
        self._compute_outputs(z_meas)
        # energy: trapezoid of the flow over the step, split at the zero crossing
        pos, neg = _split_trapezoid(prev_mw, self._mw, dt_s / 3600.0)
        self._sent_mwh += pos
        self._recv_mwh += neg
        self._true[self._sel[_Role.SENT]] = self._sent_mwh
        self._true[self._sel[_Role.RECV]] = self._recv_mwh
        reported = self._reported()
        moved = np.abs(reported - self._pub_value) > self._deadband
        moved[self._exact] = reported[self._exact] != self._pub_value[self._exact]
        moved |= self._pub_quality != self._forced_quality
        idx = np.flatnonzero(moved)
        self._publish(idx, reported)
        # in time order (an operation between steps comes first), then in point order
        changed = sorted(set(self._pending) | set(idx.tolist()), key=lambda j: (int(self._pub_time[j]), j))
        self._pending.clear()
        return tuple(self._value_of(j) for j in changed)

    # -------------------------------------------------------------------------------------------------- internal
    def _compute_outputs(self, z_meas: np.ndarray | None = None) -> None:
        cfg = self.config
        n = self._n_ties
        z = np.zeros(3 * n + 1) if z_meas is None else z_meas
        freq = cfg.nominal_hz + self._df_hz + self._noise_hz + 0.001 * z[0]
        self._true[self._sel[_Role.FREQ]] = min(cfg.f_max_hz, max(cfg.f_min_hz, freq))
        hour = ((self._now_ms / 3_600_000.0) + cfg.utc_offset_min / 60.0) % 24.0
        shape = _load_factor(cfg.load_shape, hour)
        load = self._peak * shape * (1.0 + self._load_noise)
        solar = max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0)) if 6.0 < hour < 18.0 else 0.0
        ratio = load / self._peak
        losses = self._peak * cfg.losses_pct_at_peak / 100.0 * ratio * ratio
        p = load - self._der * solar + losses
        q = load * self._tan_phi + 0.05 * self._peak * (0.3 + ratio * ratio)  # magnetising + leakage var
        if self._tie_flows is not None:  # the distribution network's power flow says what the ties carry
            measured = self._tie_flows()
            for i, t in enumerate(cfg.ties):
                if t.source in measured:
                    p[i], q[i] = measured[t.source]
                    ratio[i] = p[i] / self._peak[i]
        p = p * (1.0 + 0.002 * z[1:n + 1])
        q = q * (1.0 + 0.004 * z[n + 1:2 * n + 1])
        closed = self._breakers.closed
        self._mw = np.where(closed, p, 0.0)
        self._true[self._sel[_Role.MW]] = self._mw
        self._true[self._sel[_Role.MVAR]] = np.where(closed, q, 0.0)
        # the transmission bus sags with the tie's load and rises a little when the tie is open
        kv = self._kv_nom * (1.02 - 0.025 * np.where(closed, ratio, 0.0) + 0.002 * z[2 * n + 1:3 * n + 1])
        self._true[self._sel[_Role.KV]] = kv
        self._true[self._sel[_Role.CB]] = np.where(closed, float(DoubleState.ON), float(DoubleState.OFF))
        self._true[self._sel[_Role.SENT]] = self._sent_mwh
        self._true[self._sel[_Role.RECV]] = self._recv_mwh

    def _reported(self) -> np.ndarray:
        """The true values as they would be reported: rounded, counters wrapped at the modulus."""
        cfg = self.config
        out = self._true.copy()
        res = cfg.counter_resolution_mwh
        for role in (_Role.SENT, _Role.RECV):
            sel = self._sel[role]
            # floor to the resolution, so a reported counter never runs ahead of the energy
            counts = np.floor(out[sel] / res + 1e-9)
            out[sel] = np.round(np.mod(counts * res, cfg.counter_modulus_mwh), 9)
        for role, digits in ((_Role.FREQ, 4), (_Role.MW, 3), (_Role.MVAR, 3), (_Role.KV, 3)):
            sel = self._sel[role]
            out[sel] = np.round(out[sel], digits)
        return out

    def _publish(self, idx: np.ndarray, reported: np.ndarray) -> None:
        self._pub_value[idx] = reported[idx]
        self._pub_quality[idx] = self._forced_quality[idx]
        self._pub_time[idx] = self._now_ms
        self._pending.extend(int(j) for j in idx)

    def _after_breaker_change(self, i: int) -> None:
        self._compute_outputs()
        reported = self._reported()
        cb = int(self._sel[_Role.CB][i])
        related = [cb, int(self._sel[_Role.MW][i]), int(self._sel[_Role.MVAR][i])]
        self._publish(np.array(related), reported)

    def _value_of(self, j: int) -> PointValue:
        return PointValue(self.points[j].name, float(self._pub_value[j]), Quality(int(self._pub_quality[j])),
                          int(self._pub_time[j]))

    def _point(self, name: str) -> int:
        j = self._index.get(name)
        if j is None:
            raise TransmissionSimError(f"transmission simulator has no point {name!r}")
        return j

    def _tie_index(self, tie: int) -> int:
        for i, t in enumerate(self.config.ties):
            if t.number == tie:
                return i
        raise TransmissionSimError(f"transmission simulator has no tie {tie}")


#: Source name -> (MW, Mvar) flowing into the distribution network there (``TransmissionSystem(tie_flows=...)``).
TieFlows = Callable[[], Mapping[str, tuple[float, float]]]


def _load_factor(shape: Sequence[float], hour: float) -> float:
    h0 = int(hour) % 24
    frac = hour - math.floor(hour)
    return shape[h0] + (shape[(h0 + 1) % 24] - shape[h0]) * frac


def _split_trapezoid(p0: np.ndarray, p1: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Energy of a flow varying linearly from p0 to p1 over dt_h: (positive part, magnitude of the negative part)."""
    same = (p0 >= 0) == (p1 >= 0)
    trap = 0.5 * (p0 + p1) * dt_h
    with np.errstate(divide="ignore", invalid="ignore"):
        # crossing: the flow is zero at fraction f = p0 / (p0 - p1) of the step
        f = np.where(same, 0.0, p0 / (p0 - p1))
    first = 0.5 * p0 * f * dt_h
    second = 0.5 * p1 * (1.0 - f) * dt_h
    pos = np.where(same, np.maximum(trap, 0.0), np.maximum(first, 0.0) + np.maximum(second, 0.0))
    neg = np.where(same, np.maximum(-trap, 0.0), np.maximum(-first, 0.0) + np.maximum(-second, 0.0))
    return pos, neg


def ties_from_network(model: NetworkModel, *, losses_pct: float = 2.0) -> tuple[TieSpec, ...]:
    """One TieSpec per EnergySource of a ``models.network.NetworkModel``: its peak is the load it supplies through
    closed switches, lines and transformers (plus ``losses_pct``), numbered in source order."""
    buses = model.buses
    parent = list(range(len(buses)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def join(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    for sw in model.switches:
        if not sw.open:
            join(sw.from_bus, sw.to_bus)
    for ln in model.lines:
        join(ln.from_bus, ln.to_bus)
    for tr in model.transformers:
        ends = [w.bus for w in tr.windings]
        for b in ends[1:]:
            join(ends[0], b)
    load_w: dict[int, float] = {}
    for ld in model.loads:
        root = find(ld.bus)
        load_w[root] = load_w.get(root, 0.0) + ld.p_w
    ties = []
    for k, src in enumerate(model.sources, start=1):
        peak_mw = load_w.get(find(src.bus), 0.0) / 1e6 * (1.0 + losses_pct / 100.0)
        if peak_mw <= 0:
            raise TransmissionSimError(f"source {src.name!r} supplies no load: cannot size its tie")
        ties.append(TieSpec(k, src.name, round(peak_mw, 3), nominal_kv=src.nominal_v / 1000.0))
    return tuple(ties)
