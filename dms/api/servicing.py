"""What every DMS servicer shares: bearer-token authorisation (the operator API's own), and DMS errors turned into
gRPC statuses whose message is the application's own sentence."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

from dms.errors import DmsError
from dms.network_state import UnknownNetworkElementError
from models.config import OperatorConfig
from scada.api.server import authorise, map_errors
from scada.auth import Permission
from scada.errors import ScadaError
from scada.services import Services

__all__ = ["DmsServicerBase", "abort", "handled", "streamed"]

log = logging.getLogger(__name__)


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def _map(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, UnknownNetworkElementError | LookupError):
        abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, DmsError):
        abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    map_errors(context, exc)  # scada's own errors, ValueError -> INVALID_ARGUMENT, the rest INTERNAL


class DmsServicerBase:
    """Holds the SCADA services (for authorisation and the audit log)."""

    def __init__(self, services: Services) -> None:
        self.s = services

    def _authorise(self, context: grpc.ServicerContext, permission: Permission, action: str) -> OperatorConfig:
        return authorise(self.s.auth, context, permission, action)


def handled(permission: Permission, action: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Unary RPC wrapper: authenticate, authorise, call ``fn(self, request, context, operator)``, map errors."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def rpc(self: DmsServicerBase, request: Any, context: grpc.ServicerContext) -> Any:
            operator = self._authorise(context, permission, action)
            try:
                return fn(self, request, context, operator)
            except (DmsError, ScadaError, ValueError, LookupError) as exc:
                _map(context, exc)

        return rpc

    return wrap


def streamed(permission: Permission, action: str) -> Callable[[Callable[..., Iterator[Any]]], Callable[..., Any]]:
    """Server-streaming variant of :func:`handled`."""

    def wrap(fn: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(fn)
        def rpc(self: DmsServicerBase, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            operator = self._authorise(context, permission, action)
            try:
                yield from fn(self, request, context, operator)
            except (DmsError, ScadaError, ValueError, LookupError) as exc:
                _map(context, exc)

        return rpc

    return wrap
