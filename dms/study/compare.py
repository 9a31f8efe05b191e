"""A study case beside real time: what differs in the switching state, the loads and the power flow."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dms.flow_check import FlowCheck, check_flow
from dms.network_state import NetworkState

__all__ = ["BusDifference", "StudyComparison", "compare_states"]


@dataclass(frozen=True, slots=True)
class BusDifference:
    bus: str
    phase: str
    study_v_pu: float
    real_time_v_pu: float  # NaN: de-energised in real time


@dataclass(frozen=True, slots=True)
class StudyComparison:
    switches: tuple[tuple[str, bool, bool], ...]  # (switch, closed in the study, closed in real time)
    study_load_p_w: float
    real_time_load_p_w: float
    study_loss_p_w: float
    real_time_loss_p_w: float
    study_v_min_pu: float
    real_time_v_min_pu: float
    study_max_loading_pct: float
    real_time_max_loading_pct: float
    study_customers_off: int
    real_time_customers_off: int
    largest_voltage_differences: tuple[BusDifference, ...]  # by |difference|, at most 10
    study_check: str
    real_time_check: str


def compare_states(study: NetworkState, real_time: NetworkState, *, study_check: FlowCheck | None = None
                   ) -> StudyComparison:
    """Both states through the same three-phase flow; the buses whose voltages differ most are listed."""
    s = study_check or check_flow(study)
    r = check_flow(real_time)
    closed_r = {sw.name: bool(c) for sw, c in zip(real_time.base.switches, real_time.switch_closed, strict=True)}
    switches = tuple((sw.name, bool(c), closed_r[sw.name])
                     for sw, c in zip(study.base.switches, study.switch_closed, strict=True)
                     if sw.name in closed_r and bool(c) != closed_r[sw.name])
    diffs: list[BusDifference] = []
    if s.flow is not None and r.flow is not None:
        rt = {(str(n["bus"]), str(n["phase"])): (float(n["v_pu"]) if n["energised"] else math.nan)
              for n in r.flow.nodes}
        rows = [(str(n["bus"]), str(n["phase"]), float(n["v_pu"]) if n["energised"] else math.nan)
                for n in s.flow.nodes]
        scored = []
        for bus, phase, v in rows:
            v_rt = rt.get((bus, phase), math.nan)
            gap = abs(np.nan_to_num(v) - np.nan_to_num(v_rt))
            if gap > 1e-4:
                scored.append((gap, BusDifference(bus, phase, v, v_rt)))
        scored.sort(key=lambda x: -x[0])
        diffs = [d for _, d in scored[:10]]
    customers = study.customers_per_load()
    off_s = int(customers[list(s.deenergised_loads)].sum()) if s.deenergised_loads else 0
    customers_r = real_time.customers_per_load()
    off_r = int(customers_r[list(r.deenergised_loads)].sum()) if r.deenergised_loads else 0
    return StudyComparison(switches, s.load_p_w, r.load_p_w, s.loss_p_w, r.loss_p_w, s.v_min_pu, r.v_min_pu,
                           s.max_loading_pct, r.max_loading_pct, off_s, off_r, tuple(diffs), s.summary(),
                           r.summary())
