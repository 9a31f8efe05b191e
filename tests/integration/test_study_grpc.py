"""Study mode over gRPC on the sample station: open several cases, edit, run, compare with real time; nothing
reaches the field (no command in the audit log) and an open study survives a server restart."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import sample_network_config

from dms.api.protos import study_pb2 as pb
from dms.api.protos import study_pb2_grpc as pb_grpc
from dms.server import DmsApplications
from models.config import StationConfig
from scada.server import ControlCenter

ENGINEER = (("authorization", "Bearer engineer-demo-token"),)
OPERATOR = (("authorization", "Bearer operator-demo-token"),)


class _Server:
    def __init__(self, config: StationConfig) -> None:
        self.center = ControlCenter(config, grpc_address="127.0.0.1:0", start_adapters=False)
        self.dms = DmsApplications(self.center)
        self.center.start()
        self.dms.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.center.grpc_port}")
        self.stub = pb_grpc.StudyServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.dms.stop()
        self.center.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    s = _Server(sample_network_config(tmp_path))
    try:
        yield s
    finally:
        s.close()


def _edit(kind: int, element: str, value: float, value2: float = math.nan) -> pb.StudyEdit:
    return pb.StudyEdit(kind=kind, element=element, value=value, value2=value2)


def test_two_studies_edit_run_and_compare_without_touching_the_field(server: _Server) -> None:
    stub = server.stub
    a = stub.OpenStudy(pb.OpenStudyRequest(name="tie F1-F2"), metadata=ENGINEER)
    b = stub.OpenStudy(pb.OpenStudyRequest(name="heavy F4"), metadata=ENGINEER)
    assert a.id != b.id and a.owner == "engineer"
    a = stub.EditStudy(pb.EditStudyRequest(id=a.id, edits=[
        _edit(pb.EDIT_KIND_SWITCH, "F1-RMU08-LBS2", 1), _edit(pb.EDIT_KIND_SWITCH, "F2-RMU06-LBS1", 0)]),
        metadata=ENGINEER)
    assert "F1-RMU08-LBS2" not in a.open_switches and "F2-RMU06-LBS1" in a.open_switches
    assert [e.text for e in a.edits] == ["F1-RMU08-LBS2 closed", "F2-RMU06-LBS1 opened"]
    b = stub.EditStudy(pb.EditStudyRequest(id=b.id, edits=[_edit(pb.EDIT_KIND_SCALE_LOADS, "F4", 1.8)]),
                       metadata=ENGINEER)
    run = stub.RunStudy(pb.RunStudyRequest(id=a.id, kind=pb.RUN_KIND_POWER_FLOW), metadata=ENGINEER)
    assert run.ok and run.voltages and "losses" in run.summary
    heavy = stub.RunStudy(pb.RunStudyRequest(id=b.id, kind=pb.RUN_KIND_POWER_FLOW), metadata=ENGINEER)
    assert heavy.summary != run.summary
    cmp_a = stub.CompareWithRealTime(pb.StudyRef(id=a.id), metadata=OPERATOR)
    assert {(d.switch, d.study_closed, d.real_time_closed) for d in cmp_a.switches} == {
        ("F1-RMU08-LBS2", True, False), ("F2-RMU06-LBS1", False, True)}
    cmp_b = stub.CompareWithRealTime(pb.StudyRef(id=b.id), metadata=OPERATOR)
    assert not cmp_b.switches and cmp_b.study_load_p_w > 1.1 * cmp_b.real_time_load_p_w  # F4 is a sixth of the load
    assert cmp_b.largest_voltage_differences
    # nothing went to the field, and real time is as it was
    assert not [e for e in server.center.audit.query() if e.outcome.value in ("sent", "answered")]
    assert not server.center.topology.switch_state("F1-RMU08-LBS2").closed
    listed = stub.ListStudies(pb.ListStudiesRequest(), metadata=OPERATOR)
    assert {s.id for s in listed.studies} == {a.id, b.id}


def test_errors_name_the_problem_and_roles_are_enforced(server: _Server) -> None:
    stub = server.stub
    with pytest.raises(grpc.RpcError) as exc:
        stub.OpenStudy(pb.OpenStudyRequest(name="x"), metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.PERMISSION_DENIED
    s = stub.OpenStudy(pb.OpenStudyRequest(name="bad edits"), metadata=ENGINEER)
    with pytest.raises(grpc.RpcError) as exc:
        stub.EditStudy(pb.EditStudyRequest(id=s.id, edits=[_edit(pb.EDIT_KIND_SWITCH, "NO-SUCH-SWITCH", 1)]),
                       metadata=ENGINEER)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND and "NO-SUCH-SWITCH" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetStudy(pb.StudyRef(id=999), metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND and "999" in exc.value.details()
    s = stub.EditStudy(pb.EditStudyRequest(id=s.id, edits=[_edit(pb.EDIT_KIND_LINE_OUT, "F2-C04", 0),
                                                           _edit(pb.EDIT_KIND_MEASUREMENT, "F1-CB.A.ph_A", 500.0)]),
                       metadata=ENGINEER)
    run = stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_POWER_FLOW), metadata=ENGINEER)
    assert run.ok  # the tail of F2 is dead, not a violation
    assert len(stub.UndoEdit(pb.UndoRequest(id=s.id), metadata=ENGINEER).edits) == 1
    closed = stub.CloseStudy(pb.StudyRef(id=s.id), metadata=ENGINEER)
    assert closed.id == s.id
    with pytest.raises(grpc.RpcError) as exc:
        stub.GetStudy(pb.StudyRef(id=s.id), metadata=OPERATOR)
    assert exc.value.code() is grpc.StatusCode.NOT_FOUND


def test_an_open_study_survives_a_restart(tmp_path: Path) -> None:
    config = sample_network_config(tmp_path)
    first = _Server(config)
    try:
        s = first.stub.OpenStudy(pb.OpenStudyRequest(name="kept"), metadata=ENGINEER)
        first.stub.EditStudy(pb.EditStudyRequest(id=s.id, edits=[_edit(pb.EDIT_KIND_SWITCH, "SS-BC", 1)]),
                             metadata=ENGINEER)
    finally:
        first.close()
    second = _Server(config)
    try:
        again = second.stub.GetStudy(pb.StudyRef(id=s.id), metadata=ENGINEER)
        assert again.name == "kept" and "SS-BC" not in again.open_switches
        assert [e.text for e in again.edits] == ["SS-BC closed"]
        new = second.stub.OpenStudy(pb.OpenStudyRequest(name="next"), metadata=ENGINEER)
        assert new.id > s.id
    finally:
        second.close()


def test_every_application_runs_in_a_study(server: _Server) -> None:
    """FLISR, reconfiguration, Volt/VAR and the estimator on the study's own state (no field data needed: the
    estimator gets edited measurements on top of the snapshot)."""
    stub = server.stub
    s = stub.OpenStudy(pb.OpenStudyRequest(name="all apps"), metadata=ENGINEER)
    flisr = stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_FLISR, fault_line="F2-C04"), metadata=ENGINEER)
    assert flisr.ok and "F1-RMU08-LBS2" in " ".join(flisr.details), flisr.details
    vv = stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_VOLT_VAR, objective="cvr"), metadata=ENGINEER)
    assert "cvr" in vv.summary and "SS-TR" in " ".join(vv.details)
    with pytest.raises(grpc.RpcError) as exc:
        stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_VOLT_VAR, objective="max"), metadata=ENGINEER)
    assert exc.value.code() is grpc.StatusCode.FAILED_PRECONDITION and "cvr" in exc.value.details()
    with pytest.raises(grpc.RpcError) as exc:
        stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_FLISR, fault_line="NOPE"), metadata=ENGINEER)
    assert "NOPE" in exc.value.details()
    rc = stub.RunStudy(pb.RunStudyRequest(id=s.id, kind=pb.RUN_KIND_RECONFIGURATION, objective="losses"),
                       metadata=ENGINEER)
    assert rc.summary.startswith("losses:") and "kW" in rc.summary and rc.result_json
    runs = stub.GetStudy(pb.StudyRef(id=s.id), metadata=ENGINEER).runs
    assert runs == 3
    # nothing reached the field
    assert not [e for e in server.center.audit.query() if e.outcome.value in ("sent", "answered")]
