"""Typed Python client of the dscada operator API, used by the CLI, the demo, the tests and the benchmarks.

Methods return the protobuf messages of ``scada.api.protos.scada_pb2`` (documented in ``scada.proto``); lists come
back as plain Python lists. Every gRPC failure is raised as :class:`ClientError` with the status code, the server's
message and, for a refused command, the refusal reason. Streams are :class:`Stream` iterators: ``cancel()`` (or
leaving a ``with`` block) ends them cleanly from any thread.

Points are given as ids (int) or names (str) wherever the API takes a point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from models.points import Priority
from scada.api.protos import scada_pb2 as pb
from scada.api.protos import scada_pb2_grpc as pb_grpc

T = TypeVar("T")

#: Same key as scada.api.server.REFUSAL_METADATA_KEY (not imported: the client must not need the server's deps).
_REFUSAL_KEY = "dscada-refusal-reason"

PointLike = int | str


class ClientError(Exception):
    """A call failed: ``code`` is the gRPC status, ``message`` the server's sentence, ``refusal`` the
    CommandRefused reason ("tagged", "not_selected", ...) when the server refused a command, else ""."""

    def __init__(self, code: grpc.StatusCode, message: str, refusal: str = "") -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.refusal = refusal


def _error(exc: grpc.RpcError) -> ClientError:
    call: Any = exc
    refusal = ""
    try:
        for key, value in call.trailing_metadata() or ():
            if key == _REFUSAL_KEY:
                refusal = str(value)
    except (AttributeError, ValueError):  # a connection failure carries no metadata
        pass
    code = call.code() if hasattr(call, "code") else grpc.StatusCode.UNKNOWN
    details = call.details() if hasattr(call, "details") else str(exc)
    return ClientError(code, details or code.name.lower(), refusal)


def point_ref(point: PointLike) -> pb.PointRef:
    if isinstance(point, bool) or not isinstance(point, int | str):
        raise TypeError(f"a point is an id (int) or a name (str), not {point!r}")
    return pb.PointRef(id=point) if isinstance(point, int) else pb.PointRef(name=point)


def point_selector(points: Sequence[PointLike] | None) -> pb.PointSelector:
    sel = pb.PointSelector()
    for p in points or ():
        ref = point_ref(p)
        if ref.WhichOneof("ref") == "id":
            sel.ids.append(ref.id)
        else:
            sel.names.append(ref.name)
    return sel


class Stream(Generic[T]):
    """A server stream; iterate for messages. Ends (StopIteration) after ``cancel()`` or when the server ends it."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = threading.Event()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._call)
        except grpc.RpcError as exc:
            if self._cancelled.is_set() and exc.code() == grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise StopIteration from None
            raise _error(exc) from None

    def cancel(self) -> None:
        self._cancelled.set()
        self._call.cancel()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class ScadaClient:
    """One channel to a dscada server. Thread-safe (gRPC channels are); ``close()`` when done.

    ``timeout_s`` bounds every unary call except controls, which get ``command_timeout_s`` because the server waits
    for the field's answer and the status feedback (10 s each by default).
    """

    def __init__(self, address: str, token: str, timeout_s: float = 10.0, *, command_timeout_s: float = 30.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.command_timeout_s = command_timeout_s
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._channel = grpc.insecure_channel(address)
        self._points = pb_grpc.PointServiceStub(self._channel)
        self._controls = pb_grpc.ControlServiceStub(self._channel)
        self._alarms = pb_grpc.AlarmServiceStub(self._channel)
        self._rtus = pb_grpc.RtuServiceStub(self._channel)
        self._history = pb_grpc.HistoryServiceStub(self._channel)
        self._topology = pb_grpc.TopologyServiceStub(self._channel)
        self._model = pb_grpc.ModelServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    # ------------------------------------------------------------------------------------------ plumbing
    def _unary(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return method(request, metadata=self._metadata, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def _stream(self, method: Any, request: Any) -> Stream[Any]:
        return Stream(method(request, metadata=self._metadata))

    def wait_ready(self, timeout_s: float = 5.0) -> None:
        """Block until the channel is connected; ClientError UNAVAILABLE naming the address otherwise."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise ClientError(grpc.StatusCode.UNAVAILABLE,
                              f"no dscada server answering at {self.address} within {timeout_s:g} s") from None

    def health(self, service: str = "") -> str:
        """Health status name of ``service`` ("" = the whole server), e.g. "SERVING"."""
        resp = self._unary(self._health.Check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ScadaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ points
    def list_points(self, name_contains: str = "") -> list[pb.PointDefinition]:
        return list(self._unary(self._points.ListPoints, pb.ListPointsRequest(name_contains=name_contains)).points)

    def read(self, points: Sequence[PointLike] | None = None) -> list[pb.PointValue]:
        """Current values of ``points`` (None = all, in id order), in request order."""
        req = pb.ReadPointsRequest(points=point_selector(points))
        values = list(self._unary(self._points.ReadPoints, req).values)
        if points is None:
            return values
        # the wire carries ids and names apart (the server answers ids first); give them back as asked
        by_id = {v.point: v for v in values}
        by_name = {v.name: v for v in values}
        return [by_id[p] if isinstance(p, int) else by_name[p] for p in points]

    def subscribe(self, points: Sequence[PointLike] | None = None, *, max_pending: int = 0) -> Stream[pb.PointUpdate]:
        """Snapshot message(s) first (``snapshot``; the last has ``end_of_snapshot``), then one per change set."""
        req = pb.SubscribePointsRequest(points=point_selector(points), max_pending=max_pending)
        return self._stream(self._points.SubscribePoints, req)

    # ------------------------------------------------------------------------------------------ controls
    def select(self, point: PointLike, value: float) -> pb.ControlResult:
        req = pb.SelectRequest(point=point_ref(point), value=value)
        return self._unary(self._controls.Select, req, self.command_timeout_s)

    def operate(self, point: PointLike, value: float) -> pb.ControlResult:
        req = pb.OperateRequest(point=point_ref(point), value=value)
        return self._unary(self._controls.Operate, req, self.command_timeout_s)

    def cancel(self, point: PointLike) -> pb.ControlResult:
        return self._unary(self._controls.Cancel, pb.CancelRequest(point=point_ref(point)), self.command_timeout_s)

    def tags(self, target: str = "") -> list[pb.Tag]:
        return list(self._unary(self._controls.ListTags, pb.ListTagsRequest(target=target)).tags)

    def place_tag(self, target: str, kind: str, reason: str) -> pb.Tag:
        return self._unary(self._controls.PlaceTag, pb.PlaceTagRequest(target=target, kind=kind, reason=reason))

    def remove_tag(self, tag_id: int, reason: str = "") -> pb.Tag:
        return self._unary(self._controls.RemoveTag, pb.RemoveTagRequest(tag_id=tag_id, reason=reason)).tag

    # ------------------------------------------------------------------------------------------ RTUs
    def rtus(self) -> list[pb.RtuStatus]:
        return list(self._unary(self._rtus.ListRtus, pb.ListRtusRequest()).rtus)

    def interrogate(self, rtu: str = "", *, counters: bool = False) -> list[str]:
        """Ask for a general (or counter) interrogation of ``rtu`` ("" = all); returns the RTUs it was sent to."""
        req = pb.InterrogateRequest(rtu=rtu, counters=counters)
        return list(self._unary(self._rtus.Interrogate, req).rtus)

    def server_status(self) -> pb.ServerStatus:
        return self._unary(self._rtus.GetServerStatus, pb.GetServerStatusRequest())

    def sync_clock(self, rtu: str = "") -> list[str]:
        return list(self._unary(self._rtus.SyncClock, pb.SyncClockRequest(rtu=rtu)).rtus)

    # ------------------------------------------------------------------------------------------ alarms
    def alarms(self, *, include_shelved: bool = False, include_closed: bool = False,
               min_priority: Priority | None = None, limit: int = 0) -> list[pb.Alarm]:
        req = pb.ListAlarmsRequest(include_shelved=include_shelved, include_closed=include_closed,
                                   min_priority=int(min_priority or 0), limit=limit)
        return list(self._unary(self._alarms.ListAlarms, req).alarms)

    def stream_alarms(self, *, include_shelved: bool = False) -> Stream[pb.AlarmEvent]:
        """CURRENT events first, then one SNAPSHOT_DONE marker, then live events."""
        return self._stream(self._alarms.StreamAlarms, pb.StreamAlarmsRequest(include_shelved=include_shelved))

    def acknowledge(self, ids: Sequence[int] | None) -> list[pb.Alarm]:
        """Acknowledge the alarms ``ids``, or every visible one for None; returns the alarms that changed."""
        req = pb.AcknowledgeRequest(all=True) if ids is None else pb.AcknowledgeRequest(ids=list(ids))
        return list(self._unary(self._alarms.Acknowledge, req).alarms)

    def shelve(self, alarm_id: int, duration_s: float, reason: str) -> pb.Alarm:
        req = pb.ShelveRequest(id=alarm_id, duration_s=duration_s, reason=reason)
        return self._unary(self._alarms.Shelve, req)

    def unshelve(self, alarm_id: int) -> pb.Alarm:
        return self._unary(self._alarms.Unshelve, pb.UnshelveRequest(id=alarm_id))

    # ------------------------------------------------------------------------------------------ history
    def soe(self, *, start_ms: int = 0, end_ms: int = 0, points: Sequence[PointLike] | None = None,
            limit: int = 0, oldest_first: bool = False) -> list[pb.SoeEntry]:
        """Sequence-of-events entries, newest first unless ``oldest_first``; 0 means unbounded / server default."""
        req = pb.QuerySoeRequest(start_ms=start_ms, end_ms=end_ms, points=point_selector(points), limit=limit,
                                 oldest_first=oldest_first)
        return list(self._unary(self._history.QuerySoe, req).entries)

    def history(self, point: PointLike, *, start_ms: int = 0, end_ms: int = 0, bucket_s: float = 0.0,
                max_points: int = 0) -> pb.QueryHistoryResponse:
        """Raw samples, or buckets when ``bucket_s`` or ``max_points`` is given (end 0 = now, start 0 = end - 1 h)."""
        req = pb.QueryHistoryRequest(point=point_ref(point), start_ms=start_ms, end_ms=end_ms, bucket_s=bucket_s,
                                     max_points=max_points)
        return self._unary(self._history.QueryHistory, req)

    def audit(self, *, start_ms: int = 0, end_ms: int = 0, point: PointLike | None = None, operator: str = "",
              limit: int = 0) -> list[pb.AuditEntry]:
        req = pb.QueryAuditRequest(start_ms=start_ms, end_ms=end_ms, operator=operator, limit=limit)
        if point is not None:
            req.point.CopyFrom(point_ref(point))
        return list(self._unary(self._history.QueryAudit, req).entries)

    # ------------------------------------------------------------------------------------------ topology
    def colouring(self) -> pb.Colouring:
        """Energization, island, source and feeder of every bus, branch and load, with islands, switch states and
        markings (FAILED_PRECONDITION when the station has no network model)."""
        return self._unary(self._topology.GetColouring, pb.GetColouringRequest())

    def watch_colouring(self, *, max_pending: int = 0) -> Stream[pb.TopologyUpdate]:
        """A full colouring first, then one update per topology change (a full one again after falling behind)."""
        return self._stream(self._topology.WatchColouring, pb.WatchColouringRequest(max_pending=max_pending))

    def trace(self, element: str) -> pb.TraceResponse:
        """An element (name or mRID) traced to its source, with feeder, distribution transformer and customers."""
        return self._unary(self._topology.Trace, pb.TraceRequest(element=element))

    def islands(self) -> pb.ListIslandsResponse:
        return self._unary(self._topology.ListIslands, pb.ListIslandsRequest())

    def set_manual_switch_state(self, switch: str, closed: bool, reason: str = "") -> pb.SwitchState:
        """Dress a switch without a usable field position (audited)."""
        req = pb.SetManualSwitchStateRequest(switch=switch, closed=closed, reason=reason)
        return self._unary(self._topology.SetManualSwitchState, req)

    def mark(self, element: str, kind: str, reason: str) -> pb.Marking:
        """Mark a network element "faulted", "earthed" or (a switch) "parallel_allowed"."""
        return self._unary(self._topology.MarkElement, pb.MarkElementRequest(element=element, kind=kind,
                                                                              reason=reason))

    def unmark(self, tag_id: int, reason: str = "") -> pb.Marking:
        return self._unary(self._topology.UnmarkElement, pb.UnmarkElementRequest(tag_id=tag_id, reason=reason))

    # ------------------------------------------------------------------------------------------ network model
    def model_info(self) -> pb.ModelInfo:
        return self._unary(self._model.GetModelInfo, pb.GetModelInfoRequest())

    def apply_difference(self, document: bytes, *, dry_run: bool = False, source: str = ""
                         ) -> pb.ApplyDifferenceResponse:
        """Apply (or with ``dry_run`` only validate) a CIM difference to the live model (engineer or admin role);
        a refusal is INVALID_ARGUMENT with every problem in the message."""
        req = pb.ApplyDifferenceRequest(document=document, dry_run=dry_run, source=source)
        return self._unary(self._model.ApplyDifference, req)

    def export_reconfiguration(self, *, permanent: bool = False, since_normal: bool = False,
                               reason: str = "") -> pb.ExportReconfigurationResponse:
        """The live switching against the model's (or normal) states as a CIM difference, with the DT moves."""
        req = pb.ExportReconfigurationRequest(permanent=permanent, since_normal=since_normal, reason=reason)
        return self._unary(self._model.ExportReconfiguration, req)
