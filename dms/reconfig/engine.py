"""Feeder reconfiguration: MILP on the linearised DistFlow, AC branch-exchange polish, switching sequence.

``reconfigure(net)`` works on any pandapower net; ``reconfigure_file(path)`` reads CIM (``.xml``/``.xml.gz``) or a
pandapower JSON; ``propose_for_state(state)`` is the live/study entry point on a :class:`NetworkState`, answering in
the model's switch names and checking the result with the project's three-phase flow as well.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandapower as pp

from dms.network_state import NetworkState
from dms.reconfig.errors import MeshedNetworkError, NetworkFileError, ReconfigError
from dms.reconfig.evaluate import AcEvaluator, FeederLoading, Operating
from dms.reconfig.milp import Objective, solve_milp
from dms.reconfig.problem import BranchKind, ReconfigProblem, SwitchableLines, build_problem
from dms.reconfig.search import Exchange, better, branch_exchange
from dms.reconfig.sequence import SwitchingStep, plan_sequence

__all__ = ["ALGORITHM", "DEFAULT_OPTIONS", "ReconfigOptions", "ReconfigResult", "StateProposal", "ThreePhaseVerdict",
           "load_network", "propose_for_state", "reconfigure", "reconfigure_file", "state_to_net"]

_log = logging.getLogger(__name__)
ALGORITHM = ("MILP (scipy/HiGHS) on the linearised DistFlow with spanning-tree radiality (single-commodity flow) "
             "and tangent-cut losses refined at the solution, then steepest branch exchange on the AC power flow")


@dataclass(frozen=True, slots=True)
class ReconfigOptions:
    objective: Objective = Objective.LOSSES
    v_low_pu: float = 0.95
    v_high_pu: float = 1.05
    loading_limit_pct: float = 100.0
    switchable_lines: SwitchableLines = SwitchableLines.AUTO
    milp_time_limit_s: float = 10.0
    polish: bool = True
    polish_time_limit_s: float = 60.0
    max_exchange_passes: int = 20
    # Switching has a cost (crew or wear, a transient loop): a configuration must improve the objective by at least
    # this share of its present value to be proposed.
    min_gain_pct: float = 0.5
    held: frozenset[str] = frozenset()  # switches that keep their state (tags, faulted or earthed sections)

    def __post_init__(self) -> None:
        if not 0 < self.v_low_pu < self.v_high_pu:
            raise ReconfigError(f"voltage band {self.v_low_pu}..{self.v_high_pu} pu is not a band")
        if self.loading_limit_pct <= 0 or self.milp_time_limit_s <= 0:
            raise ReconfigError("loading limit and MILP time limit must be positive")


DEFAULT_OPTIONS = ReconfigOptions()


@dataclass(frozen=True, slots=True)
class ThreePhaseVerdict:
    """The project's three-phase flow (``dms.flow_check``) on the present and the proposed state."""

    losses_before_kw: float
    losses_after_kw: float
    v_min_after_pu: float
    v_max_after_pu: float
    new_violations: tuple[str, ...]  # what the proposal adds: non-empty means it was refused


@dataclass(frozen=True, slots=True, eq=False)
class ReconfigResult:
    network: str
    objective: Objective
    algorithm: str
    before: Operating
    after: Operating
    milp: Operating | None  # the MILP's configuration before the polish (None if it was not feasible)
    to_open: tuple[str, ...]
    to_close: tuple[str, ...]
    sequence: tuple[SwitchingStep, ...]
    exchanges: tuple[Exchange, ...]  # moves the AC polish made after the MILP
    candidates: int
    milp_iterations: int
    milp_status: str
    milp_s: float
    polish_s: float
    sequence_s: float
    total_s: float
    ac_solves: int
    notes: tuple[str, ...]
    three_phase: ThreePhaseVerdict | None = None  # set on the live/CIM path (propose_for_state)

    @property
    def improved(self) -> bool:
        return bool(self.to_open or self.to_close)

    def to_dict(self) -> dict:
        def op(o: Operating | None) -> dict | None:
            if o is None:
                return None
            return {"open": sorted(o.open_set), "losses_kw": _r(o.losses_mw * 1e3), "v_min_pu": _r(o.v_min_pu, 5),
                    "v_max_pu": _r(o.v_max_pu, 5), "max_loading_pct": _r(o.max_loading_pct, 2),
                    "max_loading_element": o.max_loading_element, "unsupplied_mw": _r(o.unsupplied_mw, 6),
                    "feeders": [_feeder(f) for f in o.feeders], "violations": list(o.violations)}

        return {
            "network": self.network, "objective": self.objective.value, "algorithm": self.algorithm,
            "to_open": list(self.to_open), "to_close": list(self.to_close),
            "losses_before_kw": _r(self.before.losses_mw * 1e3), "losses_after_kw": _r(self.after.losses_mw * 1e3),
            "before": op(self.before), "after": op(self.after), "milp": op(self.milp),
            "sequence": [{"step": s.number, "pair": s.pair, "action": s.action.value, "element": s.element,
                          "switches": list(s.switches), "mode": s.mode.value, "radial": s.radial,
                          "losses_kw": _r(s.losses_mw * 1e3), "v_min_pu": _r(s.v_min_pu, 5),
                          "max_loading_pct": _r(s.max_loading_pct, 2), "interrupted_mw": _r(s.interrupted_mw, 6),
                          "violations": list(s.violations)} for s in self.sequence],
            "exchanges": [{"close": e.close, "open": e.open, "losses_kw": _r(e.losses_mw * 1e3)}
                          for e in self.exchanges],
            "candidates": self.candidates, "milp_iterations": self.milp_iterations, "milp_status": self.milp_status,
            "times_s": {"milp": _r(self.milp_s, 3), "polish": _r(self.polish_s, 3),
                        "sequence": _r(self.sequence_s, 3), "total": _r(self.total_s, 3)},
            "ac_solves": self.ac_solves, "notes": list(self.notes),
            "three_phase": None if self.three_phase is None else {
                "losses_before_kw": _r(self.three_phase.losses_before_kw),
                "losses_after_kw": _r(self.three_phase.losses_after_kw),
                "v_min_after_pu": _r(self.three_phase.v_min_after_pu, 5),
                "v_max_after_pu": _r(self.three_phase.v_max_after_pu, 5),
                "new_violations": list(self.three_phase.new_violations)}}


def _r(x: float, nd: int = 3) -> float | None:
    return round(float(x), nd) if math.isfinite(x) else None


def _feeder(f: FeederLoading) -> dict:
    return {"head": f.head, "p_mw": _r(f.p_mw, 4), "q_mvar": _r(f.q_mvar, 4), "s_mva": _r(f.s_mva, 4),
            "rating_mva": _r(f.rating_mva, 3), "loading_pct": _r(f.loading_pct, 2)}


def reconfigure(net: pp.pandapowerNet, options: ReconfigOptions = DEFAULT_OPTIONS, *, name: str | None = None,
                accept: Callable[[frozenset[str]], bool] | None = None,
                on_progress: Callable[[str], None] | None = None) -> ReconfigResult:
    """Best radial configuration of ``net`` for ``options.objective`` (``net`` itself is not changed). ``accept``
    (open set -> verdict) is a further check every configuration must pass before it is taken (the live path uses
    the three-phase flow)."""
    started = time.perf_counter()
    net = copy.deepcopy(net)
    problem = build_problem(net, switchable_lines=options.switchable_lines, name=name, held=options.held)
    notes = list(problem.notes)
    if not problem.candidates:
        raise ReconfigError(f"network {problem.name!r}: no switchable branch on any loop, nothing to reconfigure")
    ev = AcEvaluator(problem, v_low_pu=options.v_low_pu, v_high_pu=options.v_high_pu,
                     loading_limit_pct=options.loading_limit_pct)
    before = ev.present
    if not before.converged:
        notes.append("the present configuration's balanced power flow does not converge: any configuration that "
                     "converges within the limits is taken as better")
    present = problem.present_closed()
    _progress(on_progress, f"{problem.name}: {len(problem.candidates)} switchable branches, present losses "
                           f"{before.losses_mw * 1e3:.2f} kW; solving the MILP")
    finite = math.isfinite(before.v_min_pu) and math.isfinite(before.v_max_pu)

    # MILP: limits never tighter than what the present configuration already has
    limits = _branch_limits(problem, ev, options.loading_limit_pct)
    heads = _head_ratings(problem)
    v_low = min(options.v_low_pu, before.v_min_pu) - 0.01 if finite else options.v_low_pu - 0.01
    v_high = max(options.v_high_pu, before.v_max_pu) + 0.01 if finite else options.v_high_pu + 0.01
    t0 = time.perf_counter()
    milp_op: Operating | None = None
    start_closed, start_op = present, before
    try:
        res = solve_milp(problem, options.objective, v_low_pu=v_low, v_high_pu=v_high, limits_pu=limits,
                         head_ratings_pu=heads, time_limit_s=options.milp_time_limit_s)
        milp_s = time.perf_counter() - t0
        iterations, status = res.iterations, res.status
        if not res.ratings_constrained:
            notes.append("the linearised model could not meet the branch ratings either: MILP solved without them")
        if not res.voltage_constrained:
            notes.append("the linearised model could not meet the voltage band: MILP solved without it, the AC "
                         "check judges voltages")
        milp_op = ev.evaluate(res.closed)
        if not milp_op.feasible:
            notes.append(f"the MILP configuration breaks a limit in the AC check ({'; '.join(milp_op.violations)}); "
                         "branch exchange starts from the present configuration")
        elif better(milp_op, before, options.objective):
            if accept is None or accept(milp_op.open_set):
                start_closed, start_op = res.closed, milp_op
            else:
                notes.append("the MILP configuration fails the further check; branch exchange starts from the "
                             "present configuration")
    except MeshedNetworkError:
        raise
    except ReconfigError as exc:  # infeasible linear model, or out of time without a solution
        milp_s = time.perf_counter() - t0
        iterations, status = 0, str(exc)
        notes.append(f"MILP: {exc}; branch exchange starts from the present configuration")
    _progress(on_progress, f"MILP {milp_s:.1f} s ({status}); "
                           + (f"its configuration: {milp_op.losses_mw * 1e3:.2f} kW" if milp_op else "no solution"))

    t1 = time.perf_counter()
    exchanges: list[Exchange] = []
    final_closed, final_op = start_closed, start_op
    if options.polish:
        final_closed, final_op, exchanges = branch_exchange(
            ev, start_closed, start_op, options.objective, max_passes=options.max_exchange_passes,
            deadline=time.perf_counter() + options.polish_time_limit_s, accept=accept, on_progress=on_progress)
    polish_s = time.perf_counter() - t1
    if not (final_op.feasible and better(final_op, before, options.objective)):
        final_closed, final_op = present, before
        notes.append("the present configuration is the best found")
    elif before.converged and (gain := _gain_pct(before, final_op, options.objective)) < options.min_gain_pct:
        notes.append(f"the best configuration found (open {', '.join(sorted(final_op.open_set))}) "
                     + (f"improves the {options.objective.value} objective by only {gain:.2f} % (< "
                        f"{options.min_gain_pct:g} %): not worth the switching" if gain > 0 else
                        f"supplies more load but does not improve the {options.objective.value} objective")
                     + "; the present configuration is kept")
        final_closed, final_op = present, before
    t2 = time.perf_counter()
    sequence = plan_sequence(ev, present, final_closed) if not np.array_equal(final_closed, present) else ()
    sequence_s = time.perf_counter() - t2
    ev.restore()
    to_open = tuple(sorted(problem.open_set(final_closed) - problem.open_set(present)))
    to_close = tuple(sorted(problem.open_set(present) - problem.open_set(final_closed)))
    if any(s.mode.value == "break_before_make" for s in sequence):
        notes.append("a break-before-make step interrupts a section briefly: two sources are never paralleled")
    return ReconfigResult(problem.name, options.objective, ALGORITHM, before, final_op, milp_op, to_open, to_close,
                          sequence, tuple(exchanges), len(problem.candidates), iterations, status, milp_s, polish_s,
                          sequence_s, time.perf_counter() - started, ev.evaluations, tuple(notes))


def _gain_pct(before: Operating, after: Operating, objective: Objective) -> float:
    if objective is Objective.LOSSES:
        old, new = before.losses_mw, after.losses_mw
    else:
        old, new = before.max_feeder_measure, after.max_feeder_measure
    return 100.0 * (old - new) / old if old > 0 else 0.0


def _progress(on_progress: Callable[[str], None] | None, msg: str) -> None:
    _log.info(msg)
    if on_progress:
        on_progress(msg)


def _branch_limits(problem: ReconfigProblem, ev: AcEvaluator, limit_pct: float) -> np.ndarray:
    """Apparent-power limit per branch in per unit: the rating, or the present flow when that is already above."""
    net = ev.net
    ev.evaluate(problem.present_closed(), judge=False)  # the present flows in the net's result tables
    out = np.full(len(problem.branches), np.inf)
    for k, br in enumerate(problem.branches):
        if not (math.isfinite(br.rating_mva) and br.rating_mva > 0):
            continue
        present = 0.0
        if br.kind is BranchKind.LINE and br.row in net.res_line.index:
            present = float(np.nan_to_num(np.hypot(net.res_line.p_from_mw.at[br.row], net.res_line.q_from_mvar.at[
                br.row])))
        elif br.kind is BranchKind.TRANSFORMER and br.row >= 0 and br.row in net.res_trafo.index:
            present = float(np.nan_to_num(np.hypot(net.res_trafo.p_hv_mw.at[br.row],
                                                    net.res_trafo.q_hv_mvar.at[br.row])))
        elif br.kind is BranchKind.SWITCH:
            continue  # bus-bus switch flows are not in pandapower's results: checked by the three-phase flow
        out[k] = max(br.rating_mva * limit_pct / 100.0, present * 1.02) / problem.base_mva
    return out


def _head_ratings(problem: ReconfigProblem) -> dict[int, float]:
    """Feeder-head branches -> rating in per unit (1 MVA when unknown: the balance then compares MVA)."""
    out = {}
    for k, br in enumerate(problem.branches):
        a, b = br.from_bus in problem.substation, br.to_bus in problem.substation
        if a != b:
            rating = br.rating_mva if math.isfinite(br.rating_mva) and br.rating_mva > 0 else 1.0
            out[k] = rating / problem.base_mva
    return out


# ---------------------------------------------------------------------------------------------- files and states
def load_network(path: str | Path, *, frequency_hz: float | None = None) -> tuple[pp.pandapowerNet, str]:
    """A pandapower JSON or a CIM file (``.xml``, ``.xml.gz``) as a pandapower net, with a display name."""
    path = Path(path)
    if not path.is_file():
        raise NetworkFileError(f"{path}: no such file")
    name = path.name
    if name.endswith(".json"):
        try:
            net = pp.from_json(str(path))
        except Exception as exc:  # pandapower raises what json/pandas raise
            raise NetworkFileError(f"{path}: not a pandapower JSON network ({exc})") from exc
        return net, str(net.name or path.stem)
    if name.endswith((".xml", ".xml.gz")):
        from models.cim import load_cim
        from models.errors import ModelError

        try:
            model = load_cim(path)
        except (ModelError, OSError, ValueError) as exc:
            raise NetworkFileError(f"{path}: cannot read the CIM model ({exc})") from exc
        f_hz = frequency_hz or _guess_frequency(model.name, path)
        state = NetworkState.from_model(model, frequency_hz=f_hz)
        return state_to_net(state), model.name
    raise NetworkFileError(f"{path}: expected a CIM file (.xml, .xml.gz) or a pandapower JSON (.json)")


def _guess_frequency(model_name: str, path: Path) -> float:
    from models.sample_network import F_HZ, NAME, SAMPLE_FILE_NAME

    return F_HZ if model_name == NAME or path.name.startswith(SAMPLE_FILE_NAME) else 60.0


def state_to_net(state: NetworkState) -> pp.pandapowerNet:
    """The state's model as a pandapower net, with the model's switch kinds and ratings where it has them (the
    converter's placeholder line rating is removed, so unrated lines are not judged on it)."""
    from models.network import SwitchKind
    from models.pandapower_net import to_pandapower

    model = state.model
    net = to_pandapower(model, f_hz=state.frequency_hz).net
    kinds = {SwitchKind.BREAKER: "CB", SwitchKind.RECLOSER: "CB", SwitchKind.LOAD_BREAK_SWITCH: "LBS",
             SwitchKind.SECTIONALISER: "LBS", SwitchKind.SWITCH: "LBS", SwitchKind.DISCONNECTOR: "DS",
             SwitchKind.FUSE: "DS", SwitchKind.JUMPER: "DS"}
    net.switch["type"] = [kinds.get(sw.kind, "DS") for sw in model.switches]
    net.switch["in_ka"] = [sw.rated_current_a / 1e3 if sw.rated_current_a > 0 else np.nan for sw in model.switches]
    net.line["max_i_ka"] = [float(getattr(ln, "rated_current_a", math.nan)) / 1e3 for ln in model.lines]
    return net


@dataclass(frozen=True, slots=True, eq=False)
class StateProposal:
    """A reconfiguration of a live or study state, in the model's switch names, checked by both flows."""

    result: ReconfigResult
    target: NetworkState | None  # the state with the proposal applied (None when nothing changes)
    three_phase_before: object  # dms.flow_check.FlowCheck
    three_phase_after: object | None
    new_violations: tuple = field(default=())  # of the three-phase check: non-empty means do not execute
    state_label: str = ""  # the reconfigured state's label ("real time 12:00:03", "study 3")

    @property
    def acceptable(self) -> bool:
        return self.result.improved and not self.new_violations


def propose_for_state(state: NetworkState, options: ReconfigOptions = DEFAULT_OPTIONS,
                      on_progress: Callable[[str], None] | None = None) -> StateProposal:
    """Reconfigure ``state`` (its model with the state's switch positions and loads); the proposal names the model's
    switches and is checked by the three-phase flow (``dms.flow_check``) for what it adds."""
    from dms.flow_check import VoltageBand, check_flow, new_violations

    net = state_to_net(state)
    band_kw = {"loading_limit_pct": options.loading_limit_pct,
               "band": VoltageBand(options.v_low_pu, options.v_high_pu)}
    before = check_flow(state, **band_kw)
    checked: dict[frozenset[str], object] = {}

    def target_of(open_set: frozenset[str], candidates: frozenset[str]) -> NetworkState:
        # switchable branches take the proposal's position; every other switch keeps its own
        return state.with_switches({n: n not in open_set for n in candidates})

    candidates: frozenset[str] = frozenset()

    def three_phase_ok(open_set: frozenset[str]) -> bool:
        if open_set not in checked:
            after = check_flow(target_of(open_set, candidates), **band_kw)
            checked[open_set] = (after, new_violations(before, after))
        return not checked[open_set][1]

    problem_names = build_problem(net, switchable_lines=options.switchable_lines, held=options.held).by_name
    candidates = frozenset(n for n in problem_names if n in {s.name for s in state.base.switches})
    result = reconfigure(net, options, name=state.base.name, accept=three_phase_ok, on_progress=on_progress)
    refused = [(o, c[1]) for o, c in checked.items() if c[1]]
    if refused:
        text = "; ".join(f"open {', '.join(sorted(o)) or '-'}: {added[0].text()}" for o, added in refused[:3])
        result = dataclasses.replace(result, notes=(*result.notes, f"the three-phase check refused {len(refused)} "
                                                                    f"configuration(s) ({text})"))
    if not result.improved:
        verdict = ThreePhaseVerdict(before.loss_p_w / 1e3, before.loss_p_w / 1e3, before.v_min_pu, before.v_max_pu, ())
        return StateProposal(dataclasses.replace(result, three_phase=verdict), None, before, None, (), state.label)
    target = target_of(result.after.open_set, candidates)
    if result.after.open_set not in checked:
        three_phase_ok(result.after.open_set)
    after, added = checked[result.after.open_set]
    verdict = ThreePhaseVerdict(before.loss_p_w / 1e3, after.loss_p_w / 1e3, after.v_min_pu, after.v_max_pu,
                                tuple(v.text() for v in added))
    return StateProposal(dataclasses.replace(result, three_phase=verdict), target, before, after, added,
                         state.label)


def reconfigure_file(path: str | Path, options: ReconfigOptions = DEFAULT_OPTIONS, *,
                     frequency_hz: float | None = None,
                     on_progress: Callable[[str], None] | None = None) -> ReconfigResult:
    """:func:`reconfigure` of a pandapower JSON file, or :func:`propose_for_state` of a CIM file (``.xml``,
    ``.xml.gz``: checked by the three-phase flow as well)."""
    path = Path(path)
    if path.name.endswith((".xml", ".xml.gz")) and path.is_file():
        from models.cim import load_cim
        from models.errors import ModelError

        try:
            model = load_cim(path)
        except (ModelError, OSError, ValueError) as exc:
            raise NetworkFileError(f"{path}: cannot read the CIM model ({exc})") from exc
        state = NetworkState.from_model(model, label=path.name,
                                        frequency_hz=frequency_hz or _guess_frequency(model.name, path))
        return propose_for_state(state, options, on_progress=on_progress).result
    net, name = load_network(path, frequency_hz=frequency_hz)
    return reconfigure(net, options, name=name, on_progress=on_progress)
