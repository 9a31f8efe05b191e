"""gRPC servicers of the operator API and the server builder.

Every RPC resolves the bearer token to an operator and checks the role's permission before touching a service;
health checking (``grpc.health.v1``) and reflection are open so that load balancers and ``grpcurl`` work without a
token. Streams hold one RTDB or alarm subscription each, closed in ``finally`` and by a gRPC done-callback, so a
client cancel or a server stop never leaves a subscription behind.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from models.cim.difference import DifferenceSummary, ObjectChange
from models.config import OperatorConfig, Role
from models.gis_exchange import FeederMove
from models.timebase import now_ms
from scada.alarm_rules import AlarmError
from scada.api import convert
from scada.api.protos import scada_pb2 as pb
from scada.api.protos import scada_pb2_grpc as pb_grpc
from scada.auth import Authenticator, Permission, allowed
from scada.commands import RefusalReason
from scada.errors import CommandRefused, ScadaError, UnknownPointError
from scada.historian import HistorianError
from scada.model_service import ExportBase, ModelService, ModelServiceError, ModelUpdateRefused
from scada.services import Services
from scada.tags import TagError, TagKind
from scada.topology_service import (
    TopologyService,
    TopologyServiceError,
    TopologySnapshot,
    UnknownElementError,
    UpdateCause,
)

log = logging.getLogger(__name__)

#: Services registered on the server, as reflection and health checking name them.
SERVICE_NAMES: tuple[str, ...] = tuple(
    pb.DESCRIPTOR.services_by_name[s].full_name
    for s in ("PointService", "ControlService", "RtuService", "AlarmService", "HistoryService", "TopologyService",
              "ModelService")
)

#: How long a stream waits for a change before checking that its client is still there.
_STREAM_POLL_S = 0.5
_DEFAULT_MAX_PENDING = 256
_DEFAULT_SOE_LIMIT = 1000
_DEFAULT_ALARM_LIMIT = 10_000
_DEFAULT_AUDIT_LIMIT = 1000
_DEFAULT_HISTORY_WINDOW_MS = 3_600_000
#: Trailing metadata key carrying the CommandRefused reason (e.g. "tagged") for programs that act on it.
REFUSAL_METADATA_KEY = "dscada-refusal-reason"

_REFUSAL_CODES: dict[str, grpc.StatusCode] = {
    RefusalReason.UNKNOWN_POINT: grpc.StatusCode.NOT_FOUND,
    RefusalReason.NOT_CONTROLLABLE: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.INVALID_VALUE: grpc.StatusCode.INVALID_ARGUMENT,
    RefusalReason.NOT_AUTHORISED: grpc.StatusCode.PERMISSION_DENIED,
    RefusalReason.TAGGED: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.INTERLOCKED: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.NOT_SELECTED: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.SELECTED_BY_OTHER: grpc.StatusCode.FAILED_PRECONDITION,
    # not UNAVAILABLE: a client library with a retry policy must never repeat a control on its own
    RefusalReason.LINK_DOWN: grpc.StatusCode.FAILED_PRECONDITION,
    RefusalReason.BUSY: grpc.StatusCode.UNAVAILABLE,
}


class ApiError(ScadaError):
    """The gRPC server cannot be built as asked (e.g. the address cannot be bound)."""


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def map_errors(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    """Turn a service exception into the matching gRPC status; the message is the service's own sentence."""
    if isinstance(exc, CommandRefused):
        reason = str(exc.reason)
        context.set_trailing_metadata(((REFUSAL_METADATA_KEY, reason),))
        _abort(context, _REFUSAL_CODES.get(reason, grpc.StatusCode.FAILED_PRECONDITION), f"{reason}: {exc}")
    if isinstance(exc, UnknownPointError | UnknownElementError):
        _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, ModelUpdateRefused):
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, TopologyServiceError | ModelServiceError):
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, HistorianError | ValueError):
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, AlarmError | TagError):
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    log.error("gRPC call failed: %s: %s", type(exc).__name__, exc)
    _abort(context, grpc.StatusCode.INTERNAL, f"server error: {type(exc).__name__}: {exc}")


def authorise(auth: Authenticator, context: grpc.ServicerContext, permission: Permission,
              action: str) -> OperatorConfig:
    """The operator of the call's bearer token, if its role has ``permission``; else the call is aborted."""
    token = ""
    for key, value in context.invocation_metadata():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer":
                _abort(context, grpc.StatusCode.UNAUTHENTICATED,
                       f"{action}: authorization metadata must be 'Bearer <token>'")
            token = token.strip()
    if not token:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED,
               f"{action}: no token; send metadata 'authorization: Bearer <token>'")
    operator = auth.operator_for_token(token)
    if operator is None:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, f"{action}: unknown token")
    if not allowed(operator.role, permission):
        _abort(context, grpc.StatusCode.PERMISSION_DENIED,
               f"operator {operator.name} (role {operator.role.value}) may not {action}: "
               f"the role lacks the {permission.value} permission")
    return operator


def _handled(permission: Permission, action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Unary RPC wrapper: authenticate, authorise, call with the operator, map service errors to statuses."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def rpc(self: _Base, request: Any, context: grpc.ServicerContext) -> Any:
            operator = self._authorise(context, permission, action)
            try:
                return fn(self, request, context, operator)
            except (ScadaError, ValueError) as exc:
                map_errors(context, exc)

        return rpc

    return wrap


def _streamed(permission: Permission, action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Server-streaming variant of :func:`_handled` (the wrapped function is a generator)."""

    def wrap(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(fn)
        def rpc(self: _Base, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            operator = self._authorise(context, permission, action)
            try:
                yield from fn(self, request, context, operator)
            except (ScadaError, ValueError) as exc:
                map_errors(context, exc)

        return rpc

    return wrap


class _Base:
    def __init__(self, services: Services) -> None:
        self.s = services
        self._names = [p.name for p in services.config.points]

    def _authorise(self, context: grpc.ServicerContext, permission: Permission, action: str) -> OperatorConfig:
        return authorise(self.s.auth, context, permission, action)

    def _point(self, ref: pb.PointRef, context: grpc.ServicerContext) -> int:
        which = ref.WhichOneof("ref")
        if which == "name":
            return self.s.rtdb.point_id(ref.name)
        if which == "id":
            return self.s.rtdb.check_id(ref.id)
        _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "a point (id or name) is required")

    def _points(self, sel: pb.PointSelector) -> list[int] | None:
        """Point ids of a selector in request order without repeats; None for an empty selector (all points)."""
        if not sel.ids and not sel.names:
            return None
        ids = [self.s.rtdb.check_id(i) for i in sel.ids] + [self.s.rtdb.point_id(n) for n in sel.names]
        return list(dict.fromkeys(ids))


# ------------------------------------------------------------------------------------------------ points


class PointServicer(_Base, pb_grpc.PointServiceServicer):
    _stream_ids = itertools.count(1)

    @_handled(Permission.READ, "list points")
    def ListPoints(self, request: pb.ListPointsRequest, context: grpc.ServicerContext,
                   operator: OperatorConfig) -> pb.ListPointsResponse:
        needle = request.name_contains.lower()
        return pb.ListPointsResponse(points=[convert.point_definition(p) for p in self.s.config.points
                                             if needle in p.name.lower()])

    @_handled(Permission.READ, "read points")
    def ReadPoints(self, request: pb.ReadPointsRequest, context: grpc.ServicerContext,
                   operator: OperatorConfig) -> pb.ReadPointsResponse:
        rows = self.s.rtdb.snapshot(self._points(request.points))
        return pb.ReadPointsResponse(values=convert.point_values(rows, self._names))

    @_streamed(Permission.READ, "subscribe to points")
    def SubscribePoints(self, request: pb.SubscribePointsRequest, context: grpc.ServicerContext,
                        operator: OperatorConfig) -> Iterator[pb.PointUpdate]:
        points = self._points(request.points)
        name = f"grpc:{operator.name}:{next(self._stream_ids)}"
        snap, sub = self.s.rtdb.subscribe_with_snapshot(
            name, points=points, max_pending=request.max_pending or _DEFAULT_MAX_PENDING)
        # closing the subscription wakes the loop at once when the client cancels or the server stops
        context.add_callback(sub.close)
        try:
            yield from convert.snapshot_updates(snap, self._names)
            while context.is_active():
                cs = sub.get(timeout_s=_STREAM_POLL_S)
                if cs is None:
                    if sub.closed:
                        break
                    continue
                yield pb.PointUpdate(values=convert.point_values(cs.rows, self._names), dropped=sub.drops)
        finally:
            self.s.rtdb.unsubscribe(sub)


# ------------------------------------------------------------------------------------------------ RTUs


class RtuServicer(_Base, pb_grpc.RtuServiceServicer):
    @_handled(Permission.READ, "list RTUs")
    def ListRtus(self, request: pb.ListRtusRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.ListRtusResponse:
        cfg = self.s.config
        out = pb.ListRtusResponse()
        for st in self.s.rtdb.rtu_status():
            rtu = cfg.rtu(st.name)
            out.rtus.add(name=st.name, protocol=rtu.protocol.value, common_address=rtu.common_address,
                         addresses=list(rtu.addresses), frtu=rtu.frtu, link_up=st.link_up,
                         active_address=st.address, since_ms=st.since_ms, reason=st.reason,
                         last_gi_ms=st.last_gi_ms, points=len(cfg.points_of_rtu(st.name)))
        return out

    @_handled(Permission.CONTROL, "interrogate")
    def Interrogate(self, request: pb.InterrogateRequest, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.RtuRequestResponse:
        return self._each(request.rtu, context, lambda r: self._requests(context).interrogate(
            r, counters=request.counters))

    @_handled(Permission.CONTROL, "synchronise clocks")
    def SyncClock(self, request: pb.SyncClockRequest, context: grpc.ServicerContext,
                  operator: OperatorConfig) -> pb.RtuRequestResponse:
        return self._each(request.rtu, context, lambda r: self._requests(context).sync_clock(r))

    @_handled(Permission.READ, "read the server status")
    def GetServerStatus(self, request: pb.GetServerStatusRequest, context: grpc.ServicerContext,
                        operator: OperatorConfig) -> pb.ServerStatus:
        st = self.s.rtdb.stats()
        out = pb.ServerStatus(station=self.s.config.name, points=len(self.s.config.points), batches=st.batches,
                              rows=st.rows, changes=st.changes, soe_events=st.soe_events, stale_marked=st.stale_marked,
                              last_seq=st.last_seq, inbox_depth=st.inbox_depth)
        for name, pending, drops in st.subscribers:
            out.subscribers.add(name=name, pending=pending, dropped=drops)
        for a in self.s.rtus.adapter_status() if self.s.rtus is not None else ():
            out.adapters.add(name=a.name, running=a.running, restarts=a.restarts, pid=a.pid,
                             last_heartbeat_ms=a.last_heartbeat_ms, counters=dict(a.counters))
        return out

    def _requests(self, context: grpc.ServicerContext) -> Any:
        if self.s.rtus is None:
            _abort(context, grpc.StatusCode.UNIMPLEMENTED, "this server has no protocol adapters")
        return self.s.rtus

    def _each(self, rtu: str, context: grpc.ServicerContext, send: Callable[[str], bool]) -> pb.RtuRequestResponse:
        names = [r.name for r in self.s.config.rtus]
        if rtu and rtu not in names:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"unknown RTU {rtu!r}")
        sent = [r for r in ([rtu] if rtu else names) if send(r)]
        if rtu and not sent:
            _abort(context, grpc.StatusCode.UNAVAILABLE, f"the protocol adapter of RTU {rtu!r} is not running")
        return pb.RtuRequestResponse(rtus=sent)


# ------------------------------------------------------------------------------------------------ controls


class ControlServicer(_Base, pb_grpc.ControlServiceServicer):
    def __init__(self, services: Services, topology: TopologyService | None = None) -> None:
        super().__init__(services)
        self.topology = topology  # a clearance placed or removed here is a topology marking too

    def _markings_changed(self, kind: TagKind) -> None:
        if self.topology is not None and kind in _MARKING_TAGS:
            self.topology.republish(UpdateCause.MARKING)

    @_handled(Permission.CONTROL, "select")
    def Select(self, request: pb.SelectRequest, context: grpc.ServicerContext,
               operator: OperatorConfig) -> pb.ControlResult:
        point = self._point(request.point, context)
        return convert.control_result(self.s.commands.select(point, request.value, operator))

    @_handled(Permission.CONTROL, "operate")
    def Operate(self, request: pb.OperateRequest, context: grpc.ServicerContext,
                operator: OperatorConfig) -> pb.ControlResult:
        point = self._point(request.point, context)
        return convert.control_result(self.s.commands.operate(point, request.value, operator))

    @_handled(Permission.CONTROL, "cancel")
    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext,
               operator: OperatorConfig) -> pb.ControlResult:
        point = self._point(request.point, context)
        return convert.control_result(self.s.commands.cancel(point, operator))

    @_handled(Permission.TAG, "place a tag")
    def PlaceTag(self, request: pb.PlaceTagRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.Tag:
        target = request.target.strip()
        known = {p.name for p in self.s.config.points} | {p.element for p in self.s.config.points if p.element}
        in_network = self.topology is not None and self.topology.element_buses(target) is not None
        if target and target not in known and not in_network:
            _abort(context, grpc.StatusCode.NOT_FOUND,
                   f"cannot tag {target!r}: no point or network element of that name")
        try:
            tag = self.s.tags.place(target, request.kind, operator.name, request.reason)
        except TagError as exc:  # empty target, unknown kind, missing reason: all the request's fault
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._markings_changed(tag.kind)
        return convert.tag(tag)

    @_handled(Permission.TAG, "remove a tag")
    def RemoveTag(self, request: pb.RemoveTagRequest, context: grpc.ServicerContext,
                  operator: OperatorConfig) -> pb.RemoveTagResponse:
        if self.s.tags.get(request.tag_id) is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"cannot remove tag {request.tag_id}: no such tag")
        removed = self.s.tags.remove(request.tag_id, operator.name, request.reason)
        self._markings_changed(removed.kind)
        return pb.RemoveTagResponse(tag=convert.tag(removed))

    @_handled(Permission.READ, "list tags")
    def ListTags(self, request: pb.ListTagsRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.ListTagsResponse:
        tags = self.s.tags.active(request.target or None)
        return pb.ListTagsResponse(tags=[convert.tag(t) for t in tags])


# ------------------------------------------------------------------------------------------------ alarms


class AlarmServicer(_Base, pb_grpc.AlarmServiceServicer):
    @_handled(Permission.READ, "list alarms")
    def ListAlarms(self, request: pb.ListAlarmsRequest, context: grpc.ServicerContext,
                   operator: OperatorConfig) -> pb.ListAlarmsResponse:
        alarms = self.s.alarms.list(include_shelved=request.include_shelved, include_closed=request.include_closed,
                                    min_priority=convert.priority_from_pb(request.min_priority),
                                    limit=request.limit or _DEFAULT_ALARM_LIMIT)
        now = now_ms()
        return pb.ListAlarmsResponse(alarms=[convert.alarm(a, now) for a in alarms])

    @_streamed(Permission.READ, "stream alarms")
    def StreamAlarms(self, request: pb.StreamAlarmsRequest, context: grpc.ServicerContext,
                     operator: OperatorConfig) -> Iterator[pb.AlarmEvent]:
        # subscribe before listing: an event racing the listing arrives after it (alarm events carry the full
        # record, so a repeat is harmless), never lost in between
        sub = self.s.alarms.subscribe(max_pending=_DEFAULT_ALARM_LIMIT)
        context.add_callback(sub.close)
        try:
            now = now_ms()
            for a in self.s.alarms.list(include_shelved=request.include_shelved):
                yield pb.AlarmEvent(kind=pb.ALARM_EVENT_KIND_CURRENT, alarm=convert.alarm(a, now), time_ms=now)
            yield pb.AlarmEvent(kind=pb.ALARM_EVENT_KIND_SNAPSHOT_DONE, time_ms=now)
            while context.is_active():
                ev = sub.get(timeout_s=_STREAM_POLL_S)
                if ev is None:
                    if sub.closed:
                        break
                    continue
                yield convert.alarm_event(ev, now_ms())
        finally:
            sub.close()

    @_handled(Permission.ACKNOWLEDGE, "acknowledge alarms")
    def Acknowledge(self, request: pb.AcknowledgeRequest, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.AcknowledgeResponse:
        if request.all == bool(request.ids):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "acknowledge: give alarm ids or all, not both or none")
        ids = None if request.all else list(request.ids)
        for aid in ids or ():
            self._existing(aid, context)
        done = self.s.alarms.acknowledge(ids, operator.name)
        now = now_ms()
        return pb.AcknowledgeResponse(alarms=[convert.alarm(a, now) for a in done])

    @_handled(Permission.ACKNOWLEDGE, "shelve alarms")
    def Shelve(self, request: pb.ShelveRequest, context: grpc.ServicerContext,
               operator: OperatorConfig) -> pb.Alarm:
        if not (request.duration_s > 0 and math.isfinite(request.duration_s)):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"alarm {request.id}: cannot shelve for {request.duration_s:g} s, the duration must be > 0")
        if not request.reason.strip():
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"alarm {request.id}: shelving needs a reason")
        self._existing(request.id, context)
        a = self.s.alarms.shelve(request.id, operator.name, request.duration_s, request.reason.strip())
        return convert.alarm(a, now_ms())

    @_handled(Permission.ACKNOWLEDGE, "unshelve alarms")
    def Unshelve(self, request: pb.UnshelveRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.Alarm:
        self._existing(request.id, context)
        return convert.alarm(self.s.alarms.unshelve(request.id, operator.name), now_ms())

    def _existing(self, alarm_id: int, context: grpc.ServicerContext) -> None:
        try:
            self.s.alarms.get(alarm_id)
        except AlarmError as exc:  # the manager's only refusal of get() is an unknown id
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))


# ------------------------------------------------------------------------------------------------ history


class HistoryServicer(_Base, pb_grpc.HistoryServiceServicer):
    @_handled(Permission.READ, "query the SOE journal")
    def QuerySoe(self, request: pb.QuerySoeRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.QuerySoeResponse:
        entries = self.s.soe.query(start_ms=request.start_ms or None, end_ms=request.end_ms or None,
                                   points=self._points(request.points), limit=request.limit or _DEFAULT_SOE_LIMIT,
                                   newest_first=not request.oldest_first)
        return pb.QuerySoeResponse(entries=[convert.soe_entry(e) for e in entries])

    @_handled(Permission.READ, "query history")
    def QueryHistory(self, request: pb.QueryHistoryRequest, context: grpc.ServicerContext,
                     operator: OperatorConfig) -> pb.QueryHistoryResponse:
        point = self._point(request.point, context)
        end_ms = request.end_ms or now_ms() + 1  # +1: the window is half-open, include a sample stored now
        start_ms = request.start_ms or end_ms - _DEFAULT_HISTORY_WINDOW_MS
        result = self.s.historian.query(point, start_ms, end_ms, bucket_s=request.bucket_s or None,
                                        max_points=request.max_points or None)
        return convert.history(result, self.s.config.points[point].units)

    @_handled(Permission.READ, "query the audit log")
    def QueryAudit(self, request: pb.QueryAuditRequest, context: grpc.ServicerContext,
                   operator: OperatorConfig) -> pb.QueryAuditResponse:
        point = self._point(request.point, context) if request.HasField("point") else None
        entries = self.s.audit.query(start_ms=request.start_ms or None, end_ms=request.end_ms or None, point=point,
                                     operator=request.operator or None, limit=request.limit or _DEFAULT_AUDIT_LIMIT)
        return pb.QueryAuditResponse(entries=[convert.audit_entry(e) for e in entries])


# ------------------------------------------------------------------------------------------------ topology

#: Marking kinds an operator may ask for, and the tag kind each is stored as ("earthed" is a clearance tag).
_MARKING_KINDS: dict[str, TagKind] = {
    "faulted": TagKind.FAULTED,
    "earthed": TagKind.CLEARANCE,
    "clearance": TagKind.CLEARANCE,
    "parallel_allowed": TagKind.PARALLEL_ALLOWED,
}
_MARKING_TAGS = frozenset(_MARKING_KINDS.values())
_DEFAULT_TOPOLOGY_PENDING = 64


class TopologyServicer(_Base, pb_grpc.TopologyServiceServicer):
    """Colouring, traces, islands, manual switch states and markings; FAILED_PRECONDITION when the station has no
    network model."""

    _stream_ids = itertools.count(1)

    def __init__(self, services: Services, topology: TopologyService | None) -> None:
        super().__init__(services)
        self.topology = topology

    def _topo(self, context: grpc.ServicerContext) -> TopologyService:
        if self.topology is None:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   "this station has no network model: add [network] cim = \"file.xml\" to its configuration")
        return self.topology

    def _markings(self, topo: TopologyService) -> list[pb.Marking]:
        out = []
        for t in self.s.tags.active():
            if t.kind in _MARKING_TAGS:
                found = topo.element_buses(t.target)
                out.append(convert.marking(t, (found[0].mrid, found[0].name) if found else None))
        return out

    def _colouring(self, topo: TopologyService, snapshot: TopologySnapshot | None = None) -> pb.Colouring:
        snap = snapshot or topo.snapshot()
        return convert.colouring(snap, snap.switch_states(), self._markings(topo))

    @_handled(Permission.READ, "read the topology colouring")
    def GetColouring(self, request: pb.GetColouringRequest, context: grpc.ServicerContext,
                     operator: OperatorConfig) -> pb.Colouring:
        return self._colouring(self._topo(context))

    @_streamed(Permission.READ, "watch the topology colouring")
    def WatchColouring(self, request: pb.WatchColouringRequest, context: grpc.ServicerContext,
                       operator: OperatorConfig) -> Iterator[pb.TopologyUpdate]:
        topo = self._topo(context)
        snap, sub = topo.subscribe(f"grpc-topology:{operator.name}:{next(self._stream_ids)}",
                                   max_pending=request.max_pending or _DEFAULT_TOPOLOGY_PENDING)
        context.add_callback(sub.close)
        try:
            yield pb.TopologyUpdate(version=snap.version, full=True, cause="start",
                                    colouring=self._colouring(topo, snap), islands_changed=True,
                                    islands=[convert.island(x, snap.model) for x in snap.islands])
            while context.is_active():
                update = sub.get(timeout_s=_STREAM_POLL_S)
                if update is None:
                    if sub.closed:
                        break
                    continue
                full = self._colouring(topo, update.snapshot) if update.full else None
                yield convert.topology_update(update, full)
        finally:
            topo.unsubscribe(sub)

    @_handled(Permission.READ, "trace an element")
    def Trace(self, request: pb.TraceRequest, context: grpc.ServicerContext,
              operator: OperatorConfig) -> pb.TraceResponse:
        topo = self._topo(context)
        if not request.element.strip():
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "trace: an element (name or mRID) is required")
        version = topo.version
        return convert.trace(topo.trace(request.element.strip()), version)

    @_handled(Permission.READ, "list islands")
    def ListIslands(self, request: pb.ListIslandsRequest, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.ListIslandsResponse:
        snap = self._topo(context).snapshot()
        dead = [snap.model.loads[i].name for i in snap.deenergized_loads().tolist()]
        return pb.ListIslandsResponse(version=snap.version, islands=[convert.island(x, snap.model)
                                                                     for x in snap.islands], deenergized_loads=dead)

    @_handled(Permission.CONTROL, "set a manual switch state")
    def SetManualSwitchState(self, request: pb.SetManualSwitchStateRequest, context: grpc.ServicerContext,
                             operator: OperatorConfig) -> pb.SwitchState:
        topo = self._topo(context)
        state = topo.set_manual_switch_state(request.switch.strip(), request.closed, operator, request.reason.strip())
        return convert.switch_state(state)

    @_handled(Permission.TAG, "mark a network element")
    def MarkElement(self, request: pb.MarkElementRequest, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.Marking:
        topo = self._topo(context)
        kind = _MARKING_KINDS.get(request.kind.strip().lower())
        if kind is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"mark {request.element!r}: unknown marking {request.kind!r} (expected one of "
                   f"{', '.join(_MARKING_KINDS)})")
        target = request.element.strip()
        found = topo.element_buses(target)
        if found is None:
            _abort(context, grpc.StatusCode.NOT_FOUND,
                   f"cannot mark {target!r}: no element of that name or mRID in network {topo.model.name!r}")
        if kind is TagKind.PARALLEL_ALLOWED and topo.find_switch(target) is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   f"cannot mark {target!r} parallel_allowed: it is a {found[0].kind.value}, not a switch")
        try:
            tag = self.s.tags.place(target, kind, operator.name, request.reason)
        except TagError as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        topo.republish(UpdateCause.MARKING)
        return convert.marking(tag, (found[0].mrid, found[0].name))

    @_handled(Permission.TAG, "unmark a network element")
    def UnmarkElement(self, request: pb.UnmarkElementRequest, context: grpc.ServicerContext,
                      operator: OperatorConfig) -> pb.Marking:
        topo = self._topo(context)
        tag = self.s.tags.get(request.tag_id)
        if tag is None or tag.kind not in _MARKING_TAGS:
            _abort(context, grpc.StatusCode.NOT_FOUND, f"cannot unmark: no marking with tag id {request.tag_id}")
        removed = self.s.tags.remove(request.tag_id, operator.name, request.reason)
        topo.republish(UpdateCause.MARKING)
        found = topo.element_buses(removed.target)
        return convert.marking(removed, (found[0].mrid, found[0].name) if found else None)


class ModelServicer(_Base, pb_grpc.ModelServiceServicer):
    """The live network model: info and reconfiguration export for any role, GIS differences for engineers and
    admins only (a model change is configuration work); FAILED_PRECONDITION without a network model."""

    def __init__(self, services: Services, model: ModelService | None) -> None:
        super().__init__(services)
        self.model = model

    def _model(self, context: grpc.ServicerContext) -> ModelService:
        if self.model is None:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   "this station has no network model: add [network] cim = \"file.xml\" to its configuration")
        return self.model

    @_handled(Permission.READ, "read the network model information")
    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext,
                     operator: OperatorConfig) -> pb.ModelInfo:
        i = self._model(context).info()
        return pb.ModelInfo(name=i.name, version=i.version, source=i.source, persisted_file=i.persisted_file,
                            buses=i.buses, lines=i.lines, transformers=i.transformers, switches=i.switches,
                            loads=i.loads, feeders=i.feeders, updated_ms=i.updated_ms, updated_by=i.updated_by)

    @_handled(Permission.READ, "apply a network model difference")
    def ApplyDifference(self, request: pb.ApplyDifferenceRequest, context: grpc.ServicerContext,
                        operator: OperatorConfig) -> pb.ApplyDifferenceResponse:
        if operator.role not in _MODEL_EDIT_ROLES:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED,
                   f"operator {operator.name} (role {operator.role.value}) may not apply a network model "
                   f"difference: that needs the engineer or admin role")
        service = self._model(context)
        summary, version = service.apply(request.document, operator, dry_run=request.dry_run,
                                         source=request.source or "<difference>")
        return _summary_message(summary, version, service.model.name, applied=not request.dry_run)

    @_handled(Permission.READ, "export the network reconfiguration")
    def ExportReconfiguration(self, request: pb.ExportReconfigurationRequest, context: grpc.ServicerContext,
                              operator: OperatorConfig) -> pb.ExportReconfigurationResponse:
        out = self._model(context).export_changes(
            permanent=request.permanent, since=ExportBase.NORMAL if request.since_normal else ExportBase.MODEL,
            operator=operator.name, reason=request.reason)
        r = out.reconfiguration
        return pb.ExportReconfigurationResponse(
            document=out.document, model_version=out.model_version, when=r.when.isoformat(),
            description=r.description(),
            switches=[pb.SwitchChangeInfo(mrid=s.mrid, name=s.name, closed_before=s.closed_before,
                                          closed_after=s.closed_after, normal_open_before=s.normal_open_before,
                                          normal_open_after=s.normal_open_after) for s in r.switches],
            transformers=[_feeder_change(m) for m in r.transformers], loads=[_feeder_change(m) for m in r.loads],
            table=r.table(), json=json.dumps(r.to_json()), uncertain_switches=out.uncertain_switches)


_MODEL_EDIT_ROLES = frozenset({Role.ENGINEER, Role.ADMIN})


def _object_change(o: ObjectChange) -> pb.ObjectChangeInfo:
    return pb.ObjectChangeInfo(cim_class=o.cim_class, mrid=o.mrid, name=o.name, changes=[
        pb.PropertyChangeInfo(prop=c.prop, old=c.old or "", new=c.new or "", has_old=c.old is not None,
                              has_new=c.new is not None) for c in o.changes])


def _summary_message(summary: DifferenceSummary, version: int, model_name: str, *, applied: bool
                     ) -> pb.ApplyDifferenceResponse:
    h = summary.header
    return pb.ApplyDifferenceResponse(
        applied=applied, model_version=version, model_name=model_name, difference_mrid=h.mrid, created=h.created,
        description=h.description, added=[_object_change(o) for o in summary.added],
        removed=[_object_change(o) for o in summary.removed], changed=[_object_change(o) for o in summary.changed],
        by_class=[pb.ClassChangeCount(cim_class=cls, added=c["added"], removed=c["removed"], changed=c["changed"])
                  for cls, c in summary.by_class().items()])


def _feeder_change(m: FeederMove) -> pb.FeederChange:
    return pb.FeederChange(mrid=m.mrid, name=m.name, kind=m.kind.value, old_feeder=m.old_feeder,
                           new_feeder=m.new_feeder, customers=m.customers, usage_points=m.usage_points)


# ------------------------------------------------------------------------------------------------ server


#: Adds more servicers (the DMS applications') to a server and returns their full service names.
Registrar = Callable[[grpc.Server], Sequence[str]]


def build_grpc_server(services: Services, address: str, *, topology: TopologyService | None = None,
                      model: ModelService | None = None,
                      registrars: Sequence[Registrar] = ()) -> tuple[grpc.Server, int]:
    """A server with every service, health checking and reflection, bound to ``address`` (port may be 0).
    ``topology`` serves the TopologyService and ``model`` the ModelService (without them, their calls answer
    FAILED_PRECONDITION).

    Returns the server (not started) and the bound port. Each open stream holds one worker thread; calls beyond
    ``server.grpc_workers`` concurrent ones are refused with RESOURCE_EXHAUSTED instead of queuing unseen.
    """
    workers = max(4, services.config.server.grpc_workers)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=workers,
        # no SO_REUSEPORT: a second server on a busy port must fail, not silently share it
        options=[("grpc.so_reuseport", 0)],
    )
    pb_grpc.add_PointServiceServicer_to_server(PointServicer(services), server)
    pb_grpc.add_ControlServiceServicer_to_server(ControlServicer(services, topology), server)
    pb_grpc.add_RtuServiceServicer_to_server(RtuServicer(services), server)
    pb_grpc.add_AlarmServiceServicer_to_server(AlarmServicer(services), server)
    pb_grpc.add_HistoryServiceServicer_to_server(HistoryServicer(services), server)
    pb_grpc.add_TopologyServiceServicer_to_server(TopologyServicer(services, topology), server)
    pb_grpc.add_ModelServiceServicer_to_server(ModelServicer(services, model), server)
    names = list(SERVICE_NAMES)
    for registrar in registrars:
        names.extend(registrar(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ApiError(f"gRPC server: cannot bind {address}: {exc}") from None
    if port == 0:
        raise ApiError(f"gRPC server: cannot bind {address}")
    return server, port
