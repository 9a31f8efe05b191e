"""The IEC 104 RTU simulator against a real c104 master on 127.0.0.1.

No ``from __future__ import annotations``: c104 checks the callbacks' type hints against its own classes.
"""

import datetime
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import c104
import pytest
from support import free_port, wait_for

from models.config import StationConfig, load_station_config
from models.points import DoubleState, Quality
from rtu_sim import RtuSimulator, UnknownPointError
from rtu_sim.control_socket import ControlSocketServer, send_request

CA_A, CA_B = 7, 9
BURST_RATE_PER_S = 800.0


def _station_toml(a1: int, a2: int, b1: int, n_burst: int) -> str:
    text = f"""
[station]
name = "rtu-sim test"

[[rtus]]
name = "RTU-A"
common_address = {CA_A}
addresses = ["127.0.0.1:{a1}", "127.0.0.1:{a2}"]

[[rtus]]
name = "RTU-B"
common_address = {CA_B}
addresses = ["127.0.0.1:{b1}"]
max_updates_per_s = {BURST_RATE_PER_S}

[[points]]
name = "A/F1/CB"
kind = "double"
rtu = "RTU-A"
address = 1001
type = "M_DP_TB_1"
element = "F1-CB"
control = {{ type = "double", address = 6001, mode = "sbo" }}
sim = {{ nominal = 2 }}

[[points]]
name = "A/F2/CB"
kind = "double"
rtu = "RTU-A"
address = 1002
type = "M_DP_TB_1"
element = "F2-CB"
control = {{ type = "double", address = 6002, mode = "sbo" }}
sim = {{ nominal = 1 }}

[[points]]
name = "A/F1/PROT_TRIP"
kind = "single"
rtu = "RTU-A"
address = 1011
type = "M_SP_TB_1"
element = "F1-CB"

[[points]]
name = "A/F1/LR"
kind = "single"
rtu = "RTU-A"
address = 1021
type = "M_SP_TB_1"
element = "F1-CB"
sim = {{ nominal = 1 }}

[[points]]
name = "A/FPI"
kind = "single"
rtu = "RTU-A"
address = 1031
type = "M_SP_TB_1"

[[points]]
name = "A/BUS/V"
kind = "analog"
rtu = "RTU-A"
address = 2001
type = "M_ME_TF_1"
scale = 0.01
sim = {{ nominal = 11.0 }}

[[points]]
name = "A/F1/I"
kind = "analog"
rtu = "RTU-A"
address = 2011
type = "M_ME_TF_1"
element = "F1-CB"
sim = {{ nominal = 200, noise_pct = 1.0, curve = "residential", period_s = 0.3 }}

[[points]]
name = "A/TR1/VSET"
kind = "setpoint"
rtu = "RTU-A"
address = 2021
type = "M_ME_NC_1"
control = {{ type = "setpoint_float", address = 6021, mode = "direct" }}
sim = {{ nominal = 11.0 }}

[[points]]
name = "A/F1/E_IMP"
kind = "counter"
rtu = "RTU-A"
address = 3001
type = "M_IT_TB_1"
sim = {{ nominal = 3600, curve = "flat" }}
"""
    for i in range(n_burst):
        text += f"""
[[points]]
name = "B/M{i}"
kind = "analog"
rtu = "RTU-B"
address = {4000 + i}
type = "M_ME_TF_1"
sim = {{ nominal = {10 + i} }}
"""
    for i in range(5):
        text += f"""
[[points]]
name = "B/S{i}"
kind = "single"
rtu = "RTU-B"
address = {5000 + i}
type = "M_SP_TB_1"
"""
    return text


@dataclass(frozen=True, slots=True)
class Rx:
    ioa: int
    cot: c104.Cot
    value: object
    recorded_at: datetime.datetime | None
    quality: object
    rx_s: float


@dataclass(frozen=True, slots=True)
class Con:
    """An activation confirmation seen on the wire: which command object, select or execute, negative or not."""

    type_id: int
    ioa: int
    select: bool
    negative: bool


def _parse_con(apdu: bytes) -> Con | None:
    """Decode an I-frame carrying an ACT_CON of a single-object command (C_SC/C_DC/C_SE_*), else None."""
    if len(apdu) < 16 or apdu[0] != 0x68 or apdu[2] & 0x01:
        return None  # not an I-frame
    asdu = apdu[6:]
    type_id, cot = asdu[0], asdu[2]
    if type_id not in (45, 46, 48, 49, 50) or cot & 0x3F != 7:  # ACT_CON of C_SC/C_DC/C_SE_NA/NB/NC
        return None
    ioa = asdu[6] | asdu[7] << 8 | asdu[8] << 16
    qualifier = asdu[-1]  # SCO/DCO/QOS: S/E is bit 7
    return Con(type_id, ioa, bool(qualifier & 0x80), bool(cot & 0x40))


class Master:
    """A c104 client connected to one outstation address, recording every monitoring message it receives.

    c104 2.2.1's client loses the wake-up of a command whose confirmation arrives before the sending thread starts
    waiting (``awaitCommandSuccess`` does not check the state before its first wait): ``transmit`` and
    ``interrogation`` then return False after the command time-out although the RTU answered. So the outcome of a
    command is read from the ACT_CON frames on the wire, and interrogation results from the data that arrives.
    """

    COMMAND_TIMEOUT_MS = 1000

    def __init__(self, port: int, common_address: int) -> None:
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=self.COMMAND_TIMEOUT_MS)
        self.conn = self.client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.NONE)
        self.station = self.conn.add_station(common_address=common_address)
        self.rx: list[Rx] = []
        self.cons: list[Con] = []
        self.lock = threading.Lock()
        self.states: list[c104.ConnectionState] = []

        def on_rx(point: c104.Point, previous_info: c104.Information,
                  message: c104.IncomingMessage) -> c104.ResponseState:
            with self.lock:
                self.rx.append(Rx(point.io_address, message.cot, point.value, point.recorded_at, point.quality,
                                  time.time()))
            return c104.ResponseState.NONE

        def on_new_point(client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type) -> None:
            station.add_point(io_address=io_address, type=point_type).on_receive(callable=on_rx)

        def on_state(connection: c104.Connection, state: c104.ConnectionState) -> None:
            with self.lock:
                self.states.append(state)

        def on_raw(connection: c104.Connection, data: bytes) -> None:
            con = _parse_con(data)
            if con is not None:
                with self.lock:
                    self.cons.append(con)

        self.client.on_new_point(callable=on_new_point)
        self.conn.on_state_change(callable=on_state)
        self.conn.on_receive_raw(callable=on_raw)
        self.client.start()
        wait_for(lambda: self.conn.is_connected, 5.0, f"c104 master connected to port {port}")
        self.conn.unmute()
        wait_for(lambda: not self.conn.is_muted, 5.0, "connection unmuted")

    def received(self, *, ioa: int | None = None, cot: c104.Cot | None = None) -> list[Rx]:
        with self.lock:
            return [r for r in self.rx if (ioa is None or r.ioa == ioa) and (cot is None or r.cot == cot)]

    def clear(self) -> None:
        with self.lock:
            self.rx.clear()

    def command(self, ioa: int, type_: c104.Type, value: object, *, sbo: bool) -> bool:
        """Send a command; True when the RTU confirmed its execution positively, False when it refused.

        The verdict comes from the ACT_CON frames. If the client lost the select confirmation it never sends the
        execute; the command is then sent once more.
        """
        point = self.station.get_point(io_address=ioa) or self.station.add_point(
            io_address=ioa, type=type_,
            command_mode=c104.CommandMode.SELECT_AND_EXECUTE if sbo else c104.CommandMode.DIRECT)
        point.value = value
        for _ in range(2):
            with self.lock:
                start = len(self.cons)
            point.transmit(cause=c104.Cot.ACTIVATION)

            def answers(start: int = start) -> list[Con]:
                with self.lock:
                    return [c for c in self.cons[start:] if c.ioa == ioa]

            wait_for(answers, 2.0, f"ACT_CON for IOA {ioa}")
            if sbo:
                select = [c for c in answers() if c.select]
                if select and select[0].negative:
                    return False
                deadline = time.monotonic() + 0.5
                while not [c for c in answers() if not c.select] and time.monotonic() < deadline:
                    time.sleep(0.01)
            executed = [c for c in answers() if not c.select]
            if executed:
                return not executed[0].negative
        raise AssertionError(f"no execute confirmation for IOA {ioa} after two attempts")

    def interrogate(self, common_address: int, *, counters: bool = False) -> None:
        """Start a (counter) interrogation; its return value is unreliable (see the class note), the data is not."""
        if counters:
            self.conn.counter_interrogation(common_address=common_address, wait_for_response=False)
        else:
            self.conn.interrogation(common_address=common_address, wait_for_response=False)

    def close(self) -> None:
        # Break the callback -> self -> client cycle so the client is freed now, not by a later GC run.
        self.client.stop()
        self.client.on_new_point(callable=None)
        self.conn.on_state_change(callable=None)
        self.conn.on_receive_raw(callable=None)
        for p in self.station.points:
            p.on_receive(callable=None)
        del self.station, self.conn, self.client


@dataclass(frozen=True, slots=True)
class Env:
    config: StationConfig
    sim: RtuSimulator
    a_ports: tuple[int, int]
    b_port: int


N_BURST_POINTS = 40


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    a1, a2, b1 = free_port(), free_port(), free_port()
    path = tmp_path / "station.toml"
    path.write_text(_station_toml(a1, a2, b1, N_BURST_POINTS), encoding="utf-8")
    config = load_station_config(path)
    sim = RtuSimulator(config, seed=42, tick_s=0.05)
    try:
        sim.start()
        yield Env(config, sim, (a1, a2), b1)
    finally:
        sim.stop()


@pytest.fixture
def master_a(env: Env) -> Iterator[Master]:
    m = Master(env.a_ports[0], CA_A)
    try:
        yield m
    finally:
        m.close()


def _ms(dt: datetime.datetime | None) -> int:
    assert dt is not None, "report without a time tag"
    return round(dt.replace(tzinfo=datetime.UTC).timestamp() * 1000)


@pytest.mark.timeout(60)
def test_general_interrogation_returns_every_point_with_its_value(env: Env, master_a: Master) -> None:
    monitored = [p for p in env.config.points_of_rtu("RTU-A") if p.source.address]
    master_a.interrogate(CA_A)
    by_ioa: dict[int, Rx] = {}

    def all_in() -> bool:
        for r in master_a.received(cot=c104.Cot.INTERROGATED_BY_STATION):
            by_ioa[r.ioa] = r
        return all(p.source.address in by_ioa for p in monitored if p.kind.value != "counter")

    wait_for(all_in, 5.0, "GI answer with every point of RTU-A")
    assert by_ioa[1001].value == c104.Double.ON
    assert by_ioa[1002].value == c104.Double.OFF
    assert by_ioa[1011].value is False
    assert by_ioa[1021].value is True
    assert by_ioa[2001].value == pytest.approx((11.0 - 0.0) / 0.01, rel=1e-6)  # raw = eng / scale
    assert by_ioa[2021].value == pytest.approx(11.0, rel=1e-6)
    i_now = env.sim.value("A/F1/I")
    assert by_ioa[2011].value == pytest.approx(i_now, rel=0.1)  # refreshed every 0.3 s with 1 % noise
    assert 1001 in by_ioa and by_ioa[1001].recorded_at is not None

    # Counter interrogation: 3600 kWh/h = 1 kWh/s, written to the point table every second.
    master_a.interrogate(CA_A, counters=True)
    rx = wait_for(lambda: master_a.received(ioa=3001, cot=c104.Cot.REQUESTED_BY_GENERAL_COUNTER), 5.0,
                  "counter interrogation answer")
    assert isinstance(rx, list)
    assert rx[-1].value == pytest.approx(env.sim.value("A/F1/E_IMP"), abs=3.0)
    assert env.sim.value("A/F1/E_IMP") > 3600 * 1000  # started at ~1000 h and is accumulating


@pytest.mark.timeout(60)
def test_periodic_analog_reports_are_spontaneous_and_time_tagged(env: Env, master_a: Master) -> None:
    rx = wait_for(lambda: len(master_a.received(ioa=2011, cot=c104.Cot.SPONTANEOUS)) >= 3, 5.0,
                  "three periodic reports of A/F1/I")
    assert rx
    reports = master_a.received(ioa=2011, cot=c104.Cot.SPONTANEOUS)
    stamps = [_ms(r.recorded_at) for r in reports]
    assert all(abs(r.rx_s * 1000 - t) < 2000 for r, t in zip(reports, stamps, strict=True))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(200 <= g <= 700 for g in gaps), gaps  # period 0.3 s on a 0.05 s tick
    assert len({r.value for r in reports}) > 1  # noise: the value moves


@pytest.mark.timeout(60)
def test_trip_reports_breaker_and_protection_with_one_time_tag(env: Env, master_a: Master) -> None:
    before_ms = time.time_ns() // 1_000_000
    assert env.sim.trip("A/F1/CB") == ("A/F1/PROT_TRIP",)
    wait_for(lambda: master_a.received(ioa=1001, cot=c104.Cot.SPONTANEOUS)
             and master_a.received(ioa=1011, cot=c104.Cot.SPONTANEOUS), 5.0, "trip reports")
    cb = master_a.received(ioa=1001, cot=c104.Cot.SPONTANEOUS)[-1]
    prot = master_a.received(ioa=1011, cot=c104.Cot.SPONTANEOUS)[-1]
    assert cb.value == c104.Double.OFF and prot.value is True
    assert _ms(cb.recorded_at) == _ms(prot.recorded_at)
    assert before_ms <= _ms(cb.recorded_at) <= time.time_ns() // 1_000_000
    assert env.sim.value("A/F1/CB") == DoubleState.OFF
    # The feeder current on the tripped breaker's element drops to zero at its next report.
    wait_for(lambda: any(r.value == 0.0 for r in master_a.received(ioa=2011, cot=c104.Cot.SPONTANEOUS)), 3.0,
             "A/F1/I reported 0 A after the trip")


@pytest.mark.timeout(60)
def test_sbo_double_command_moves_the_breaker_and_reports_it(env: Env, master_a: Master) -> None:
    assert env.sim.value("A/F2/CB") == DoubleState.OFF
    assert master_a.command(6002, c104.Type.C_DC_NA_1, c104.Double.ON, sbo=True)
    rx = wait_for(lambda: master_a.received(ioa=1002, cot=c104.Cot.RETURN_INFO_REMOTE), 5.0,
                  "return-remote report of A/F2/CB")
    assert isinstance(rx, list) and rx[-1].value == c104.Double.ON
    assert abs(_ms(rx[-1].recorded_at) - rx[-1].rx_s * 1000) < 2000
    assert env.sim.value("A/F2/CB") == DoubleState.ON
    assert env.sim.stats().commands_executed == 1

    # Direct set-point: the set-point point follows the command.
    assert master_a.command(6021, c104.Type.C_SE_NC_1, 10.75, sbo=False)
    wait_for(lambda: master_a.received(ioa=2021, cot=c104.Cot.RETURN_INFO_REMOTE), 5.0, "set-point feedback")
    assert env.sim.value("A/TR1/VSET") == pytest.approx(10.75, rel=1e-6)


@pytest.mark.timeout(60)
def test_blocked_device_refuses_commands_negatively(env: Env, master_a: Master) -> None:
    env.sim.block("A/F1/CB")
    assert master_a.command(6001, c104.Type.C_DC_NA_1, c104.Double.OFF, sbo=True) is False  # select refused
    assert env.sim.value("A/F1/CB") == DoubleState.ON
    st = env.sim.stats()
    assert (st.commands_refused, st.commands_executed) == (0, 0)  # c104 refused the select; no execute came
    env.sim.block("A/TR1/VSET")  # a direct-mode control is refused on execute by the RTU's handler
    assert master_a.command(6021, c104.Type.C_SE_NC_1, 10.5, sbo=False) is False
    assert env.sim.value("A/TR1/VSET") == pytest.approx(11.0)
    assert env.sim.stats().commands_refused == 1

    env.sim.block("A/F1/CB", blocked=False)
    env.sim.block("A/TR1/VSET", blocked=False)
    assert master_a.command(6001, c104.Type.C_DC_NA_1, c104.Double.OFF, sbo=True) is True
    assert env.sim.value("A/F1/CB") == DoubleState.OFF
    assert master_a.command(6021, c104.Type.C_SE_NC_1, 10.5, sbo=False) is True
    assert env.sim.value("A/TR1/VSET") == pytest.approx(10.5)


def test_local_device_refuses_remote_commands(env: Env, master_a: Master) -> None:
    """The RTU's local/remote switch, set over the control socket: in local every remote command is refused."""
    with ControlSocketServer(env.sim) as ctl:
        assert send_request(ctl.host, ctl.port, {"op": "local", "rtu": "RTU-A", "local": True}) == {
            "ok": True, "rtu": "RTU-A", "local": True}
        assert master_a.command(6001, c104.Type.C_DC_NA_1, c104.Double.OFF, sbo=True) is False
        assert master_a.command(6021, c104.Type.C_SE_NC_1, 10.5, sbo=False) is False
        assert env.sim.value("A/F1/CB") == DoubleState.ON and env.sim.value("A/TR1/VSET") == pytest.approx(11.0)
        assert send_request(ctl.host, ctl.port, {"op": "local", "rtu": "RTU-A", "local": False})["ok"] is True
    assert master_a.command(6001, c104.Type.C_DC_NA_1, c104.Double.OFF, sbo=True) is True
    assert env.sim.value("A/F1/CB") == DoubleState.OFF
    assert master_a.command(6001, c104.Type.C_DC_NA_1, c104.Double.ON, sbo=True) is True


@pytest.mark.timeout(60)
def test_link_down_drops_the_master_and_link_up_lets_it_reconnect(env: Env, master_a: Master) -> None:
    backup = Master(env.a_ports[1], CA_A)
    try:
        env.sim.link_down("RTU-A", f"127.0.0.1:{env.a_ports[0]}")
        wait_for(lambda: not master_a.conn.is_connected, 5.0, "primary connection dropped")
        assert backup.conn.is_connected  # only the primary of the redundant pair went down
        env.sim.fpi("A/FPI")  # the backup still reports
        wait_for(lambda: backup.received(ioa=1031, cot=c104.Cot.SPONTANEOUS), 5.0, "FPI report on the backup")
        assert backup.received(ioa=1031, cot=c104.Cot.SPONTANEOUS)[-1].value is True

        env.sim.link_down("RTU-A")
        wait_for(lambda: not backup.conn.is_connected, 5.0, "backup connection dropped")
        assert env.sim.stats().rtus["RTU-A"].links_up == ()
        env.sim.set_value("A/BUS/V", 10.5, quality=Quality.SUBSTITUTED)  # changes while down: covered by the GI

        env.sim.link_up("RTU-A")
        wait_for(lambda: master_a.conn.is_connected, 10.0, "primary reconnected")
        master_a.clear()
        if master_a.conn.is_muted:
            master_a.conn.unmute()
        master_a.interrogate(CA_A)
        rx = wait_for(lambda: master_a.received(ioa=2001, cot=c104.Cot.INTERROGATED_BY_STATION), 5.0,
                      "GI after reconnect")
        assert isinstance(rx, list)
        assert rx[-1].value == pytest.approx(1050.0, rel=1e-6)
        assert rx[-1].quality == c104.Quality.Substituted
    finally:
        backup.close()


@pytest.mark.timeout(60)
def test_paced_burst_arrives_complete(env: Env) -> None:
    master = Master(env.b_port, CA_B)
    try:
        n = 1600
        t0 = time.monotonic()
        for k in range(n):  # far faster than the 800/s pace: the queue takes it, the bucket spreads it
            env.sim.set_value(f"B/M{k % N_BURST_POINTS}", 1000.0 + k)
        assert env.sim.wait_sent(10.0)
        elapsed_s = time.monotonic() - t0
        wait_for(lambda: len(master.received(cot=c104.Cot.SPONTANEOUS)) >= n, 5.0, f"{n} spontaneous reports")
        time.sleep(0.2)  # nothing extra may follow
        got = master.received(cot=c104.Cot.SPONTANEOUS)
        st = env.sim.stats().rtus["RTU-B"]
        assert len(got) == st.sent == n
        assert st.sent_by_kind["analog"] == n and st.dropped == 0 and st.unsent == 0
        assert sorted(r.value for r in got) == [pytest.approx(1000.0 + k) for k in range(n)]
        assert elapsed_s >= (n - BURST_RATE_PER_S * 0.02) / BURST_RATE_PER_S * 0.95  # paced, not flooded
    finally:
        master.close()


@pytest.mark.timeout(60)
def test_change_load_is_paced_counted_and_time_tagged(env: Env) -> None:
    master = Master(env.b_port, CA_B)
    try:
        env.sim.start_change_load(400.0, status_share=0.25)
        time.sleep(1.5)
        env.sim.stop_change_load()
        assert env.sim.wait_sent(10.0)
        st = env.sim.stats()
        # Every RTU-A report goes nowhere (no master there); RTU-B's go to ours: compare exactly.
        b = st.rtus["RTU-B"]
        wait_for(lambda: len(master.received(cot=c104.Cot.SPONTANEOUS)) >= b.sent, 5.0, "all load reports")
        got = master.received(cot=c104.Cot.SPONTANEOUS)
        assert len(got) == b.sent
        assert 400 * 1.5 * 0.8 <= st.changes_generated <= 400 * 1.5 * 1.2
        assert b.sent_by_kind["single"] > 0 and b.sent_by_kind["analog"] > 0
        assert all(abs(_ms(r.recorded_at) - r.rx_s * 1000) < 1000 for r in got)
    finally:
        master.close()


@pytest.mark.timeout(60)
def test_control_socket_drives_events_and_names_errors(env: Env, master_a: Master) -> None:
    with ControlSocketServer(env.sim) as ctl:
        ans = send_request(ctl.host, ctl.port, {"op": "trip", "point": "A/F1/CB"})
        assert ans == {"ok": True, "point": "A/F1/CB", "protection": ["A/F1/PROT_TRIP"]}
        wait_for(lambda: master_a.received(ioa=1001, cot=c104.Cot.SPONTANEOUS), 5.0, "trip via control socket")
        ans = send_request(ctl.host, ctl.port,
                           {"op": "set", "point": "A/BUS/V", "value": 9.5, "quality": ["invalid", "not_topical"]})
        assert ans["ok"] is True
        rx = wait_for(lambda: master_a.received(ioa=2001, cot=c104.Cot.SPONTANEOUS), 5.0, "set via control socket")
        assert isinstance(rx, list)
        assert rx[-1].quality == c104.Quality.Invalid | c104.Quality.NonTopical
        assert send_request(ctl.host, ctl.port, {"op": "value", "point": "A/BUS/V"}) == {
            "ok": True, "point": "A/BUS/V", "value": 9.5, "quality": ["INVALID", "NOT_TOPICAL"]}
        bad = send_request(ctl.host, ctl.port, {"op": "trip", "point": "NOPE"})
        assert bad["ok"] is False and "NOPE" in bad["error"]
        bad = send_request(ctl.host, ctl.port, {"op": "link_down", "rtu": "RTU-X"})
        assert bad["ok"] is False and "RTU-X" in bad["error"]
        stats = send_request(ctl.host, ctl.port, {"op": "stats"})
        assert stats["ok"] is True and stats["stats"]["rtus"]["RTU-A"]["sent"] >= 2


@pytest.mark.timeout(60)
def test_api_errors_name_the_point(env: Env) -> None:
    with pytest.raises(UnknownPointError, match="NOPE"):
        env.sim.value("NOPE")
    with pytest.raises(Exception, match="A/BUS/V"):
        env.sim.trip("A/BUS/V")
    with pytest.raises(Exception, match="OVERFLOW"):
        env.sim.set_value("A/F1/CB", 1, quality=Quality.OVERFLOW)


@pytest.mark.timeout(60)
def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    a1, a2, b1 = free_port(), free_port(), free_port()
    path = tmp_path / "station.toml"
    path.write_text(_station_toml(a1, a2, b1, 2), encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "rtu_sim.cli", "--config", str(path), "--rtu", "RTU-A",
                             "--control-port", "0", "--seed", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "control socket:" in line:
                break
        served = "".join(lines)
        assert f"RTU-A: common address {CA_A}" in served and f"127.0.0.1:{a2}" in served, served
        assert "RTU-B" not in served
        port = int(lines[-1].rsplit(":", 1)[1].split()[0])
        listed = send_request("127.0.0.1", port, {"op": "list"})
        assert listed["ok"] is True and list(listed["rtus"]) == ["RTU-A"]
        master = Master(a1, CA_A)
        try:
            assert send_request("127.0.0.1", port, {"op": "fpi", "point": "A/FPI"})["ok"] is True
            wait_for(lambda: master.received(ioa=1031, cot=c104.Cot.SPONTANEOUS), 5.0, "FPI from the CLI process")
        finally:
            master.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10.0) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5.0)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
