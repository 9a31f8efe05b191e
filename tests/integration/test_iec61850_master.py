"""The IEC 61850 adapter in a spawned process (as the supervisor runs it) against the project's IedServer simulator
(``rtu_sim.outstation61850``) on loopback ports: reports, GI, buffered resume, controls, link loss, hostile peer."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from adapter_process import AdapterProcess
from raw_server import RawServer
from support import free_port, wait_for

from frontend_protocols.channel import Heartbeat
from frontend_protocols.supervisor import ADAPTER_ENTRIES
from models.commands import ControlAction, ControlRequest, ControlStatus, InterrogationRequest
from models.config import StationConfig, parse_station_config
from models.points import ControlType, DoubleState, Quality
from models.updates import Cause, InterrogationDone, LinkEvent
from rtu_sim.outstation61850 import Outstation61850
from rtu_sim.simulator import RtuSimulator

_N = iter(range(1000))


def station_toml(port: int, *, ied: str, buffered: bool = True, extra: str = "") -> str:
    rtu = f"IED-{ied}"
    return f"""
[station]
name = "iec61850 adapter test"

[[rtus]]
name = "{rtu}"
protocol = "iec61850"
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 1.0
connect_timeout_s = 1.0
iec61850 = {{ ied_name = "{ied}", buffered_reports = {str(buffered).lower()} }}

[[points]]
name = "CB"
kind = "double"
rtu = "{rtu}"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = {{ type = "double", mode = "sbo_enhanced", reference = "LD0/XCBR1.Pos" }}
sim = {{ nominal = 2 }}

[[points]]
name = "DS"
kind = "double"
rtu = "{rtu}"
type = "DPC"
reference = "LD0/XSWI1.Pos"
control = {{ type = "double", mode = "sbo", reference = "LD0/XSWI1.Pos" }}
sim = {{ nominal = 2 }}

[[points]]
name = "FAN"
kind = "single"
rtu = "{rtu}"
type = "SPC"
reference = "LD0/GGIO1.SPCSO1"
control = {{ type = "single", mode = "direct", reference = "LD0/GGIO1.SPCSO1" }}

[[points]]
name = "IA"
kind = "analog"
rtu = "{rtu}"
type = "CMV"
reference = "LD0/MMXU1.A.phsA"
scale = 0.5
offset = 1.0
sim = {{ nominal = 201.0 }}

[[points]]
name = "TAP"
kind = "analog"
rtu = "{rtu}"
type = "INS"
reference = "LD0/YLTC1.TapPos"
sim = {{ nominal = 3 }}

[[points]]
name = "SP"
kind = "setpoint"
rtu = "{rtu}"
type = "APC"
reference = "LD0/ATCC1.BndCtr"
scale = 0.01
offset = 100.0
control = {{ type = "setpoint_float", mode = "direct", reference = "LD0/ATCC1.BndCtr" }}
sim = {{ nominal = 110.0 }}

[[points]]
name = "SPW"
kind = "setpoint"
rtu = "{rtu}"
type = "APC"
reference = "LD0/DOPM1.OpModPF"
control = {{ type = "setpoint_float", mode = "sbo_enhanced", reference = "LD0/DOPM1.OpModPF" }}
sim = {{ nominal = 0.95 }}
{extra}"""


@pytest.fixture
def rig() -> Iterator[Any]:
    made: list[Any] = []

    def make(*, buffered: bool = True, adapter: bool = True) -> tuple[Any, Any, StationConfig]:
        port = free_port()
        ied = f"T{next(_N)}x{random.randrange(10**6)}"  # unique per process: controls register by reference
        cfg = parse_station_config(station_toml(port, ied=ied, buffered=buffered))
        rtu = cfg.rtus[0]
        pts = cfg.points_of_rtu(rtu.name)
        sim = Outstation61850(rtu, pts, [cfg.sim[p.id] for p in pts], rng=random.Random(1))
        sim.start()
        pump = threading.Event()

        def loop() -> None:
            while not pump.is_set():
                sim.pump(time.monotonic())
                time.sleep(0.002)

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        a = AdapterProcess(cfg, "iec61850", (rtu.name,)) if adapter else None
        made.append((sim, pump, t, a))
        return sim, a, cfg

    yield make
    for sim, pump, t, a in made:
        if a is not None:
            a.close()
        pump.set()
        t.join(2)
        sim.close()


def _rtu(cfg: StationConfig) -> str:
    return cfg.rtus[0].name


@pytest.mark.timeout(90)
def test_gi_reports_quality_time_and_latency(rig) -> None:
    sim, a, cfg = rig()
    wait_for(lambda: a.of(InterrogationDone), 20, "InterrogationDone after connect")
    up = a.of(LinkEvent)[0]
    assert up.up and up.rtu == _rtu(cfg)
    cb, ia, tap = a.values(0), a.values(3), a.values(4)
    assert cb[-1]["value"] == DoubleState.ON and cb[-1]["quality"] == 0
    assert Cause.INTERROGATED in set(cb["cause"])
    assert ia[-1]["value"] == pytest.approx(sim.value("IA"), rel=1e-5)  # raw*scale+offset round trip
    assert tap[-1]["value"] == 3.0

    # a spontaneous report keeps value, quality and time tag; an unsynchronised clock marks the time invalid
    mark = a.mark()
    stamp = int(time.time() * 1000) - 5000
    sim.set_value("IA", 151.0, Quality.QUESTIONABLE | Quality.SUBSTITUTED | Quality.TIME_INVALID, time_ms=stamp)
    sim.set_value("CB", DoubleState.OFF, Quality.INVALID, time_ms=stamp)
    wait_for(lambda: len(a.values(3, mark)) and len(a.values(0, mark)), 10, "spontaneous reports")
    r = a.values(3, mark)[-1]
    assert r["value"] == pytest.approx(151.0) and r["source_time_ms"] == stamp
    assert r["quality"] == Quality.QUESTIONABLE | Quality.SUBSTITUTED | Quality.TIME_INVALID
    assert r["cause"] == Cause.SPONTANEOUS
    c = a.values(0, mark)[-1]
    assert c["value"] == DoubleState.OFF and c["quality"] == Quality.INVALID and c["source_time_ms"] == stamp

    lat = []
    for k in range(30):
        mark = a.mark()
        t0 = time.time() * 1000
        sim.set_value("TAP", float(k % 7))
        wait_for(lambda m=mark: len(a.values(4, m)), 5, "tap report")
        lat.append(time.time() * 1000 - t0)
    print(f"iec61850 set_value -> UpdateBatch received: p50 {np.percentile(lat, 50):.1f} ms, "
          f"max {max(lat):.1f} ms")

    mark = a.mark()
    a.send(InterrogationRequest(""))
    wait_for(lambda: a.of(InterrogationDone, mark), 10, "InterrogationDone on request")
    assert {int(p) for p in a.rows(mark)["point"]} >= {0, 1, 2, 3, 4}
    assert a.counters().get("report_handler_errors", 0) == 0
    assert a.close() == 0


@pytest.mark.timeout(90)
def test_controls_sbo_enhanced_sbo_direct_and_refusals(rig) -> None:
    sim, a, cfg = rig()
    wait_for(lambda: a.of(InterrogationDone), 20, "first GI")
    rid = iter(range(1, 100))
    name = _rtu(cfg)

    def ctl(rid: int, point: int, action: ControlAction, value: float, ctype: ControlType = ControlType.DOUBLE
            ) -> ControlRequest:
        return ControlRequest(rid, point, name, 0, 0, ctype, action, value, 5.0)

    # SBO with enhanced security: select with value, operate; the status follows
    assert a.request(ctl(next(rid), 0, ControlAction.SELECT, DoubleState.OFF)).status is ControlStatus.SUCCESS
    res = a.request(ctl(next(rid), 0, ControlAction.EXECUTE, DoubleState.OFF))
    assert res.status is ControlStatus.SUCCESS, res
    wait_for(lambda: sim.value("CB") == DoubleState.OFF, 5, "breaker open in the IED")
    wait_for(lambda: len(a.values(0)) and a.values(0)[-1]["value"] == DoubleState.OFF, 5, "open reported")
    print(f"SBOw+operate round trip {res.elapsed_ms:.1f} ms")
    # SBO normal security, with a cancel in between
    assert a.request(ctl(next(rid), 1, ControlAction.SELECT, DoubleState.OFF)).status is ControlStatus.SUCCESS
    assert a.request(ctl(next(rid), 1, ControlAction.CANCEL, DoubleState.OFF)).status is ControlStatus.SUCCESS
    assert a.request(ctl(next(rid), 1, ControlAction.SELECT, DoubleState.OFF)).status is ControlStatus.SUCCESS
    assert a.request(ctl(next(rid), 1, ControlAction.EXECUTE, DoubleState.OFF)).status is ControlStatus.SUCCESS
    wait_for(lambda: sim.value("DS") == DoubleState.OFF, 5, "disconnector open")
    # direct
    res = a.request(ctl(next(rid), 2, ControlAction.DIRECT, 1, ControlType.SINGLE))
    assert res.status is ControlStatus.SUCCESS, res
    wait_for(lambda: sim.value("FAN") == 1.0, 5, "fan on")
    # blocked: the select is refused, AddCause named
    sim.block("CB")
    res = a.request(ctl(next(rid), 0, ControlAction.SELECT, DoubleState.ON))
    assert res.status is ControlStatus.REFUSED_BY_FIELD and "blocked-by-process" in res.detail, res
    sim.block("CB", False)
    # local: refused with blocked-by-switching-hierarchy
    sim.set_local(True)
    res = a.request(ctl(next(rid), 2, ControlAction.DIRECT, 0, ControlType.SINGLE))
    assert res.status is ControlStatus.REFUSED_BY_FIELD and "switching-hierarchy" in res.detail, res
    sim.set_local(False)
    # configuration errors stay in the adapter
    assert a.request(ctl(next(rid), 0, ControlAction.DIRECT, 2)).status is ControlStatus.ERROR
    assert a.request(ctl(next(rid), 3, ControlAction.DIRECT, 1)).status is ControlStatus.UNKNOWN_ADDRESS
    assert sim.value("CB") == DoubleState.OFF


@pytest.mark.timeout(90)
def test_apc_setpoint_direct_and_sbo_enhanced(rig) -> None:
    """APC set-points: the client operates with a float (raw = (engineering - offset) / scale), the IED's mxVal
    follows the operate and is reported back; SBO with enhanced security selects with the value."""
    sim, a, cfg = rig()
    wait_for(lambda: a.of(InterrogationDone), 20, "first GI")
    sp, spw = (next(p.id for p in cfg.points if p.name == n) for n in ("SP", "SPW"))
    assert a.values(sp)[-1]["value"] == pytest.approx(110.0, abs=1e-4)  # GI of mxVal, scaled
    assert a.values(spw)[-1]["value"] == pytest.approx(0.95, abs=1e-6)
    name = _rtu(cfg)

    def ctl(rid: int, point: int, action: ControlAction, value: float) -> ControlRequest:
        return ControlRequest(rid, point, name, 0, 0, ControlType.SETPOINT_FLOAT, action, value, 5.0)

    mark = a.mark()
    res = a.request(ctl(1, sp, ControlAction.DIRECT, 112.5))
    assert res.status is ControlStatus.SUCCESS, res
    wait_for(lambda: sim.value("SP") == pytest.approx(112.5, abs=1e-4), 5, "set-point applied in the IED")
    wait_for(lambda: len(a.values(sp, mark)) and a.values(sp, mark)[-1]["value"] == pytest.approx(112.5, abs=1e-4),
             5, "set-point reported back")
    assert a.values(sp, mark)[-1]["cause"] == Cause.SPONTANEOUS
    # direct-only object: a select is a configuration error caught in the adapter
    assert a.request(ctl(2, sp, ControlAction.SELECT, 113.0)).status is ControlStatus.ERROR

    assert a.request(ctl(3, spw, ControlAction.SELECT, 0.9)).status is ControlStatus.SUCCESS
    res = a.request(ctl(4, spw, ControlAction.EXECUTE, 0.9))
    assert res.status is ControlStatus.SUCCESS, res
    wait_for(lambda: sim.value("SPW") == pytest.approx(0.9, abs=1e-6), 5, "SBOw set-point applied")
    # an operate without a select is refused by the IED (SBO: the object is not selected)
    res = a.request(ctl(5, spw, ControlAction.EXECUTE, 0.8))
    assert res.status is ControlStatus.REFUSED_BY_FIELD, res
    assert sim.value("SPW") == pytest.approx(0.9, abs=1e-6)
    # blocked: the select is refused with the AddCause, the value stays
    sim.block("SPW")
    res = a.request(ctl(6, spw, ControlAction.SELECT, 0.85))
    assert res.status is ControlStatus.REFUSED_BY_FIELD and "blocked-by-process" in res.detail, res
    sim.block("SPW", False)
    assert sim.value("SPW") == pytest.approx(0.9, abs=1e-6)


@pytest.mark.timeout(90)
def test_buffered_resume_after_link_loss(rig) -> None:
    sim, a, cfg = rig(buffered=True)
    wait_for(lambda: a.of(InterrogationDone), 20, "first GI")
    mark = a.mark()
    sim.set_value("TAP", 5.0)
    wait_for(lambda: len(a.values(4, mark)), 5, "tap 5")
    t_down = time.monotonic()
    sim.link_down()
    wait_for(lambda: [e for e in a.of(LinkEvent) if not e.up], 10, "LinkEvent down")
    print(f"link down seen after {time.monotonic() - t_down:.2f} s")
    mark = a.mark()
    for v in (6.0, 7.0, 8.0):  # while the link is down: buffered in the IED's BRCB
        sim.set_value("TAP", v)
        time.sleep(0.05)
    time.sleep(0.3)
    sim.link_up()
    wait_for(lambda: [e for e in a.of(LinkEvent, mark) if e.up], 15, "LinkEvent up again")
    wait_for(lambda: a.of(InterrogationDone, mark), 15, "GI after reconnect")
    spont = [float(r["value"]) for r in a.values(4, mark) if r["cause"] == Cause.SPONTANEOUS]
    assert spont[:3] == [6.0, 7.0, 8.0], spont  # no event lost across the disconnect, in order


class GarbagePeer(RawServer):
    """Answers a client's first bytes with the next of four garbage replies (broken TPKT, truncated, oversized, HTTP),
    then hangs up."""

    GARBAGE = (b"\x03\x00\x00\x10\xff\xff\xff\xff", b"\x03\x00", b"\x03\x00\xff\xff" + b"\x00" * 64,
               b"GET / HTTP/1.0\r\n\r\n")

    def __init__(self) -> None:
        self.replies = 0
        super().__init__(recv_timeout_s=None)

    def session(self, conn: socket.socket) -> None:
        garbage = self.GARBAGE[self.replies % len(self.GARBAGE)]
        self.replies += 1
        try:
            conn.recv(4096)
            conn.sendall(garbage)
            time.sleep(0.1)
        except OSError:
            pass


@pytest.mark.timeout(60)
def test_hostile_peer_does_not_kill_the_adapter(rig) -> None:
    peer = GarbagePeer()
    try:
        cfg = parse_station_config(station_toml(peer.port, ied="HOSTILE"))
        a = AdapterProcess(cfg, "iec61850", (cfg.rtus[0].name,))
        wait_for(lambda: a.counters().get("connect_failures", 0) >= 4, 30, "several refused connects")
        assert a.proc.is_alive()
        assert not [e for e in a.of(LinkEvent) if e.up]
        n = len(a.of(Heartbeat))
        time.sleep(1.0)
        assert len(a.of(Heartbeat)) > n  # still beating
        assert a.close() == 0
    finally:
        peer.close()


@pytest.mark.timeout(90)
def test_crashed_adapter_is_restarted_and_interrogates(rig) -> None:
    import os
    import signal

    from frontend_protocols.supervisor import AdapterSpec, AdapterSupervisor

    sim, _, cfg = rig(adapter=False)
    got: list[Any] = []
    states: list[tuple[bool, str]] = []

    class Sink:
        def on_adapter_message(self, adapter: str, msg: Any) -> None:
            got.append(msg)

        def on_adapter_state(self, adapter: str, running: bool, detail: str) -> None:
            states.append((running, detail))

    sup = AdapterSupervisor(AdapterSpec("iec61850", ADAPTER_ENTRIES["iec61850"], (_rtu(cfg),)), cfg, Sink(),
                            heartbeat_timeout_s=3.0, backoff_s=0.2)
    sup.start()
    try:
        wait_for(lambda: [m for m in got if isinstance(m, InterrogationDone)], 20, "first GI")
        pid = sup.pid
        assert pid is not None
        os.kill(pid, signal.SIGSEGV)  # a crash inside the protocol library
        wait_for(lambda: sup.restarts >= 1 and sup.pid not in (None, pid), 15, "adapter restarted")
        n = len([m for m in got if isinstance(m, InterrogationDone)])
        wait_for(lambda: len([m for m in got if isinstance(m, InterrogationDone)]) > n, 20, "GI after restart")
        assert any(not running for running, _ in states)
        # a hang (a blocking call that never returns) silences the main loop's heartbeat: killed and restarted
        pid = sup.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: sup.restarts >= 2 and sup.pid not in (None, pid), 20, "hung adapter restarted")
        n = len([m for m in got if isinstance(m, InterrogationDone)])
        wait_for(lambda: len([m for m in got if isinstance(m, InterrogationDone)]) > n, 20, "GI after hang")
    finally:
        sup.stop()


def fleet_toml(n: int, tag: str) -> str:
    """``n`` IEDs (distinct IED names, own free ports), each with a breaker, a current, a tap and a set-point."""
    parts = ['[station]\nname = "iec61850 fleet"\n']
    for k in range(n):
        rtu = f"FLEET-{k}"
        parts.append(f"""
[[rtus]]
name = "{rtu}"
protocol = "iec61850"
addresses = ["127.0.0.1:{free_port()}"]
gi_period_s = 600
reconnect_backoff_s = 0.2
connect_timeout_s = 2.0
iec61850 = {{ ied_name = "{tag}F{k}" }}

[[points]]
name = "CB{k}"
kind = "double"
rtu = "{rtu}"
type = "DPC"
reference = "LD0/XCBR1.Pos"
control = {{ type = "double", mode = "sbo", reference = "LD0/XCBR1.Pos" }}
sim = {{ nominal = 2 }}

[[points]]
name = "IA{k}"
kind = "analog"
rtu = "{rtu}"
type = "CMV"
reference = "LD0/MMXU1.A.phsA"
sim = {{ nominal = {100 + k} }}

[[points]]
name = "TAP{k}"
kind = "analog"
rtu = "{rtu}"
type = "INS"
reference = "LD0/YLTC1.TapPos"
sim = {{ nominal = {k} }}

[[points]]
name = "SP{k}"
kind = "setpoint"
rtu = "{rtu}"
type = "APC"
reference = "LD0/ATCC1.BndCtr"
control = {{ type = "setpoint_float", mode = "direct", reference = "LD0/ATCC1.BndCtr" }}
sim = {{ nominal = 1.5 }}
""")
    return "".join(parts)


@pytest.mark.timeout(120)
def test_ten_ieds_one_simulator_one_adapter() -> None:
    """10 IEDs in one RtuSimulator process, one adapter process serving them all: every point good after the GI
    of its IED, then one change per IED arrives."""
    n = 10
    cfg = parse_station_config(fleet_toml(n, f"Q{next(_N)}x{random.randrange(10**6)}"))
    rtus = [r.name for r in cfg.rtus]
    started = time.monotonic()
    with RtuSimulator(cfg, seed=3, physics=False) as sim:
        a = AdapterProcess(cfg, "iec61850", tuple(rtus))
        try:
            wait_for(lambda: {m.rtu for m in a.of(InterrogationDone)} >= set(rtus), 60, "a GI of every IED")
            t_gi = time.monotonic() - started
            assert {e.rtu for e in a.of(LinkEvent) if e.up} == set(rtus)
            rows = a.rows()
            latest = {int(r["point"]): r for r in rows}  # rows are in arrival order: the last one wins
            assert set(latest) == {p.id for p in cfg.points}
            bad = {cfg.points[i].name: int(r["quality"]) for i, r in latest.items() if r["quality"] != Quality.GOOD}
            assert not bad, bad
            for k in range(n):
                assert latest[cfg.point(f"CB{k}").id]["value"] == DoubleState.ON
                assert latest[cfg.point(f"TAP{k}").id]["value"] == float(k)
                assert latest[cfg.point(f"SP{k}").id]["value"] == pytest.approx(1.5)

            mark = a.mark()
            t0 = time.monotonic()
            for k in range(n):
                sim.set_value(f"TAP{k}", float(20 + k))
            tap_ids = {cfg.point(f"TAP{k}").id: float(20 + k) for k in range(n)}

            def arrived() -> bool:
                got = {int(r["point"]): float(r["value"]) for r in a.rows(mark) if int(r["point"]) in tap_ids}
                return got == tap_ids

            wait_for(arrived, 20, "one change from each of the 10 IEDs")
            t_changes = time.monotonic() - t0
            spont = [r for r in a.rows(mark) if int(r["point"]) in tap_ids]
            assert all(r["cause"] == Cause.SPONTANEOUS for r in spont)
            assert len(spont) == n  # exactly one report per change, none doubled
            c = a.counters()
            assert c.get("report_handler_errors", 0) == 0 and c.get("connect_failures", 0) == 0, c
            print(f"10 IEDs: all GIs done {t_gi:.2f} s after start, 10 changes delivered in "
                  f"{t_changes * 1000:.0f} ms")
        finally:
            assert a.close() == 0
