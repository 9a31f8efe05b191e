"""A safe switching sequence from the present open set to the target one.

Both configurations are spanning trees of the same buses, so each branch to close makes one loop (or one path
between two sources) with the present tree, and on it lies a branch to open (the exchange property of spanning
trees): the sequence is a series of such pairs, each leaving the network radial. A pair whose loop stays under one
transformer (no transformer between voltage levels and no second source on the path) is done make-before-break:
close first, so nobody is interrupted, the transient loop checked by power flow for overloads. A pair that would
parallel two sources or two transformers is done break-before-make: open first (the section between is briefly
interrupted, said in the step), then close. Every intermediate state is solved by the AC power flow; among the
pairs available at each point the one that keeps every state within limits is taken, make-before-break first, then
the lowest losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from dms.reconfig.evaluate import AcEvaluator, Operating, Tree
from dms.reconfig.problem import ActuatorKind, BranchKind, ReconfigProblem

__all__ = ["StepAction", "SwitchingStep", "TransferMode", "plan_sequence"]

_LEVEL_RATIO = 1.1  # a transformer between buses whose nominal voltages differ by more separates sources


class StepAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"


class TransferMode(StrEnum):
    MAKE_BEFORE_BREAK = "make_before_break"  # close the tie first: a transient loop of one source, no interruption
    BREAK_BEFORE_MAKE = "break_before_make"  # open first: a short interruption, never two sources in parallel
    ENERGISE = "energise"  # closing onto a dead area: nothing to open


@dataclass(frozen=True, slots=True)
class SwitchingStep:
    number: int
    pair: int  # steps of one exchange share it
    action: StepAction
    element: str  # the switchable branch (switch name, or line name for a line switch / tie line)
    switches: tuple[str, ...]  # the devices operated (pandapower switch names, or the line for a tie line)
    mode: TransferMode
    radial: bool  # False in the transient loop of a make-before-break
    losses_mw: float  # after the step
    v_min_pu: float
    max_loading_pct: float
    interrupted_mw: float  # load left without supply after the step (break-before-make)
    violations: tuple[str, ...]  # of the state after the step (empty when within limits)


def _devices(problem: ReconfigProblem, k: int, action: StepAction) -> tuple[str, ...]:
    br = problem.branches[k]
    act = br.actuator
    if act is None or act.kind is ActuatorKind.LINE_SERVICE:
        return (br.name,)
    sw = problem.net.switch
    rows = act.switch_rows if action is StepAction.CLOSE else act.switch_rows[:1]
    out = []
    for r in rows:
        name = sw.name.at[r]
        out.append(str(name) if isinstance(name, str) and name else f"switch {r}")
    if action is StepAction.CLOSE:  # only the ones that are open need operating
        out = [n for n, r in zip(out, rows, strict=True) if not bool(sw.closed.at[r])] or out
    return tuple(out)


def _parallels_sources(problem: ReconfigProblem, tree: Tree, a: int, b: int) -> bool:
    if tree.source_of.get(a) != tree.source_of.get(b):
        return True
    vn = problem.bus_vn_kv
    for k in tree.path(a, b):
        br = problem.branches[k]
        if br.kind is BranchKind.TRANSFORMER and br.from_bus >= 0 and br.to_bus >= 0:
            lo, hi = sorted((vn[br.from_bus], vn[br.to_bus]))
            if lo > 0 and hi / lo > _LEVEL_RATIO:
                return True
    return False


def plan_sequence(ev: AcEvaluator, present: np.ndarray, target: np.ndarray) -> tuple[SwitchingStep, ...]:
    """Steps from ``present`` to ``target`` (closed flags per problem branch). Leaves the net in ``present``."""
    prob = ev.problem
    cur = present.copy()
    to_close = [k for k in range(len(cur)) if target[k] and not cur[k]]
    to_open = [k for k in range(len(cur)) if cur[k] and not target[k]]
    steps: list[SwitchingStep] = []
    pair = 0

    def add(k: int, action: StepAction, mode: TransferMode, op: Operating, radial: bool) -> None:
        steps.append(SwitchingStep(len(steps) + 1, pair, action, prob.branches[k].name, _devices(prob, k, action),
                                   mode, radial, op.losses_mw, op.v_min_pu, op.max_loading_pct, max(op.unsupplied_mw
                                   - np.nan_to_num(ev.present.unsupplied_mw), 0.0) if op.converged else math.nan,
                                   op.violations))

    while to_close:
        tree = Tree(prob, cur)
        options = []
        for c in to_close:
            br = prob.branches[c]
            if br.from_bus not in tree.depth or br.to_bus not in tree.depth:
                options.append((c, None))  # energises a dead area
                continue
            for p in tree.path(br.from_bus, br.to_bus):  # through the root between two sources
                if p in to_open:
                    options.append((c, p))
        scored = []
        for c, p in options:
            br = prob.branches[c]
            if p is None:
                trial = cur.copy()
                trial[c] = True
                after = ev.evaluate(trial)
                scored.append((not after.feasible, 0, after.losses_mw, c, p, TransferMode.ENERGISE, None, after))
                continue
            mbb = not _parallels_sources(prob, tree, br.from_bus, br.to_bus)
            first = cur.copy()
            if mbb:
                first[c] = True
            else:
                first[p] = False
            transient = ev.evaluate(first)
            final = first.copy()
            final[c], final[p] = True, False
            after = ev.evaluate(final)
            bad = not (transient.feasible or (not mbb and transient.converged and _only_interruption(transient)))
            scored.append((bad or not after.feasible, 0 if mbb else 1, after.losses_mw, c, p,
                           TransferMode.MAKE_BEFORE_BREAK if mbb else TransferMode.BREAK_BEFORE_MAKE, transient,
                           after))
        if not scored:
            break  # nothing pairs up (cannot happen for two spanning trees of the same buses)
        scored.sort(key=lambda s: (s[0], s[1], s[2]))
        _bad, _mbb, _loss, c, p, mode, transient, after = scored[0]
        pair += 1
        if mode is TransferMode.ENERGISE:
            add(c, StepAction.CLOSE, mode, after, True)
        elif mode is TransferMode.MAKE_BEFORE_BREAK:
            add(c, StepAction.CLOSE, mode, transient, False)
            add(p, StepAction.OPEN, mode, after, True)
        else:
            add(p, StepAction.OPEN, mode, transient, True)
            add(c, StepAction.CLOSE, mode, after, True)
        cur[c] = True
        to_close.remove(c)
        if p is not None:
            cur[p] = False
            to_open.remove(p)
    for p in list(to_open):  # only when the target leaves something open the present supplies (not radial-equal)
        pair += 1
        cur[p] = False
        add(p, StepAction.OPEN, TransferMode.BREAK_BEFORE_MAKE, ev.evaluate(cur), True)
    ev.apply(present)
    return tuple(steps)


def _only_interruption(op: Operating) -> bool:
    """A break-before-make's open state: the load it cuts off is expected, only other violations count."""
    return all(v.endswith("of load unsupplied") for v in op.violations)
