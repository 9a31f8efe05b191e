"""Measurement values produced by the project's three-phase flow for a station's bound points (tests, benchmark):
what each VOLTAGE_KV / P_KW / Q_KVAR / CURRENT_A point would read, as an RTDB-like snapshot."""

from __future__ import annotations

import numpy as np

from models.config import StationConfig
from models.measurement_points import Quantity
from models.network import NetworkModel, Phase, single_phases
from models.phase_model import build_phase_model
from models.points import Quality
from models.three_phase_flow import ThreePhaseFlow
from models.three_phase_injections import build_injections
from scada.changes import CHANGE_DTYPE

__all__ = ["flow_point_values", "snapshot_of"]

_PHASE_NAME = {"A": "A", "B": "B", "C": "C", "S1": "s1", "S2": "s2"}


def flow_point_values(config: StationConfig, model: NetworkModel, flow: ThreePhaseFlow, *, noise_pct: float = 0.0,
                      seed: int = 0) -> dict[int, float]:
    """Point id -> value the flow of ``model`` gives it (Gaussian noise of ``noise_pct`` % of the value when asked);
    ``model`` must be the one the flow solved (its loads give the load points)."""
    rng = np.random.default_rng(seed)
    nodes = {(str(r["bus"]).lower(), str(r["phase"])): float(r["v_v"]) for r in flow.nodes}
    branches = {(str(r["element"]), str(r["bus"]).lower(), str(r["phase"])): (float(r["p_w"]), float(r["q_var"]),
                                                                             float(r["i_a"]))
                for r in flow.branches}
    loads = _load_phase_powers(model, flow)
    load_index = {ld.mrid: i for i, ld in enumerate(model.loads)}
    out: dict[int, float] = {}
    for p in config.points:
        b = config.binding(p)
        if b is None or b.quantity not in (Quantity.VOLTAGE_KV, Quantity.P_KW, Quantity.Q_KVAR, Quantity.CURRENT_A):
            continue
        phases = single_phases(b.phase)
        if len(phases) != 1 or b.bus is None:
            continue
        bus = model.buses[b.bus].name.lower()
        ph = _PHASE_NAME[phases[0].name]
        if b.quantity is Quantity.VOLTAGE_KV:
            value = nodes.get((bus, ph), 0.0) / 1e3
        elif b.element_mrid in load_index:
            pq = loads.get((load_index[b.element_mrid], phases[0].name), 0j)
            value = {Quantity.P_KW: pq.real / 1e3, Quantity.Q_KVAR: pq.imag / 1e3}.get(b.quantity, 0.0)
        else:
            p_w, q_var, i_a = branches.get((b.element_name, bus, ph), (0.0, 0.0, 0.0))
            value = {Quantity.P_KW: p_w / 1e3, Quantity.Q_KVAR: q_var / 1e3, Quantity.CURRENT_A: i_a}[b.quantity]
        out[p.id] = value * (1.0 + rng.normal(0.0, noise_pct / 100.0)) if noise_pct else value
    return out


def _load_phase_powers(model: NetworkModel, flow: ThreePhaseFlow) -> dict[tuple[int, str], complex]:
    """(load index, phase name) -> power drawn on that phase at the flow's voltages (the load model's own)."""
    pm = build_phase_model(model)
    idx = {str(n): i for i, n in enumerate(flow.nodes["node"])}
    rows = flow.nodes[[idx[n] for n in pm.node_names]]
    v = rows["v_v"] * np.exp(1j * np.deg2rad(np.nan_to_num(rows["angle_deg"])))
    inj = build_injections(model, pm, include_ders=False)
    s = inj.branch_power_va(v)
    out: dict[tuple[int, str], complex] = {}
    for row, power in zip(inj.table, s, strict=True):
        key = (int(row["owner"]), Phase(int(pm.node_phase[row["a"]])).name)
        out[key] = out.get(key, 0j) + complex(power)
    return out


def snapshot_of(values: dict[int, float], *, quality: dict[int, int] | None = None) -> np.ndarray:
    """CHANGE_DTYPE rows (as ``Rtdb.snapshot`` returns) for the given point values, GOOD unless ``quality`` says."""
    ids = sorted(values)
    snap = np.zeros(len(ids), dtype=CHANGE_DTYPE)
    snap["point"] = ids
    snap["value"] = [values[i] for i in ids]
    q = quality or {}
    snap["quality"] = [q.get(i, int(Quality.GOOD)) for i in ids]
    snap["source_time_ms"] = -1
    return snap
