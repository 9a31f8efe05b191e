"""A small client of the DMS gRPC services for programs and the demo: one channel, the bearer token on every call."""

from __future__ import annotations

import importlib
from typing import Any

import grpc

__all__ = ["DmsClient"]

#: attribute -> (generated module, stub class)
_STUBS = {
    "flisr": ("dms.api.protos.flisr_pb2_grpc", "FlisrServiceStub"),
    "study": ("dms.api.protos.study_pb2_grpc", "StudyServiceStub"),
    "voltvar": ("dms.api.protos.voltvar_pb2_grpc", "VoltVarStub"),
    "switching": ("dms.api.protos.switching_pb2_grpc", "SwitchingOrdersStub"),
    "se": ("dms.api.protos.se_pb2_grpc", "StateEstimationServiceStub"),
    "reconfig": ("dms.api.protos.reconfig_pb2_grpc", "ReconfigurationStub"),
    "oms": ("dms.api.protos.oms_pb2_grpc", "OutageServiceStub"),
    "planned": ("dms.api.protos.oms_planned_pb2_grpc", "PlannedOutagesStub"),
    "reliability": ("dms.api.protos.oms_reliability_pb2_grpc", "ReliabilityStub"),
    "billing": ("dms.api.protos.oms_billing_pb2_grpc", "BillingFeedStub"),
}


class _Authorised:
    """A stub whose every method sends the token."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...], timeout_s: float) -> None:
        self._stub = stub
        self._md = metadata
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._md)
            if not name.startswith("Watch"):
                kwargs.setdefault("timeout", self._timeout_s)
            return method(request, **kwargs)

        return call


class DmsClient:
    def __init__(self, address: str, token: str, *, timeout_s: float = 60.0) -> None:
        self.channel = grpc.insecure_channel(address)
        self._md = (("authorization", f"Bearer {token}"),)
        self._timeout_s = timeout_s
        self._stubs: dict[str, _Authorised] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in _STUBS:
            raise AttributeError(name)
        if name not in self._stubs:
            module, cls = _STUBS[name]
            self._stubs[name] = _Authorised(getattr(importlib.import_module(module), cls)(self.channel), self._md,
                                            self._timeout_s)
        return self._stubs[name]

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> DmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
