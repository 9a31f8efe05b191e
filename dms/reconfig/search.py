"""Branch exchange with the exact AC power flow: close one open switchable branch, open one on the loop it makes.

Steepest descent: every exchange of the neighbourhood is solved, the best feasible improvement is taken, until none
improves. Started from the MILP's configuration it corrects what the linearised model got wrong; started from the
present one it is the classical heuristic of Civanlar/Baran & Wu on its own (a local optimum).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dms.reconfig.evaluate import AcEvaluator, Operating, Tree
from dms.reconfig.milp import Objective
from dms.reconfig.problem import ReconfigProblem

__all__ = ["Exchange", "branch_exchange", "better"]

_log = logging.getLogger(__name__)
_LOSS_TOLERANCE_MW = 1e-6
_BALANCE_TOLERANCE = 1e-3  # relative, on the largest feeder measure
# An exchange whose linearised estimate is worse than the present configuration's by more than this share is not
# solved by the AC power flow (the estimate errs by far less than that near the optimum).
_SCREEN_MARGIN = 0.02


@dataclass(frozen=True, slots=True)
class Exchange:
    close: str
    open: str
    losses_mw: float
    max_feeder: float


def better(a: Operating, b: Operating, objective: Objective) -> bool:
    """``a`` strictly better than ``b`` (both feasible) for ``objective``; a solved state beats an unsolved one."""
    if not b.converged:
        return a.converged
    if not a.converged:
        return False
    if abs(a.unsupplied_mw - b.unsupplied_mw) > _LOSS_TOLERANCE_MW:  # supplying customers comes before losses
        return a.unsupplied_mw < b.unsupplied_mw
    if objective is Objective.LOSSES:
        return a.losses_mw < b.losses_mw - _LOSS_TOLERANCE_MW
    ma, mb = a.max_feeder_measure, b.max_feeder_measure
    if ma < mb - _BALANCE_TOLERANCE * max(mb, 1e-9):
        return True
    return ma <= mb + _BALANCE_TOLERANCE * max(mb, 1e-9) and a.losses_mw < b.losses_mw - _LOSS_TOLERANCE_MW


def branch_exchange(ev: AcEvaluator, closed: np.ndarray, start: Operating, objective: Objective, *,
                    max_passes: int = 20, deadline: float = math.inf,
                    accept: Callable[[frozenset[str]], bool] | None = None,
                    on_progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, Operating, list[Exchange]]:
    """Improve ``closed`` (radial) by exchanges; returns the configuration, its AC state and the exchanges made.
    ``accept`` (an open set -> verdict, e.g. the three-phase check of a live state) vets the move about to be taken;
    a refused move gives way to the next best."""
    prob = ev.problem
    dead = set(prob.unsupplied_buses)
    closed = closed.copy()
    current = start
    moves: list[Exchange] = []
    for n_pass in range(max_passes):
        tree = Tree(prob, closed)
        improving: list[tuple[Operating, int, int]] = []
        ties = [k for k, br in enumerate(prob.branches)
                if br.switchable and not closed[k] and br.from_bus not in dead and br.to_bus not in dead]
        trials: list[tuple[float, int, int]] = []
        here = _estimate(prob, closed, objective)
        for c in ties:
            br = prob.branches[c]
            if (br.from_bus in tree.depth) != (br.to_bus in tree.depth):  # onto a dead area: close only
                trials.append((-math.inf, c, -1))
                continue
            for p in tree.path(br.from_bus, br.to_bus):
                if prob.branches[p].switchable:
                    trial = closed.copy()
                    trial[c], trial[p] = True, False
                    trials.append((_estimate(prob, trial, objective), c, p))
        # Screening by the DistFlow estimate: only exchanges the linear model does not find clearly worse are
        # solved by the AC power flow, best estimate first.
        trials.sort(key=lambda t: t[0])
        for est, c, p in trials:
            if est > here + _SCREEN_MARGIN * abs(here) + 1e-12 or time.perf_counter() > deadline:
                break
            trial = closed.copy()
            trial[c] = True
            if p >= 0:
                trial[p] = False
            op = ev.evaluate(trial)
            if op.feasible and better(op, current, objective):
                improving.append((op, c, p))
        chosen = None
        for op, c, p in _ranked(improving, objective):
            if accept is None or accept(op.open_set):
                chosen = (op, c, p)
                break
        if chosen is None:
            break
        op, c, p = chosen
        closed[c] = True
        if p >= 0:
            closed[p] = False
        current = op
        opened = prob.branches[p].name if p >= 0 else ""
        moves.append(Exchange(prob.branches[c].name, opened, op.losses_mw, op.max_feeder_measure))
        msg = (f"exchange {n_pass + 1}: close {prob.branches[c].name}, open {opened or '-'}: losses "
               f"{op.losses_mw * 1e3:.2f} kW ({ev.evaluations} AC solves)")
        _log.info(msg)
        if on_progress:
            on_progress(msg)
        if time.perf_counter() > deadline:
            break
    return closed, current, moves


def _ranked(options: list[tuple[Operating, int, int]], objective: Objective) -> list[tuple[Operating, int, int]]:
    """Best first: a selection sort by :func:`better` (the lists are short)."""
    rest = list(options)
    out = []
    while rest:
        best = rest[0]
        for o in rest[1:]:
            if better(o[0], best[0], objective):
                best = o
        out.append(best)
        rest.remove(best)
    return out


def _estimate(prob: ReconfigProblem, closed: np.ndarray, objective: Objective) -> float:
    """Linearised DistFlow figure of a radial configuration: sum r (P^2 + Q^2) (losses) or the largest feeder-head
    apparent power over its rating (balance), with flows summed up the tree. ``inf`` when a bus is cut off."""
    tree = Tree(prob, closed)
    if tree.looped:
        return math.inf
    p = prob.load_p.copy()
    q = prob.load_q.copy()
    loss = 0.0
    worst = 0.0
    for bus in sorted((b for b in tree.parent), key=lambda b: -tree.depth[b]):
        parent, k = tree.parent[bus]
        if k < 0:
            continue
        br = prob.branches[k]
        loss += br.r_pu * (p[bus] ** 2 + q[bus] ** 2)
        if objective is Objective.BALANCE and (br.from_bus in prob.substation) != (br.to_bus in prob.substation):
            rating = br.rating_mva / prob.base_mva if math.isfinite(br.rating_mva) and br.rating_mva > 0 else 1.0
            worst = max(worst, math.hypot(p[bus], q[bus]) / rating)
        p[parent] += p[bus]
        q[parent] += q[bus]
    supplied = len(tree.parent)
    if supplied < prob.bus_count - len(prob.unsupplied_buses):
        return math.inf
    return loss if objective is Objective.LOSSES else worst + 1e-3 * loss
