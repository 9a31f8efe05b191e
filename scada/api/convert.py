"""Conversions between the server's types (numpy change rows, frozen dataclasses, enums) and the protobuf messages.

Enums cross by name (``ControlStatus.TIMEOUT`` <-> ``CONTROL_STATUS_TIMEOUT``) or, where the proto mirrors the
Python numbers (Cause, Priority), by value. Optional times and names become -1 and "" on the wire, as the proto says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from functools import cache, lru_cache
from typing import Any, TypeVar

import numpy as np

from models.commands import ControlStatus
from models.points import ControlMode, PointDef, PointKind, Priority, Quality
from models.protocols import describe_address, time_source
from scada.api.protos import scada_pb2 as pb
from scada.changes import CHANGE_DTYPE

E = TypeVar("E", bound=Enum)

#: Values per snapshot message of a point stream: keeps one message well under gRPC's 4 MB default limit.
SNAPSHOT_CHUNK = 2000

_CONTROL_MODE: dict[ControlMode, int] = {
    ControlMode.SELECT_BEFORE_OPERATE: pb.CONTROL_MODE_SBO,
    ControlMode.DIRECT: pb.CONTROL_MODE_DIRECT,
    ControlMode.SBO_ENHANCED: pb.CONTROL_MODE_SBO_ENHANCED,
}


def enum_to_pb(value: Enum, prefix: str) -> int:
    """``ControlStatus.TIMEOUT`` with prefix ``CONTROL_STATUS`` -> the number of ``CONTROL_STATUS_TIMEOUT``."""
    return pb.DESCRIPTOR.enum_types_by_name[_enum_type(prefix)].values_by_name[f"{prefix}_{value.name}"].number


def enum_from_pb(number: int, prefix: str, enum: type[E]) -> E:
    """Inverse of :func:`enum_to_pb`; raises ValueError naming the enum for UNSPECIFIED or unknown numbers."""
    desc = pb.DESCRIPTOR.enum_types_by_name[_enum_type(prefix)].values_by_number.get(number)
    name = desc.name.removeprefix(f"{prefix}_") if desc is not None else ""
    try:
        return enum[name]
    except KeyError:
        raise ValueError(f"{enum.__name__}: no member for protobuf value {number} ({prefix})") from None


@cache
def _enum_type(prefix: str) -> str:
    """Proto enum type name from its value prefix: CONTROL_STATUS -> ControlStatus."""
    return "".join(part.capitalize() for part in prefix.split("_"))


@lru_cache(maxsize=4096)
def quality_names(quality: int) -> tuple[str, ...]:
    """Names of the set quality bits; cached because a station has only a handful of distinct masks."""
    return tuple(Quality(quality).names())


# ------------------------------------------------------------------------------------------------ points


def point_definition(p: PointDef) -> pb.PointDefinition:
    ctrl = p.control
    return pb.PointDefinition(
        id=p.id,
        name=p.name,
        kind=enum_to_pb(p.kind, "POINT_KIND"),
        units=p.units,
        element=p.element,
        rtu=p.source.rtu,
        controllable=ctrl is not None,
        control_mode=_CONTROL_MODE[ctrl.mode] if ctrl is not None else pb.CONTROL_MODE_UNSPECIFIED,
        control_type=ctrl.type.value if ctrl is not None else "",
        description=p.description,
        protocol=p.source.frontend,
        address=describe_address(p),
        time_source=time_source(p).value,
    )


def point_kind(definition: pb.PointDefinition) -> PointKind:
    return enum_from_pb(definition.kind, "POINT_KIND", PointKind)


def point_values(rows: np.ndarray, names: Sequence[str]) -> list[pb.PointValue]:
    """CHANGE_DTYPE rows -> PointValue messages; ``names`` is indexed by point id."""
    cols = (rows["point"].tolist(), rows["value"].tolist(), rows["quality"].tolist(), rows["source_time_ms"].tolist(),
            rows["recv_time_ms"].tolist(), rows["seq"].tolist(), rows["cause"].tolist())
    return [
        pb.PointValue(point=p, name=names[p], value=v, quality=q, quality_names=quality_names(q), source_time_ms=st,
                      recv_time_ms=rt, seq=s, cause=c)
        for p, v, q, st, rt, s, c in zip(*cols, strict=True)
    ]


def point_value_rows(values: Iterable[pb.PointValue]) -> np.ndarray:
    """PointValue messages -> CHANGE_DTYPE rows (``prev_value`` NaN), for bulk work on the client side."""
    vals = list(values)
    rows = np.zeros(len(vals), dtype=CHANGE_DTYPE)
    if vals:
        rows["point"] = [v.point for v in vals]
        rows["value"] = [v.value for v in vals]
        rows["quality"] = [v.quality for v in vals]
        rows["source_time_ms"] = [v.source_time_ms for v in vals]
        rows["recv_time_ms"] = [v.recv_time_ms for v in vals]
        rows["seq"] = [v.seq for v in vals]
        rows["cause"] = [v.cause for v in vals]
    rows["prev_value"] = np.nan
    return rows


def snapshot_updates(rows: np.ndarray, names: Sequence[str], chunk: int = SNAPSHOT_CHUNK) -> list[pb.PointUpdate]:
    """The opening messages of a point stream; always at least one, the last with ``end_of_snapshot``."""
    out = [pb.PointUpdate(snapshot=True, values=point_values(rows[i:i + chunk], names))
           for i in range(0, len(rows), chunk)] or [pb.PointUpdate(snapshot=True)]
    out[-1].end_of_snapshot = True
    return out


# ------------------------------------------------------------------------------------------------ commands


def control_result(outcome: Any) -> pb.ControlResult:
    """scada.commands.CommandOutcome -> ControlResult."""
    return pb.ControlResult(
        request_id=outcome.request_id,
        point=outcome.point,
        point_name=outcome.point_name,
        action=str(outcome.action.value),
        value=outcome.value,
        status=enum_to_pb(outcome.status, "CONTROL_STATUS"),
        field_detail=outcome.field_detail,
        feedback=enum_to_pb(outcome.feedback, "FEEDBACK_STATUS"),
        elapsed_ms=outcome.elapsed_ms,
    )


def control_status(result: pb.ControlResult) -> ControlStatus:
    return enum_from_pb(result.status, "CONTROL_STATUS", ControlStatus)


def tag(t: Any) -> pb.Tag:
    """scada.tags.Tag -> Tag."""
    kind = getattr(t.kind, "value", t.kind)
    return pb.Tag(id=t.id, target=t.target, kind=str(kind), operator=t.operator, reason=t.reason,
                  placed_ms=t.placed_ms)


# ------------------------------------------------------------------------------------------------ alarms


def _opt_ms(v: int | None) -> int:
    return -1 if v is None else int(v)


def alarm(a: Any, now_ms: int) -> pb.Alarm:
    """scada.alarm_rules.Alarm -> Alarm; ``shelved`` is evaluated at ``now_ms``."""
    return pb.Alarm(
        id=a.id,
        key=a.key,
        point=a.point,
        point_name=a.point_name,
        kind=str(a.kind.value),
        condition=a.condition,
        priority=int(a.priority),
        text=a.text,
        value=a.value,
        state=enum_to_pb(a.state, "ALARM_STATE"),
        raised_ms=a.raised_ms,
        updated_ms=a.updated_ms,
        cleared_ms=_opt_ms(a.cleared_ms),
        acked_by=a.acked_by or "",
        acked_ms=_opt_ms(a.acked_ms),
        shelved_until_ms=_opt_ms(a.shelved_until_ms),
        shelved_by=a.shelved_by or "",
        shelve_reason=a.shelve_reason or "",
        occurrences=a.occurrences,
        shelved=a.shelved_until_ms is not None and a.shelved_until_ms > now_ms,
    )


def alarm_event(ev: Any, now_ms: int) -> pb.AlarmEvent:
    """scada.alarm_rules.AlarmEvent -> AlarmEvent."""
    return pb.AlarmEvent(kind=enum_to_pb(ev.kind, "ALARM_EVENT_KIND"), alarm=alarm(ev.alarm, now_ms),
                         time_ms=ev.time_ms)


def priority_from_pb(number: int) -> Priority | None:
    """None for UNSPECIFIED (no filter)."""
    if number == pb.PRIORITY_UNSPECIFIED:
        return None
    try:
        return Priority(number)
    except ValueError:
        raise ValueError(f"priority {number} is not one of 1 (critical) .. 4 (low)") from None


# ------------------------------------------------------------------------------------------------ history


def soe_entry(e: Any) -> pb.SoeEntry:
    """scada.soe.SoeEntry -> SoeEntry."""
    q = int(e.quality)
    return pb.SoeEntry(seq=e.seq, point=e.point, point_name=e.point_name, value=e.value, prev_value=e.prev_value,
                       quality=q, quality_names=quality_names(q), source_time_ms=e.source_time_ms,
                       recv_time_ms=e.recv_time_ms, cause=int(e.cause))



def history(result: Any, units: str) -> pb.QueryHistoryResponse:
    """scada.historian.HistoryResult -> QueryHistoryResponse (samples or buckets, never both)."""
    out = pb.QueryHistoryResponse(point=result.point, point_name=result.point_name, units=units,
                                  bucket_s=result.bucket_ms / 1000.0)
    s = result.samples
    out.samples.extend(
        pb.HistorySample(time_ms=t, value=v, quality=q)
        for t, v, q in zip(s["time_ms"].tolist(), s["value"].tolist(), s["quality"].tolist(), strict=True)
    )
    b = result.buckets
    cols = (b["start_ms"].tolist(), b["min"].tolist(), b["max"].tolist(), b["mean"].tolist(), b["last"].tolist(),
            b["quality"].tolist(), b["count"].tolist())
    out.buckets.extend(
        pb.HistoryBucket(start_ms=t, min=lo, max=hi, mean=mean, last=last, quality=q, count=n)
        for t, lo, hi, mean, last, q, n in zip(*cols, strict=True)
    )
    return out


def audit_entry(e: Any) -> pb.AuditEntry:
    """scada.audit.AuditEntry -> AuditEntry."""
    return pb.AuditEntry(id=e.id, time_ms=e.time_ms, operator=e.operator, role=e.role, point=e.point,
                         point_name=e.point_name, action=e.action, value=e.value, outcome=str(e.outcome.value),
                         reason=e.reason, field_status=e.field_status, field_detail=e.field_detail,
                         elapsed_ms=e.elapsed_ms, request_id=e.request_id)


# ------------------------------------------------------------------------------------------------ topology


class _ModelNames:
    """Per-model tables for the colouring messages, built once per network model."""

    def __init__(self, model: Any) -> None:
        from models.topology import build_static_topology

        st = build_static_topology(model)
        self.bus = [(b.mrid, b.name) for b in model.buses]
        self.branch = list(zip(st.branch_mrid, st.branch_name, [k.value for k in st.branch_kind], strict=True))
        self.load = [(x.mrid, x.name) for x in model.loads]
        self.source = [s.mrid for s in model.sources]
        self.source_name = {s.mrid: s.name for s in model.sources}
        self.feeder = [f.mrid for f in model.feeders]
        self.feeder_name = {f.mrid: f.name for f in model.feeders}
        self.switch_branch = {int(b): i for i, b in enumerate(st.switch_branch)}


@lru_cache(maxsize=4)
def _names(model: Any) -> _ModelNames:  # NetworkModel hashes by identity (eq=False)
    return _ModelNames(model)


def _element_rows(table: np.ndarray, idx: Iterable[int], kind: str, names: _ModelNames,
                  uncertain: np.ndarray | None = None) -> list[pb.ElementColour]:
    out = []
    key = "bus" if kind == "bus" else "load" if kind == "load" else "branch"
    ident = names.bus if key == "bus" else names.load if key == "load" else names.branch
    for i in idx:
        row = table[int(i)]
        src, feeder = int(row["source"]), int(row["feeder"])
        item = ident[int(i)]
        msg = pb.ElementColour(index=int(i), mrid=item[0], name=item[1], kind=item[2] if key == "branch" else kind,
                               energized=bool(row["energized"]), island=int(row["island"]),
                               source=names.source[src] if src >= 0 else "",
                               feeder=names.feeder[feeder] if feeder >= 0 else "",
                               closed=bool(row["closed"]) if key == "branch" else True)
        if uncertain is not None and int(i) in names.switch_branch:
            msg.state_uncertain = bool(uncertain[names.switch_branch[int(i)]])
        out.append(msg)
    return out


def island(x: Any, model: Any) -> pb.Island:
    names = _names(model)
    return pb.Island(id=x.id, energized=x.energized, source_mrids=list(x.source_mrids),
                     source_names=[names.source_name.get(m, m) for m in x.source_mrids],
                     feeder_mrid=x.feeder_mrid or "", feeder_name=names.feeder_name.get(x.feeder_mrid or "", ""),
                     buses=x.buses, loads=x.loads, customers=x.customers, state_uncertain=x.uncertain,
                     feeder_names=[names.feeder_name.get(m, m) for m in x.feeder_mrids])


def switch_state(s: Any) -> pb.SwitchState:
    return pb.SwitchState(mrid=s.mrid, name=s.name, kind=s.kind.value, closed=s.closed, state_uncertain=s.uncertain,
                          source=s.source.value, points=list(s.points))


def marking(t: Any, element: tuple[str, str] | None) -> pb.Marking:
    """A tag used as a topology marking; ``element`` is the resolved (mRID, name) when the target is one."""
    mrid, name = element or ("", "")
    return pb.Marking(tag_id=t.id, element=t.target, element_mrid=mrid, element_name=name, kind=t.kind.value,
                      operator=t.operator, reason=t.reason, placed_ms=t.placed_ms)


def colouring(snapshot: Any, switches: Iterable[Any], markings: Iterable[pb.Marking] = ()) -> pb.Colouring:
    """A whole colouring message from a ``TopologySnapshot``."""
    names = _names(snapshot.model)
    c = snapshot.colouring
    loads_dead = snapshot.deenergized_loads()
    customers = sum(x.customers for x in snapshot.islands if not x.energized)
    return pb.Colouring(
        version=snapshot.version, network=snapshot.model.name,
        buses=_element_rows(c.buses, range(len(c.buses)), "bus", names),
        branches=_element_rows(c.branches, range(len(c.branches)), "branch", names, snapshot.switch_uncertain),
        loads=_element_rows(c.loads, range(len(c.loads)), "load", names),
        islands=[island(x, snapshot.model) for x in snapshot.islands],
        switches=[switch_state(s) for s in switches], markings=list(markings),
        deenergized_loads=len(loads_dead), deenergized_customers=customers,
    )


def topology_update(update: Any, full_colouring: pb.Colouring | None = None) -> pb.TopologyUpdate:
    """A ``TopologyUpdate``; a full one carries ``full_colouring`` (built by the caller with switches and markings)."""
    snap = update.snapshot
    model = snap.model
    msg = pb.TopologyUpdate(version=update.version, full=update.full, cause=update.cause.value,
                            switches=[switch_state(s) for s in update.switches],
                            islands_changed=update.islands_changed)
    if update.full:
        if full_colouring is not None:
            msg.colouring.CopyFrom(full_colouring)
        msg.islands.extend(island(x, model) for x in snap.islands)
        return msg
    names = _names(model)
    c = snap.colouring
    msg.buses.extend(_element_rows(c.buses, update.changed_buses, "bus", names))
    msg.branches.extend(_element_rows(c.branches, update.changed_branches, "branch", names, snap.switch_uncertain))
    msg.loads.extend(_element_rows(c.loads, update.changed_loads, "load", names))
    msg.energized_loads.extend(model.loads[i].name for i in update.energized_loads)
    msg.deenergized_loads.extend(model.loads[i].name for i in update.deenergized_loads)
    msg.energized_buses = len(update.energized_buses)
    msg.deenergized_buses = len(update.deenergized_buses)
    if update.islands_changed:
        msg.islands.extend(island(x, model) for x in snap.islands)
    return msg


def _step(s: Any) -> pb.TraceStep:
    return pb.TraceStep(kind=s.kind.value, mrid=s.mrid, name=s.name)


def trace(t: Any, version: int) -> pb.TraceResponse:
    msg = pb.TraceResponse(element=_step(t.element), energized=t.energized, feeder_mrid=t.feeder_mrid or "",
                           feeder_name=t.feeder_name, steps=[_step(s) for s in t.steps],
                           downstream_loads=[_step(s) for s in t.downstream_loads], customers=list(t.customers),
                           customer_count=t.customer_count, version=version)
    if t.source is not None:
        msg.source.CopyFrom(_step(t.source))
    if t.distribution_transformer is not None:
        msg.distribution_transformer.CopyFrom(_step(t.distribution_transformer))
    return msg
