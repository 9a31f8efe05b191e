"""Deferred responses of the MMS server core (iccp.mms.server): a handler's read/write that returns a Deferred, a
concurrent future or a coroutine is answered when it resolves, with its own invoke id, while the loop answers the
same association's and other associations' requests meanwhile; failures resolve to confirmed errors; a release
waits for pending answers, an abort drops them. Our MMS client over 127.0.0.1."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from open61850.data import FloatData  # noqa: E402
from support import wait_for  # noqa: E402

from iccp.errors import MmsServiceError  # noqa: E402
from iccp.mms import (  # noqa: E402
    AccessResult,
    DataAccessCode,
    Deferred,
    EndReason,
    ErrorClass,
    MmsServer,
    MmsServerConfig,
    ObjectName,
    VariableSpec,
)
from iccp.mms.client import (  # noqa: E402
    MmsAssociation,
    MmsClientConfig,
    MmsConnectionLost,
    MmsEndpoint,
    MmsServiceFailed,
)

SLOW_S = 1.0


class DeferringHandler:
    """Domain D: FAST reads at once; SLOW (a Deferred of a worker's future), CORO (a coroutine) and FAIL (a future
    that fails) come later; a write to SLOW completes after SLOW_S."""

    def __init__(self) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.ended: list[str] = []
        self.finished: list[str] = []

    def associate(self, info: Any) -> str:
        return f"assoc{info.association_id}"

    def _slow(self, value: Any, what: str) -> Any:
        time.sleep(SLOW_S)
        self.finished.append(what)
        return value

    def read(self, ctx: str, variables: Sequence[VariableSpec]) -> Any:
        items = [v.name.item for v in variables]
        if items == ["SLOW"]:
            return Deferred(self.pool.submit(self._slow, [FloatData(1.0)], "read"))
        if items == ["CORO"]:
            async def later() -> list[AccessResult]:
                await asyncio.sleep(0.2)
                return [FloatData(3.0)]
            return later()
        if items == ["FAIL"]:
            def fail() -> None:
                raise MmsServiceError(ErrorClass.ACCESS, 3, "denied later")
            return self.pool.submit(fail)
        return [FloatData(2.0) if i == "FAST" else DataAccessCode.OBJECT_NON_EXISTENT for i in items]

    def write(self, ctx: str, variables: Sequence[VariableSpec], values: Sequence[Any]) -> Any:
        return Deferred(self.pool.submit(self._slow, [None] * len(values), "write"))

    def released(self, ctx: str) -> None:
        self.ended.append(f"{ctx} released")

    def aborted(self, ctx: str, reason: EndReason) -> None:
        self.ended.append(f"{ctx} {reason.value}")


@pytest.fixture()
def served() -> Iterator[tuple[MmsServer, DeferringHandler]]:
    handler = DeferringHandler()
    server = MmsServer(handler, MmsServerConfig(port=0))  # type: ignore[arg-type]
    server.start()
    try:
        yield server, handler
    finally:
        server.stop()
        handler.pool.shutdown(wait=True)


def _connect(server: MmsServer, **config: Any) -> MmsAssociation:
    return MmsAssociation.connect(MmsClientConfig((MmsEndpoint("127.0.0.1", server.port),), request_timeout_s=10.0,
                                                  **config))


def _d(item: str) -> ObjectName:
    return ObjectName.in_domain("D", item)


class _Background(threading.Thread):
    def __init__(self, call: Any) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = "not done"

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # noqa: BLE001 - examined by the test
            self.result = exc


def test_deferred_answers_keep_invoke_ids_and_do_not_stall_the_loop(served: Any) -> None:
    server, _handler = served
    with _connect(server) as a, _connect(server) as b:
        slow = _Background(lambda: a.read([_d("SLOW")]))
        slow.start()
        started = time.monotonic()
        worst = 0.0
        while slow.is_alive() and time.monotonic() - started < 10:
            for assoc in (a, b):  # the same association and another one
                t0 = time.monotonic()
                assert assoc.read([_d("FAST")]) == (FloatData(2.0),)
                worst = max(worst, time.monotonic() - t0)
        slow.join(10)
        assert slow.result == (FloatData(1.0),)  # its own answer, not one of the FAST ones
        assert time.monotonic() - started >= SLOW_S * 0.95
        assert worst < 0.5, worst
        assert a.read([_d("CORO")]) == (FloatData(3.0),)
        with pytest.raises(MmsServiceFailed) as failed:
            a.read([_d("FAIL")])
        assert (failed.value.error_class, failed.value.code) == (ErrorClass.ACCESS, 3)
        write = _Background(lambda: a.write([_d("SLOW")], [FloatData(5.0)]))
        write.start()
        assert b.read([_d("FAST")]) == (FloatData(2.0),)
        write.join(10)
        assert write.result == (None,)


def test_release_waits_for_a_pending_answer_and_abort_drops_it(served: Any) -> None:
    server, handler = served
    a = _connect(server, release_timeout_s=5.0)
    slow = _Background(lambda: a.read([_d("SLOW")]))
    slow.start()
    time.sleep(0.2)
    assert a.release().concluded
    slow.join(10)
    assert slow.result == (FloatData(1.0),)
    b = _connect(server)
    slow = _Background(lambda: b.read([_d("SLOW")]))
    slow.start()
    time.sleep(0.2)
    b.abort()
    slow.join(10)
    assert isinstance(slow.result, MmsConnectionLost)
    wait_for(lambda: handler.finished.count("read") == 2, 10, "the dropped answer's work finishing")
    wait_for(lambda: len(handler.ended) == 2, 5, "both associations ended")
    assert handler.ended[0].endswith("released") and handler.ended[1].endswith(EndReason.PEER_ABORT.value)
    with _connect(server) as c:  # the server is fine after dropping an answer
        assert c.read([_d("FAST")]) == (FloatData(2.0),)
