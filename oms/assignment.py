"""Crew-to-outage assignment as a linear assignment problem (``scipy.optimize.linear_sum_assignment``).

Pure numpy: the crew board (``oms.crews``) builds the inputs. For crews ``i`` and work items ``j``::

    cost[i, j] = travel_h[i, j] - hours_per_point * priority[j] - bonus      when crew i may take item j
               = INFEASIBLE                                                 otherwise (missing skill, ...)

with one extra "wait" row per item of cost 0 (an item may stay unassigned). ``bonus`` is larger than any travel time
plus any priority term, so every feasible pair is cheaper than waiting: the solver first serves as many outages as
there are able crews, and among those choices it minimises travel time minus priority. ``hours_per_point`` says how
much extra travel one priority point is worth (default 1 h): with more outages than crews, the lowest-priority ones
wait unless serving them instead saves more than ``hours_per_point`` hours of travel per priority point given up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from oms.errors import OmsError

__all__ = ["INFEASIBLE", "Solution", "assignment_cost", "haversine_km", "solve_assignment", "total_objective"]

INFEASIBLE = 1e9
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius


def haversine_km(lon1: np.ndarray | float, lat1: np.ndarray | float, lon2: np.ndarray | float,
                 lat2: np.ndarray | float) -> np.ndarray:
    """Great-circle distance in km between points given in degrees (broadcasting)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


@dataclass(frozen=True, slots=True)
class Solution:
    pairs: tuple[tuple[int, int], ...]  # (crew row, item column), feasible pairs only, by crew row
    waiting: tuple[int, ...]  # item columns left without a crew
    objective: float  # sum over pairs of travel_h - hours_per_point * priority


def assignment_cost(travel_h: np.ndarray, feasible: np.ndarray, priority: np.ndarray, *,
                    hours_per_point: float = 1.0) -> np.ndarray:
    """The crews x items cost matrix (without the wait rows); INFEASIBLE where ``feasible`` is False."""
    travel_h = np.asarray(travel_h, dtype=float)
    feasible = np.asarray(feasible, dtype=bool)
    priority = np.asarray(priority, dtype=float)
    if travel_h.ndim != 2 or feasible.shape != travel_h.shape or priority.shape != (travel_h.shape[1],):
        raise OmsError(f"assignment: shapes do not match (travel {travel_h.shape}, feasible {feasible.shape}, "
                       f"priority {priority.shape})")
    if hours_per_point < 0:
        raise OmsError(f"assignment: hours_per_point must be >= 0 (got {hours_per_point})")
    if np.any(~np.isfinite(travel_h[feasible])) or np.any(travel_h[feasible] < 0):
        raise OmsError("assignment: travel times of feasible pairs must be finite and >= 0")
    if np.any(~np.isfinite(priority)) or np.any(priority < 0):
        raise OmsError("assignment: priorities must be finite and >= 0")
    value = travel_h - hours_per_point * priority[None, :]
    span = (float(np.abs(value[feasible]).max()) if feasible.any() else 0.0)
    # Serving k + 1 items must beat serving k whatever their values: bonus > (2k + 1) * span for every k possible.
    bonus = (2.0 * min(travel_h.shape) + 1.0) * span + 1.0
    return np.where(feasible, value - bonus, INFEASIBLE)


def total_objective(travel_h: np.ndarray, priority: np.ndarray, pairs: tuple[tuple[int, int], ...], *,
                    hours_per_point: float = 1.0) -> float:
    return float(sum(travel_h[i, j] - hours_per_point * priority[j] for i, j in pairs))


def solve_assignment(travel_h: np.ndarray, feasible: np.ndarray, priority: np.ndarray, *,
                     hours_per_point: float = 1.0) -> Solution:
    """Optimal assignment: most outages served, then least (travel - hours_per_point * priority)."""
    cost = assignment_cost(travel_h, feasible, priority, hours_per_point=hours_per_point)
    n_crews, n_items = cost.shape
    if n_items == 0:
        return Solution((), (), 0.0)
    # One wait row per item (cost 0): an item no able crew can take, or one not worth a crew, stays unassigned
    # instead of forcing an infeasible pair that would steal a crew from another item.
    full = np.vstack([cost, np.zeros((n_items, n_items))])
    rows, cols = linear_sum_assignment(full)
    pairs = tuple(sorted((int(i), int(j)) for i, j in zip(rows, cols, strict=True)
                         if i < n_crews and cost[i, j] < INFEASIBLE / 2))
    served = {j for _i, j in pairs}
    waiting = tuple(j for j in range(n_items) if j not in served)
    travel = np.asarray(travel_h, dtype=float)
    prio = np.asarray(priority, dtype=float)
    return Solution(pairs, waiting, total_objective(travel, prio, pairs, hours_per_point=hours_per_point))
