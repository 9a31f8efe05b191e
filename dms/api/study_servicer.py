"""gRPC StudyService: study cases over the operator API (engineers edit and run, everyone may look)."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np

from dms.api.protos import study_pb2 as pb
from dms.api.protos import study_pb2_grpc as pb_grpc
from dms.api.servicing import DmsServicerBase, handled
from dms.flow_check import FlowCheck
from dms.study import EditKind, RunKind, StudyCase, StudyEdit, StudyError, StudyManager, compare_states
from dms.study.runners import (
    Runner,
    flisr_runner,
    power_flow_runner,
    reconfiguration_runner,
    state_estimation_runner,
    voltvar_runner,
)
from models.config import OperatorConfig
from models.timebase import now_ms
from scada.auth import Permission
from scada.services import Services

__all__ = ["StudyServicer", "register", "to_jsonable"]

_EDIT_KINDS = {pb.EDIT_KIND_SWITCH: EditKind.SWITCH, pb.EDIT_KIND_LOAD: EditKind.LOAD,
               pb.EDIT_KIND_SCALE_LOADS: EditKind.SCALE_LOADS, pb.EDIT_KIND_TAP: EditKind.TAP,
               pb.EDIT_KIND_CAPACITOR: EditKind.CAPACITOR, pb.EDIT_KIND_LINE_OUT: EditKind.LINE_OUT,
               pb.EDIT_KIND_MEASUREMENT: EditKind.MEASUREMENT}
_EDIT_CODES = {v: k for k, v in _EDIT_KINDS.items()}
_RUN_KINDS = {pb.RUN_KIND_POWER_FLOW: RunKind.POWER_FLOW, pb.RUN_KIND_STATE_ESTIMATION: RunKind.STATE_ESTIMATION,
              pb.RUN_KIND_FLISR: RunKind.FLISR, pb.RUN_KIND_RECONFIGURATION: RunKind.RECONFIGURATION,
              pb.RUN_KIND_VOLT_VAR: RunKind.VOLT_VAR}
_RUN_CODES = {v: k for k, v in _RUN_KINDS.items()}

#: Extra runners by kind, added by the composition when the application is present: (request) -> Runner.
RunnerFactory = Callable[[pb.RunStudyRequest], tuple[str, Runner]]


def to_jsonable(obj: Any, *, depth: int = 0) -> Any:
    """A result object as plain JSON values: dataclasses by field, enums by value, small arrays as lists; big
    numerical blocks (power-flow tables) are left out."""
    if depth > 8:
        return None
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name), depth=depth + 1) for f in dataclasses.fields(obj)
                if not (isinstance(obj, FlowCheck) and f.name == "flow")}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, depth=depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, depth=depth + 1) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 1000 and obj.dtype.names is None else None
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


def _details(result: Any) -> list[str]:
    """The result in lines: violations, FLISR steps, reconfiguration sequence, Volt/VAR actions or bad data."""
    if isinstance(result, FlowCheck):
        return [v.text() for v in result.violations]
    notes = [str(n) for n in getattr(result, "notes", ())]
    steps = getattr(result, "steps", None)
    if steps:
        return [f"{s.number}. {getattr(s.action, 'value', s.action)} {s.switch}: {s.reason}" for s in steps] + notes
    sequence = getattr(result, "sequence", None)
    if sequence:
        return [f"{s.number}. {getattr(s.action, 'value', s.action)} {s.element} ({getattr(s.mode, 'value', s.mode)})"
                f": losses {s.losses_mw * 1e3:.1f} kW" for s in sequence] + notes
    actions = getattr(result, "actions", None)
    if actions:
        return [a.text() for a in actions] + [str(getattr(result, "message", ""))]
    bad = getattr(result, "bad_data", None)
    if bad:
        return [f"bad data {b.measurement}: reads {b.value:.4g}, estimate {b.estimate:.4g}, normalised residual "
                f"{b.normalized_residual:.1f}" for b in bad] + notes
    return notes


def _voltages(result: Any) -> list[pb.NodeVoltage]:
    nodes = getattr(result, "nodes", None)
    if isinstance(nodes, np.ndarray) and nodes.dtype.names and "observable" in nodes.dtype.names:  # an estimate
        return [pb.NodeVoltage(bus=str(n["bus"]), phase=str(n["phase"]), v_pu=float(n["v_pu"]),
                               energised=bool(n["observable"])) for n in nodes]
    flow = getattr(result, "flow", None)
    if flow is None:
        return []
    return [pb.NodeVoltage(bus=str(n["bus"]), phase=str(n["phase"]), v_pu=float(n["v_pu"]),
                           energised=bool(n["energised"])) for n in flow.nodes]


class StudyServicer(DmsServicerBase, pb_grpc.StudyServiceServicer):
    def __init__(self, services: Services, manager: StudyManager,
                 runners: dict[RunKind, RunnerFactory] | None = None) -> None:
        super().__init__(services)
        self.manager = manager
        config = services.config
        self.runners: dict[RunKind, RunnerFactory] = {
            RunKind.POWER_FLOW: lambda req: ("", power_flow_runner()),
            RunKind.FLISR: lambda req: (f"fault on {req.fault_line}", flisr_runner(req.fault_line)),
            RunKind.STATE_ESTIMATION: lambda req: ("study measurements", state_estimation_runner(config)),
            RunKind.RECONFIGURATION: lambda req: (f"objective {req.objective or 'losses'}",
                                                  reconfiguration_runner(req.objective)),
            RunKind.VOLT_VAR: lambda req: (f"objective {req.objective or 'losses'}", voltvar_runner(req.objective)),
            **(runners or {}),
        }

    def _info(self, case: StudyCase) -> pb.StudyInfo:
        state = case.state
        return pb.StudyInfo(
            id=case.id, name=case.name, owner=case.owner, created_ms=case.created_ms, network=state.base.name,
            edits=[pb.StudyEdit(kind=_EDIT_CODES[e.kind], element=e.element, value=e.value, value2=e.value2,
                                operator=e.operator, time_ms=e.time_ms, text=e.text()) for e in case.edits],
            runs=len(case.runs), open_switches=list(state.open_switches()), load_p_w=float(state.load_p_w.sum()))

    @handled(Permission.STUDY, "open a study")
    def OpenStudy(self, request: pb.OpenStudyRequest, context: grpc.ServicerContext,
                  operator: OperatorConfig) -> pb.StudyInfo:
        return self._info(self.manager.open(request.name, operator.name))

    @handled(Permission.READ, "list studies")
    def ListStudies(self, request: pb.ListStudiesRequest, context: grpc.ServicerContext,
                    operator: OperatorConfig) -> pb.ListStudiesResponse:
        return pb.ListStudiesResponse(studies=[self._info(c) for c in self.manager.list()])

    @handled(Permission.READ, "read a study")
    def GetStudy(self, request: pb.StudyRef, context: grpc.ServicerContext, operator: OperatorConfig) -> pb.StudyInfo:
        return self._info(self.manager.get(request.id))

    @handled(Permission.STUDY, "edit a study")
    def EditStudy(self, request: pb.EditStudyRequest, context: grpc.ServicerContext,
                  operator: OperatorConfig) -> pb.StudyInfo:
        case = self.manager.get(request.id)
        for i, e in enumerate(request.edits):
            kind = _EDIT_KINDS.get(e.kind)
            if kind is None:
                raise StudyError(f"study {case.id}: edit {i + 1} has no kind")
            try:
                case.edit(StudyEdit(kind, e.element, e.value, e.value2, operator.name, now_ms()))
            except (StudyError, LookupError, ValueError) as exc:
                self.manager.save(case)
                raise type(exc)(f"edit {i + 1} of {len(request.edits)} ({kind.value} {e.element!r}): {exc}") \
                    from exc
        self.manager.save(case)
        return self._info(case)

    @handled(Permission.STUDY, "undo a study edit")
    def UndoEdit(self, request: pb.UndoRequest, context: grpc.ServicerContext, operator: OperatorConfig
                 ) -> pb.StudyInfo:
        case = self.manager.get(request.id)
        case.undo()
        self.manager.save(case)
        return self._info(case)

    @handled(Permission.STUDY, "run an application in a study")
    def RunStudy(self, request: pb.RunStudyRequest, context: grpc.ServicerContext,
                 operator: OperatorConfig) -> pb.StudyRunResult:
        case = self.manager.get(request.id)
        kind = _RUN_KINDS.get(request.kind)
        if kind is None:
            raise StudyError("a run kind is required")
        factory = self.runners.get(kind)
        if factory is None:
            raise StudyError(f"{kind.value} is not available on this server")
        parameters, runner = factory(request)
        run = case.run(kind, parameters, runner)
        return pb.StudyRunResult(
            study_id=case.id, number=run.number, kind=_RUN_CODES[run.kind], parameters=run.parameters,
            time_ms=run.time_ms, elapsed_ms=run.elapsed_ms, ok=run.ok, summary=run.summary,
            details=_details(run.result), result_json=json.dumps(to_jsonable(run.result)),
            voltages=_voltages(run.result))

    @handled(Permission.READ, "compare a study with real time")
    def CompareWithRealTime(self, request: pb.StudyRef, context: grpc.ServicerContext,
                            operator: OperatorConfig) -> pb.StudyComparison:
        case = self.manager.get(request.id)
        c = compare_states(case.state, self.manager.live_state())
        return pb.StudyComparison(
            study_id=case.id,
            switches=[pb.SwitchDifference(switch=s, study_closed=a, real_time_closed=b) for s, a, b in c.switches],
            study_load_p_w=c.study_load_p_w, real_time_load_p_w=c.real_time_load_p_w,
            study_loss_p_w=c.study_loss_p_w, real_time_loss_p_w=c.real_time_loss_p_w,
            study_v_min_pu=c.study_v_min_pu, real_time_v_min_pu=c.real_time_v_min_pu,
            study_max_loading_pct=c.study_max_loading_pct, real_time_max_loading_pct=c.real_time_max_loading_pct,
            study_customers_off=c.study_customers_off, real_time_customers_off=c.real_time_customers_off,
            largest_voltage_differences=[pb.BusDifference(bus=d.bus, phase=d.phase, study_v_pu=d.study_v_pu,
                                                          real_time_v_pu=d.real_time_v_pu)
                                         for d in c.largest_voltage_differences],
            study_check=c.study_check, real_time_check=c.real_time_check)

    @handled(Permission.STUDY, "close a study")
    def CloseStudy(self, request: pb.StudyRef, context: grpc.ServicerContext, operator: OperatorConfig
                   ) -> pb.StudyInfo:
        return self._info(self.manager.close(request.id))


def register(server: grpc.Server, services: Services, manager: StudyManager,
             runners: dict[RunKind, RunnerFactory] | None = None) -> list[str]:
    pb_grpc.add_StudyServiceServicer_to_server(StudyServicer(services, manager, runners), server)
    return [pb.DESCRIPTOR.services_by_name["StudyService"].full_name]
