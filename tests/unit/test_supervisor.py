import threading

import pytest
from support import wait_for

from frontend_protocols.supervisor import AdapterSpec, AdapterSupervisor
from models.samples import load_sample_station


class Sink:
    def __init__(self) -> None:
        self.states: list[tuple[bool, str]] = []
        self.messages: list[object] = []
        self.lock = threading.Lock()

    def on_adapter_message(self, adapter, msg) -> None:
        with self.lock:
            self.messages.append(msg)

    def on_adapter_state(self, adapter, running, detail) -> None:
        with self.lock:
            self.states.append((running, detail))


def run(entry: str, **kw) -> tuple[AdapterSupervisor, Sink]:
    sink = Sink()
    sup = AdapterSupervisor(AdapterSpec("t", f"supervised_adapters:{entry}", ("RTU-SHN",)), load_sample_station(),
                            sink, backoff_s=0.2, backoff_max_s=0.5, **kw)
    sup.start()
    return sup, sink


@pytest.mark.timeout(60)
def test_crashing_adapter_is_restarted() -> None:
    sup, sink = run("crash_soon")
    try:
        wait_for(lambda: sup.restarts >= 2, 30, "two restarts")
        downs = [d for up, d in sink.states if not up]
        assert downs and "exited with code 3" in downs[0]
        assert any(getattr(m, "up", False) for m in sink.messages)  # it delivered before crashing
    finally:
        sup.stop()


@pytest.mark.timeout(60)
def test_hung_adapter_is_killed_and_restarted() -> None:
    sup, sink = run("hang_soon", heartbeat_timeout_s=1.0)
    try:
        wait_for(lambda: any("no heartbeat" in d for up, d in sink.states if not up), 30, "hang detection")
    finally:
        sup.stop()
    assert sup.pid is None


@pytest.mark.timeout(60)
def test_clean_shutdown() -> None:
    sup, sink = run("well_behaved")
    wait_for(lambda: sup.last_heartbeat is not None, 20, "first heartbeat")
    sup.stop()
    assert sup.restarts == 0 and [up for up, _ in sink.states] == [True]
