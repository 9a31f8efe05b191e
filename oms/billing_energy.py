"""Block energies of one measured series: feeder-head active power integrated over time, or an energy counter read at
the block edges. Pure numpy over historian samples (``scada.historian.SAMPLE_DTYPE``); no storage, no clock.

Power (kW) is a piecewise function built from the samples:

- between two usable samples no further apart than ``interpolate_max_s`` it is linear (trapezoid rule): the series
  was refreshed often enough to be a continuous trace;
- across a longer interval the earlier value holds until the next sample: the value was reported by exception and
  stayed within its deadband meanwhile;
- a sample with a bad quality (invalid, communication lost, not topical, operator blocked) or no value opens a gap
  that lasts until the next usable sample. A gap no longer than ``bridge_max_s`` with usable values on both sides is
  bridged by a straight line (estimated); longer gaps, and the time before the first sample, are uncovered;
- a usable sample with any other quality bit (questionable, substituted, overflow, blocked, time invalid) is used,
  and what it covers is estimated.

A block all of whose time is uncovered is MISSING (no kWh); a partly uncovered block is scaled up by its covered
mean power and is ESTIMATED, as is a block with bridged or questionable time; the rest is GOOD.

A counter (kWh) is unwrapped first: a fall from the top decade of its modulus to the bottom decade is a roll-over
(exact); any other fall is a reset to zero (the counts since the reset are kept; the interval is estimated). The
energy of a block is the unwrapped counter at its end minus at its start, each edge linearly interpolated between the
bracketing usable samples; an edge with a sample within ``counter_edge_tolerance_s`` is good, one only bracketed is
estimated, and an edge outside the samples makes the block MISSING.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from models.points import Quality

__all__ = [
    "BAD_QUALITY_MASK",
    "BlockQuality",
    "BlockSeries",
    "EnergySettings",
    "counter_blocks",
    "integrate_blocks",
    "worst",
]

#: A sample with any of these bits says nothing about the value: it opens a gap.
BAD_QUALITY_MASK = int(Quality.INVALID | Quality.COMM_LOST | Quality.NOT_TOPICAL | Quality.OPERATOR_BLOCKED)
_MS_PER_H = 3_600_000.0


class BlockQuality(StrEnum):
    """Quality code of one billing block."""

    GOOD = "good"  # fully covered by good-quality data
    ESTIMATED = "estimated"  # gaps bridged or scaled, questionable data used, or built from estimated blocks
    MISSING = "missing"  # no usable data: no kWh
    MANUAL = "manual"  # entered by an operator


_RANK = {BlockQuality.GOOD: 0, BlockQuality.MANUAL: 1, BlockQuality.ESTIMATED: 2, BlockQuality.MISSING: 3}


def worst(qualities: list[BlockQuality]) -> BlockQuality:
    """The quality of a sum of blocks: MISSING > ESTIMATED > MANUAL > GOOD."""
    return max(qualities, key=_RANK.__getitem__) if qualities else BlockQuality.MISSING


@dataclass(frozen=True, slots=True)
class EnergySettings:
    interpolate_max_s: float = 900.0  # trapezoid between samples this close; hold across longer intervals
    bridge_max_s: float = 3600.0  # a bad-quality gap up to this long between usable values is bridged (estimated)
    counter_edge_tolerance_s: float = 90.0  # a counter sample this close to a block edge reads that edge exactly
    counter_modulus_kwh: float = 0.0  # roll-over modulus of energy counters; 0: the next power of ten above

    def __post_init__(self) -> None:
        for name in ("interpolate_max_s", "bridge_max_s", "counter_edge_tolerance_s", "counter_modulus_kwh"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"energy settings: {name} must be a non-negative number, not {v}")


@dataclass(frozen=True, slots=True, eq=False)
class BlockSeries:
    """Energies of consecutive blocks: ``kwh`` is NaN where the quality is MISSING."""

    start_ms: np.ndarray  # int64, block starts (UTC epoch ms)
    kwh: np.ndarray  # float64
    quality: tuple[BlockQuality, ...]

    def __len__(self) -> int:
        return len(self.kwh)


# kinds of a piece of the power function
_GOOD, _QUESTIONABLE, _BRIDGED, _UNCOVERED = 0, 1, 2, 3


def _pieces(samples: np.ndarray, t0: int, t1: int, s: EnergySettings) -> tuple[np.ndarray, ...]:
    """Contiguous pieces (a, b, va, vb, kind) covering [t0, t1): the power is linear from va at a to vb at b."""
    samples = samples[np.argsort(samples["time_ms"], kind="stable")]
    t = samples["time_ms"].astype(np.int64)
    v = samples["value"].astype(np.float64)
    q = samples["quality"].astype(np.int64)
    usable = np.isfinite(v) & ((q & BAD_QUALITY_MASK) == 0)
    doubtful = usable & ((q & ~BAD_QUALITY_MASK & 0xFFFF) != 0)
    a_list: list[int] = []
    b_list: list[int] = []
    va_list: list[float] = []
    vb_list: list[float] = []
    kind_list: list[int] = []

    def add(a: int, b: int, va: float, vb: float, kind: int) -> None:
        if b > a:
            a_list.append(a)
            b_list.append(b)
            va_list.append(va)
            vb_list.append(vb)
            kind_list.append(kind)

    n = len(t)
    interp_ms = s.interpolate_max_s * 1000.0
    bridge_ms = s.bridge_max_s * 1000.0
    first = int(np.argmax(usable)) if usable.any() else n
    add(t0 if n == 0 else min(t0, int(t[0])), t1 if first == n else int(t[first]), math.nan, math.nan, _UNCOVERED)
    i = first
    while i < n:
        if not usable[i]:
            i += 1
            continue
        nxt = i + 1
        end = int(t[nxt]) if nxt < n else max(t1, int(t[i]))
        kind = _QUESTIONABLE if doubtful[i] else _GOOD
        if nxt < n and usable[nxt] and t[nxt] - t[i] <= interp_ms:
            add(int(t[i]), end, float(v[i]), float(v[nxt]), _QUESTIONABLE if doubtful[nxt] else kind)
            i = nxt
            continue
        add(int(t[i]), end, float(v[i]), float(v[i]), kind)
        if nxt < n and not usable[nxt]:
            # a gap: from the bad sample to the next usable one (or the end)
            j = nxt
            while j < n and not usable[j]:
                j += 1
            g0, g1 = int(t[nxt]), (int(t[j]) if j < n else max(t1, int(t[nxt])))
            if j < n and g1 - g0 <= bridge_ms:
                add(g0, g1, float(v[i]), float(v[j]), _BRIDGED)
            else:
                add(g0, g1, math.nan, math.nan, _UNCOVERED)
            i = j
            continue
        i = nxt
    a, b = np.array(a_list, dtype=np.int64), np.array(b_list, dtype=np.int64)
    va, vb = np.array(va_list), np.array(vb_list)
    kind = np.array(kind_list, dtype=np.int8)
    # clip to the window; the pieces are contiguous, so what remains still covers it
    keep = (b > t0) & (a < t1)
    a, b, va, vb, kind = a[keep], b[keep], va[keep], vb[keep], kind[keep]
    lin = ~np.isnan(va)
    span = (b - a).astype(np.float64)
    lo, hi = np.maximum(a, t0), np.minimum(b, t1)
    va_c = np.where(lin, va + (vb - va) * (lo - a) / span, np.nan)
    vb_c = np.where(lin, va + (vb - va) * (hi - a) / span, np.nan)
    return lo, hi, va_c, vb_c, kind


def _cumulative(edges: np.ndarray, a: np.ndarray, b: np.ndarray, va: np.ndarray, vb: np.ndarray,
                mask: np.ndarray, *, energy: bool) -> np.ndarray:
    """Integral from the first piece to each edge of the masked pieces (energy in kW*ms, or time in ms)."""
    span = (b - a).astype(np.float64)
    if energy:
        full = np.where(mask, (va + vb) * 0.5 * span, 0.0)
    else:
        full = np.where(mask, span, 0.0)
    cum = np.r_[0.0, np.cumsum(full)]
    j = np.clip(np.searchsorted(a, edges, side="right") - 1, 0, len(a) - 1)
    dx = np.clip(edges - a[j], 0, span[j]).astype(np.float64)
    if energy:
        with np.errstate(invalid="ignore", divide="ignore"):
            vx = va[j] + (vb[j] - va[j]) * np.where(span[j] > 0, dx / span[j], 0.0)
        part = np.where(mask[j], (va[j] + vx) * 0.5 * dx, 0.0)
    else:
        part = np.where(mask[j], dx, 0.0)
    return cum[j] + part


def integrate_blocks(samples: np.ndarray, start_ms: int, end_ms: int, block_ms: int,
                     settings: EnergySettings = EnergySettings(), *, kw_per_unit: float = 1.0) -> BlockSeries:
    """Energy (kWh) of each block of ``block_ms`` in [start_ms, end_ms) from power samples (the sample in force at
    ``start_ms`` and the first one after ``end_ms`` should be included: they bound the first and last pieces)."""
    if block_ms <= 0 or (end_ms - start_ms) % block_ms:
        raise ValueError(f"integration window {start_ms}..{end_ms} is not a whole number of {block_ms} ms blocks")
    edges = np.arange(start_ms, end_ms + 1, block_ms, dtype=np.int64)
    a, b, va, vb, kind = _pieces(samples, start_ms, end_ms, settings)
    covered = kind != _UNCOVERED
    e = np.diff(_cumulative(edges, a, b, va, vb, covered, energy=True)) * kw_per_unit / _MS_PER_H
    t_cov = np.diff(_cumulative(edges, a, b, va, vb, covered, energy=False))
    t_est = np.diff(_cumulative(edges, a, b, va, vb, (kind == _BRIDGED) | (kind == _QUESTIONABLE), energy=False))
    kwh = np.full(len(e), np.nan)
    quality: list[BlockQuality] = []
    for k in range(len(e)):
        if t_cov[k] <= 0:
            quality.append(BlockQuality.MISSING)
            continue
        kwh[k] = e[k] * block_ms / t_cov[k]  # an uncovered part takes the covered mean power
        quality.append(BlockQuality.GOOD if t_cov[k] >= block_ms and t_est[k] <= 0 else BlockQuality.ESTIMATED)
    return BlockSeries(edges[:-1], kwh, tuple(quality))


def _modulus(value: float, configured: float) -> float:
    if configured > 0:
        return configured
    return 10.0 ** max(1, math.ceil(math.log10(max(value, 1.0) + 1.0)))


def counter_blocks(samples: np.ndarray, start_ms: int, end_ms: int, block_ms: int,
                   settings: EnergySettings = EnergySettings(), *, kwh_per_unit: float = 1.0) -> BlockSeries:
    """Energy (kWh) of each block from an energy counter's samples (include those bracketing the window)."""
    if block_ms <= 0 or (end_ms - start_ms) % block_ms:
        raise ValueError(f"counter window {start_ms}..{end_ms} is not a whole number of {block_ms} ms blocks")
    edges = np.arange(start_ms, end_ms + 1, block_ms, dtype=np.int64)
    n_blocks = len(edges) - 1
    samples = samples[np.argsort(samples["time_ms"], kind="stable")]
    q = samples["quality"].astype(np.int64)
    ok = np.isfinite(samples["value"]) & ((q & BAD_QUALITY_MASK) == 0)
    s = samples[ok]
    if not len(s):
        return BlockSeries(edges[:-1], np.full(n_blocks, np.nan), (BlockQuality.MISSING,) * n_blocks)
    t = s["time_ms"].astype(np.int64)
    v = s["value"].astype(np.float64) * kwh_per_unit
    doubtful = (s["quality"].astype(np.int64) & 0xFFFF) != 0
    d = np.diff(v)
    reset = np.zeros(len(d), dtype=bool)
    for i in np.flatnonzero(d < 0):
        mod = _modulus(v[i], settings.counter_modulus_kwh)
        if v[i] >= 0.9 * mod and v[i + 1] < 0.1 * mod:
            d[i] += mod  # roll-over: exact
        else:
            d[i] = v[i + 1]  # reset to zero: the counts since the reset; the interval is estimated
            reset[i] = True
    u = np.r_[v[0], v[0] + np.cumsum(d)]
    tol = settings.counter_edge_tolerance_s * 1000.0
    at_edge = np.interp(edges, t, u)
    known = (edges >= t[0] - tol) & (edges <= t[-1] + tol)
    pos = np.searchsorted(t, edges)
    near = np.zeros(len(edges), dtype=bool)
    for k, (x, p) in enumerate(zip(edges.tolist(), pos.tolist(), strict=True)):
        near[k] = any(abs(t[j] - x) <= tol for j in (p - 1, p) if 0 <= j < len(t))
    kwh = np.full(n_blocks, np.nan)
    quality: list[BlockQuality] = []
    for k in range(n_blocks):
        if not (known[k] and known[k + 1]):
            quality.append(BlockQuality.MISSING)
            continue
        kwh[k] = at_edge[k + 1] - at_edge[k]
        lo, hi = np.searchsorted(t, edges[k], side="right") - 1, np.searchsorted(t, edges[k + 1], side="left")
        lo, hi = max(lo, 0), min(hi, len(t) - 1)
        doubtful_used = bool(doubtful[lo:hi + 1].any()) or bool(reset[lo:hi].any())
        good = near[k] and near[k + 1] and not doubtful_used
        quality.append(BlockQuality.GOOD if good else BlockQuality.ESTIMATED)
    return BlockSeries(edges[:-1], kwh, tuple(quality))
