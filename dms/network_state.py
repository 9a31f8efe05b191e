"""The operating state of a network model that every DMS application works on: switch positions, loads, tap
positions, capacitor sections and DER output over one ``NetworkModel``.

Real time builds it from the live topology and the RTDB (or the state estimate); a study case holds its own copy
and edits it. Applications never change a state in place: ``with_*`` returns a new one, so a FLISR plan, a study
and real time can share one base model. ``model`` is the base with the state applied (switch ``open`` flags, load
P/Q, tap steps, capacitor sections, DER P/Q), which is what the power flows (``models.three_phase_flow``,
``models.pandapower_net``) take.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dms.errors import DmsError
from models.network import Der, Load, NetworkModel

__all__ = ["NetworkState", "UnknownNetworkElementError", "customers_per_load"]


class UnknownNetworkElementError(DmsError, KeyError):
    """A state edit names a switch, load, tap changer, capacitor or DER the model does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _frozen(values: np.ndarray, dtype: type) -> np.ndarray:
    out = np.array(values, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class NetworkState:
    """Arrays follow the base model's element tuples (``switch_closed[i]`` is ``base.switches[i]``)."""

    base: NetworkModel
    switch_closed: np.ndarray  # bool
    load_p_w: np.ndarray
    load_q_var: np.ndarray
    tap_step: np.ndarray  # per base.tap_changers
    capacitor_sections: np.ndarray  # per base.capacitors
    der_p_w: np.ndarray  # per base.ders, generation positive
    der_q_var: np.ndarray
    label: str = "model"  # where the state came from: "model", "real time @ ...", "study 3"
    frequency_hz: float = 60.0  # the model does not carry it: 50 for the embedded sample network

    def __post_init__(self) -> None:
        m = self.base
        for name, arr, n, dtype in (("switch_closed", self.switch_closed, len(m.switches), bool),
                                    ("load_p_w", self.load_p_w, len(m.loads), float),
                                    ("load_q_var", self.load_q_var, len(m.loads), float),
                                    ("tap_step", self.tap_step, len(m.tap_changers), float),
                                    ("capacitor_sections", self.capacitor_sections, len(m.capacitors), float),
                                    ("der_p_w", self.der_p_w, len(m.ders), float),
                                    ("der_q_var", self.der_q_var, len(m.ders), float)):
            if np.shape(arr) != (n,):
                raise DmsError(f"network state of {m.name!r}: {name} has shape {np.shape(arr)}, the model has {n}")
            object.__setattr__(self, name, _frozen(arr, dtype))

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_model(cls, model: NetworkModel, *, label: str = "model", frequency_hz: float = 60.0) -> NetworkState:
        """The state the model file describes (switch ``open`` flags, nominal loads, present taps)."""
        return cls(
            model,
            np.array([not s.open for s in model.switches], dtype=bool),
            np.array([ld.p_w for ld in model.loads], dtype=float),
            np.array([ld.q_var for ld in model.loads], dtype=float),
            np.array([t.step for t in model.tap_changers], dtype=float),
            np.array([c.sections for c in model.capacitors], dtype=float),
            np.array([d.p_w for d in model.ders], dtype=float),
            np.array([d.q_var for d in model.ders], dtype=float),
            label,
            frequency_hz,
        )

    def replace(self, **changes: object) -> NetworkState:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ lookups
    @cached_property
    def _index(self) -> dict[str, dict[str, int]]:
        m = self.base
        out: dict[str, dict[str, int]] = {}
        for kind, items in (("switch", m.switches), ("load", m.loads), ("tap changer", m.tap_changers),
                            ("capacitor", m.capacitors), ("DER", m.ders), ("line", m.lines)):
            table: dict[str, int] = {}
            for i, item in enumerate(items):
                table.setdefault(item.name, i)
                table[item.mrid] = i
            out[kind] = table
        return out

    def index_of(self, kind: str, name_or_mrid: str) -> int:
        """Index of a ``switch``, ``load``, ``tap changer``, ``capacitor``, ``DER`` or ``line`` by name or mRID."""
        try:
            return self._index[kind][name_or_mrid]
        except KeyError:
            raise UnknownNetworkElementError(
                f"network {self.base.name!r} has no {kind} named {name_or_mrid!r}") from None

    def switch_index(self, name_or_mrid: str) -> int:
        return self.index_of("switch", name_or_mrid)

    def closed(self, switch: str) -> bool:
        return bool(self.switch_closed[self.switch_index(switch)])

    def customers_per_load(self) -> np.ndarray:
        """Customers behind each load: its usage points, or the load's own count when the model has none."""
        return customers_per_load(self.base)

    def open_switches(self) -> tuple[str, ...]:
        return tuple(s.name for s, c in zip(self.base.switches, self.switch_closed, strict=True) if not c)

    # ------------------------------------------------------------------------------------------ edits
    def with_switches(self, changes: Mapping[str, bool]) -> NetworkState:
        """Switches (name or mRID) set closed (True) or open (False)."""
        closed = self.switch_closed.copy()
        for name, state in changes.items():
            closed[self.switch_index(name)] = bool(state)
        return self.replace(switch_closed=closed)

    def with_switch_array(self, closed: np.ndarray) -> NetworkState:
        return self.replace(switch_closed=np.asarray(closed, dtype=bool))

    def with_loads(self, p_w: np.ndarray, q_var: np.ndarray) -> NetworkState:
        return self.replace(load_p_w=np.asarray(p_w, dtype=float), load_q_var=np.asarray(q_var, dtype=float))

    def with_load(self, load: str, p_w: float, q_var: float) -> NetworkState:
        i = self.index_of("load", load)
        p, q = self.load_p_w.copy(), self.load_q_var.copy()
        p[i], q[i] = p_w, q_var
        return self.with_loads(p, q)

    def scaled_loads(self, factor: float | np.ndarray) -> NetworkState:
        return self.with_loads(self.load_p_w * factor, self.load_q_var * factor)

    def with_taps(self, steps: Mapping[str, float]) -> NetworkState:
        tap = self.tap_step.copy()
        for name, step in steps.items():
            i = self.index_of("tap changer", name)
            tc = self.base.tap_changers[i]
            if not tc.low_step <= step <= tc.high_step:
                raise DmsError(f"tap changer {tc.name!r}: step {step:g} is outside {tc.low_step}..{tc.high_step}")
            tap[i] = step
        return self.replace(tap_step=tap)

    def with_capacitors(self, sections: Mapping[str, float]) -> NetworkState:
        sec = self.capacitor_sections.copy()
        for name, value in sections.items():
            i = self.index_of("capacitor", name)
            cap = self.base.capacitors[i]
            if not 0 <= value <= max(cap.maximum_sections, 1):
                raise DmsError(f"capacitor {cap.name!r}: {value:g} sections is outside 0..{cap.maximum_sections}")
            sec[i] = value
        return self.replace(capacitor_sections=sec)

    def with_ders(self, p_w: np.ndarray, q_var: np.ndarray) -> NetworkState:
        return self.replace(der_p_w=np.asarray(p_w, dtype=float), der_q_var=np.asarray(q_var, dtype=float))

    # ------------------------------------------------------------------------------------------ the model
    @cached_property
    def model(self) -> NetworkModel:
        """The base model with this state applied; built once per state."""
        m = self.base
        switches = tuple(
            s if s.open == (not c) else dataclasses.replace(
                s, open=not c, phase_states=tuple(dataclasses.replace(ps, open=not c) for ps in s.phase_states))
            for s, c in zip(m.switches, self.switch_closed, strict=True))
        loads = tuple(_scaled_load(ld, float(p), float(q)) for ld, p, q in
                      zip(m.loads, self.load_p_w, self.load_q_var, strict=True))
        taps = tuple(t if t.step == s else dataclasses.replace(t, step=float(s))
                     for t, s in zip(m.tap_changers, self.tap_step, strict=True))
        caps = tuple(c if c.sections == s else dataclasses.replace(c, sections=float(s))
                     for c, s in zip(m.capacitors, self.capacitor_sections, strict=True))
        ders = tuple(_scaled_der(d, float(p), float(q)) for d, p, q in
                     zip(m.ders, self.der_p_w, self.der_q_var, strict=True))
        return dataclasses.replace(m, switches=switches, loads=loads, tap_changers=taps, capacitors=caps, ders=ders)


def customers_per_load(model: NetworkModel) -> np.ndarray:
    """Customers behind each load of ``model`` (its usage points, counted by the CIM import)."""
    return np.array([max(ld.customer_count, 0) for ld in model.loads], dtype=np.int64)


def _scale_phases(values: tuple, total: float, new_total: float) -> tuple:
    if not values:
        return values
    if total == 0:  # no shape to keep: share equally
        return tuple((ph, new_total / len(values)) for ph, _ in values)
    return tuple((ph, v * new_total / total) for ph, v in values)


def _scaled_load(ld: Load, p_w: float, q_var: float) -> Load:
    if ld.p_w == p_w and ld.q_var == q_var:
        return ld
    return dataclasses.replace(ld, p_w=p_w, q_var=q_var, phase_p_w=_scale_phases(ld.phase_p_w, ld.p_w, p_w),
                               phase_q_var=_scale_phases(ld.phase_q_var, ld.q_var, q_var))


def _scaled_der(d: Der, p_w: float, q_var: float) -> Der:
    if d.p_w == p_w and d.q_var == q_var:
        return d
    return dataclasses.replace(d, p_w=p_w, q_var=q_var, phase_p_w=_scale_phases(d.phase_p_w, d.p_w, p_w),
                               phase_q_var=_scale_phases(d.phase_q_var, d.q_var, q_var))
