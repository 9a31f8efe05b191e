"""The head-end's gRPC sender: a bounded queue that keeps messages while the control centre is down (overflow
counted), delivers them in order once it is up, and drops (counts) what the centre refuses. A real gRPC server with
a minimal OutageService stands in for the centre."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import pytest

from dms.api.protos import oms_pb2 as pb
from dms.api.protos import oms_pb2_grpc as pb_grpc
from rtu_sim.ami_headend import AmiError
from rtu_sim.ami_service import GrpcEventSender


class Centre(pb_grpc.OutageServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[str] = []
        self.tokens: set[str] = set()

    def SubmitMeterEvents(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC's name
        message = json.loads(request.end_device_events_json)
        self.tokens.add(dict(context.invocation_metadata()).get("authorization", ""))
        if message["Header"]["MessageID"] == "bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "event[0].Assets.mRID: empty")
        with self.lock:
            self.received.append(message["Header"]["MessageID"])
        return pb.IngestReply(total=1, applied=1)


def _message(mid: str) -> dict[str, Any]:
    return {"Header": {"Verb": "created", "Noun": "EndDeviceEvents", "MessageID": mid},
            "Payload": {"EndDeviceEvents": {"EndDeviceEvent": [{"mRID": f"{mid}-1"}, {"mRID": f"{mid}-2"}]}}}


def _wait(cond: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_sender_keeps_messages_while_the_centre_is_down_and_delivers_them_in_order() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = GrpcEventSender(f"127.0.0.1:{port}", "operator-demo-token", queue_max=3, retry_s=0.1,
                             rpc_timeout_s=2)
    sender.start()
    server = None
    try:
        for i in range(5):
            sender.sink(_message(f"m{i}"))
        _wait(lambda: sender.counts()["retries"] >= 2, "retries while the centre is down")
        c = sender.counts()
        assert (c["queued"], c["overflow"], c["sent"]) == (3, 2, 0)  # the two oldest dropped, counted
        centre = Centre()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_OutageServiceServicer_to_server(centre, server)
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        server.start()
        _wait(lambda: sender.counts()["sent"] == 3, "the queued messages delivered")
        sender.sink(_message("bad"))
        sender.sink(_message("m5"))
        _wait(lambda: sender.counts()["sent"] == 4, "the message after a refused one")
        c = sender.counts()
        assert (c["queued"], c["rejected"], c["events"]) == (0, 1, 8)
        assert centre.received == ["m2", "m3", "m4", "m5"]
        assert centre.tokens == {"Bearer operator-demo-token"}
    finally:
        sender.stop()
        if server is not None:
            server.stop(None)


def test_sender_options_are_checked() -> None:
    with pytest.raises(AmiError, match="bearer token is required"):
        GrpcEventSender("127.0.0.1:1", "")
    with pytest.raises(AmiError, match="queue_max must be >= 1"):
        GrpcEventSender("127.0.0.1:1", "t", queue_max=0)


def test_rtu_sim_cli_refuses_ami_options_it_cannot_honour(tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from support import sample_network_config

    from rtu_sim.cli import main

    config = sample_network_config(tmp_path)
    monkeypatch.delenv("DSCADA_AMI_TOKEN", raising=False)
    assert main(["--config", str(config.source_path), "--ami-grpc", "127.0.0.1:1"]) == 2
    assert "--ami-grpc needs an operator's bearer token" in capsys.readouterr().err
    for _ in range(2):  # the refused simulator is stopped: a second one can be built in the same process
        assert main(["--config", str(config.source_path), "--no-physics", "--ami-http", "0"]) == 2
        assert "--ami-grpc/--ami-http need grid physics" in capsys.readouterr().err
