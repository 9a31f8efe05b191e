"""The IEC 104 master adapter in a real spawned process against a hostile device: a raw TCP server on 127.0.0.1 that
speaks just enough IEC 60870-5-104 by hand (STARTDT, TESTFR, GI with ACT_CON/ACT_TERM, sequence numbers) to bring the
link up, then sends one malformed or out-of-spec frame. The adapter must log, count, mark the affected points (or drop
the link and reconnect) and keep running."""

from __future__ import annotations

import datetime as dt
import enum
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from adapter_process import AdapterProcess
from support import wait_for

from frontend_protocols.channel import Heartbeat
from models.commands import InterrogationRequest
from models.config import parse_station_config
from models.points import DoubleState, Quality
from models.updates import Cause, InterrogationDone, LinkEvent

RTU = "RTU-H"
CA = 9
CB, V, P = 0, 1, 2  # point ids, in configuration order
IOA_CB, IOA_V, IOA_P = 1001, 2001, 2003
GOOD_V, GOOD_P = 11.0, 5.5

# ------------------------------------------------------------------------------------------------ wire format

STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
STOPDT_ACT, STOPDT_CON = 0x13, 0x23
TESTFR_ACT, TESTFR_CON = 0x43, 0x83
M_ME_NC_1, M_DP_TB_1, M_ME_TF_1, C_IC_NA_1 = 13, 31, 36, 100
COT_SPONT, COT_ACT, COT_ACT_CON, COT_ACT_TERM, COT_INROGEN = 3, 6, 7, 10, 20


def cp56(when: dt.datetime, *, invalid: bool = False) -> bytes:
    """CP56Time2a of a UTC time; ``invalid`` sets the IV bit of the minutes octet."""
    ms = when.second * 1000 + when.microsecond // 1000
    minute = when.minute | (0x80 if invalid else 0)
    return struct.pack("<HBBBBB", ms, minute, when.hour, when.day | (when.isoweekday() << 5), when.month,
                       when.year - 2000)


def ioa(address: int) -> bytes:
    return address.to_bytes(3, "little")


def asdu(type_id: int, cot: int, objects: list[bytes], *, ca: int = CA, vsq: int | None = None) -> bytes:
    """An ASDU of ``objects`` (each IOA + element); ``vsq`` overrides the object count the header announces."""
    n = len(objects) if vsq is None else vsq
    return bytes((type_id, n, cot, 0)) + ca.to_bytes(2, "little") + b"".join(objects)


def float_obj(address: int, value: float, *, qds: int = 0) -> bytes:
    return ioa(address) + struct.pack("<fB", value, qds)


def float_timed_obj(address: int, value: float, when: dt.datetime, *, qds: int = 0) -> bytes:
    return ioa(address) + struct.pack("<fB", value, qds) + cp56(when)


def double_timed_obj(address: int, dpi: int, when: dt.datetime, *, time_invalid: bool = False) -> bytes:
    return ioa(address) + bytes((dpi,)) + cp56(when, invalid=time_invalid)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Case(enum.Enum):
    """One hostile frame (or stream of bytes) the device sends on a link that is up and interrogated."""

    NAN_FLOAT = "nan_float"  # M_ME_NC_1 NaN and M_ME_TF_1 +inf
    TIME_INVALID = "time_invalid"  # M_DP_TB_1 whose CP56Time2a has its IV bit set
    UNKNOWN_TYPE = "unknown_type"  # type identification 0x7F
    VSQ_OVERCOUNT = "vsq_overcount"  # VSQ announces more objects than the ASDU holds
    WRONG_CA = "wrong_ca"  # a common address the adapter does not know
    UNKNOWN_IOA = "unknown_ioa"  # an IOA that is not configured
    LENGTH_OVERRUN = "length_overrun"  # APCI length larger than the bytes that follow, then silence
    LENGTH_SHORT = "length_short"  # APCI length 2 (< 4): not even the control field fits
    TRUNCATED_CLOSE = "truncated_close"  # half an I-frame, then the device closes the socket
    BAD_NS = "bad_ns"  # an I-frame with an out-of-sequence N(S)


#: Cases after which the link must go down (and the adapter reconnect); the others keep the link up.
LINK_DROPPING = frozenset({Case.LENGTH_OVERRUN, Case.LENGTH_SHORT, Case.TRUNCATED_CLOSE, Case.BAD_NS})

#: A good spontaneous value of P sent right after the hostile frame: proof the link still carries data.
PROBE_P = 6.25


@dataclass(slots=True)
class _Session:
    sock: socket.socket
    ns: int = 0  # next N(S) the device sends
    nr: int = 0  # I-frames received from the adapter (the N(R) the device acknowledges)
    started: bool = False
    silent: bool = False  # after a hostile frame that leaves the link hanging: read and answer nothing


class HostileIec104:
    """A hand-written IEC 104 controlled station: answers STARTDT/STOPDT/TESTFR and GI correctly, and sends the case
    handed to ``inject`` on the live connection. Every new connection is well behaved again."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.gi_answered = 0
        self._cases: queue.SimpleQueue[Case] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="hostile-iec104", daemon=True)
        self._thread.start()

    def inject(self, case: Case) -> None:
        self._cases.put(case)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    # ------------------------------------------------------------------------------------------- framing
    @staticmethod
    def _u(code: int) -> bytes:
        return bytes((0x68, 4, code, 0, 0, 0))

    def _i(self, s: _Session, body: bytes, *, ns: int | None = None) -> bytes:
        n = s.ns if ns is None else ns
        if ns is None:
            s.ns = (s.ns + 1) % 32768
        return bytes((0x68, 4 + len(body))) + struct.pack("<HH", n << 1, s.nr << 1) + body

    # ------------------------------------------------------------------------------------------- serving
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:  # one link at a time, as the adapter's single configured address makes it
                self._serve(_Session(conn))

    def _serve(self, s: _Session) -> None:
        s.sock.settimeout(0.05)
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = s.sock.recv(4096)
                if not chunk:
                    return
                buf += chunk
            except TimeoutError:
                pass
            except OSError:
                return
            if s.silent:
                buf = b""
                continue
            while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
                frame, buf = buf[: 2 + buf[1]], buf[2 + buf[1]:]
                if not self._on_frame(s, frame):
                    return
            if s.started:
                try:
                    case = self._cases.get_nowait()
                except queue.Empty:
                    continue
                if not self._send_case(s, case):
                    return

    def _on_frame(self, s: _Session, frame: bytes) -> bool:
        c1 = frame[2]
        if c1 & 0x03 == 0x03:  # U-format
            answer = {STARTDT_ACT: STARTDT_CON, STOPDT_ACT: STOPDT_CON, TESTFR_ACT: TESTFR_CON}.get(c1)
            if c1 == STARTDT_ACT:
                s.started = True
            elif c1 == STOPDT_ACT:
                s.started = False
            return answer is None or self._send(s, self._u(answer))
        if c1 & 0x01:  # S-format: an acknowledgement, nothing to answer
            return True
        s.nr = (s.nr + 1) % 32768
        body = frame[6:]
        if len(body) >= 10 and body[0] == C_IC_NA_1 and body[2] & 0x3F == COT_ACT:
            return self._answer_gi(s, body)
        return self._send(s, struct.pack("<BBHH", 0x68, 4, 0x01, s.nr << 1))  # S-frame for anything else

    def _answer_gi(self, s: _Session, request: bytes) -> bool:
        qoi = request[9]
        now = utc_now()
        frames = [
            asdu(C_IC_NA_1, COT_ACT_CON, [ioa(0) + bytes((qoi,))]),
            # c104 takes only the configured type for an IOA, so the time-tagged types answer the GI as well
            asdu(M_DP_TB_1, COT_INROGEN, [double_timed_obj(IOA_CB, DoubleState.ON, now)]),
            asdu(M_ME_TF_1, COT_INROGEN, [float_timed_obj(IOA_V, GOOD_V, now)]),
            asdu(M_ME_NC_1, COT_INROGEN, [float_obj(IOA_P, GOOD_P)]),
            asdu(C_IC_NA_1, COT_ACT_TERM, [ioa(0) + bytes((qoi,))]),
        ]
        self.gi_answered += 1
        return self._send(s, b"".join(self._i(s, f) for f in frames))

    def _send(self, s: _Session, data: bytes) -> bool:
        try:
            s.sock.sendall(data)
            return True
        except OSError:
            return False

    def _send_case(self, s: _Session, case: Case) -> bool:
        """Send ``case``; False when the device closes the connection after it."""
        now = utc_now()

        def probe() -> bytes:  # built last: it takes the next N(S)
            return self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, PROBE_P)]))

        if case is Case.NAN_FLOAT:
            data = self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, float("nan"))]))
            data += self._i(s, asdu(M_ME_TF_1, COT_SPONT, [float_timed_obj(IOA_V, float("inf"), now)]))
            return self._send(s, data)
        if case is Case.TIME_INVALID:
            obj = double_timed_obj(IOA_CB, DoubleState.OFF, now, time_invalid=True)
            return self._send(s, self._i(s, asdu(M_DP_TB_1, COT_SPONT, [obj])))
        if case is Case.UNKNOWN_TYPE:
            return self._send(s, self._i(s, asdu(0x7F, COT_SPONT, [ioa(IOA_P) + b"\x01\x02\x03\x04\x05"])) + probe())
        if case is Case.VSQ_OVERCOUNT:
            bad = asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, 99.0)], vsq=5)
            return self._send(s, self._i(s, bad) + probe())
        if case is Case.WRONG_CA:
            return self._send(s, self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, 99.0)], ca=CA + 1)) + probe())
        if case is Case.UNKNOWN_IOA:
            return self._send(s, self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(4242, 99.0)])) + probe())
        if case is Case.LENGTH_OVERRUN:
            s.silent = True  # the adapter waits for 253 octets that never come; only its t1/t3 can end this
            return self._send(s, bytes((0x68, 0xFD)) + struct.pack("<HH", s.ns << 1, s.nr << 1) + b"\x0d\x01")
        if case is Case.LENGTH_SHORT:
            return self._send(s, bytes((0x68, 0x02, 0x00, 0x00)) + probe())
        if case is Case.TRUNCATED_CLOSE:
            whole = self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, 99.0)]))
            self._send(s, whole[:9])
            return False
        if case is Case.BAD_NS:
            s.silent = True
            return self._send(s, self._i(s, asdu(M_ME_NC_1, COT_SPONT, [float_obj(IOA_P, 99.0)]), ns=s.ns + 5))
        raise AssertionError(f"hostile case {case} has no frame")


# ------------------------------------------------------------------------------------------------ configuration


def station_toml(port: int) -> str:
    return f"""
[station]
name = "iec104 hostile device"

[[rtus]]
name = "{RTU}"
common_address = {CA}
addresses = ["127.0.0.1:{port}"]
gi_period_s = 600
reconnect_backoff_s = 0.2
reconnect_backoff_max_s = 0.5
connect_timeout_s = 1.0
t1_s = 2
t3_s = 1

[[points]]
name = "CB"
kind = "double"
rtu = "{RTU}"
address = {IOA_CB}
type = "M_DP_TB_1"

[[points]]
name = "V"
kind = "analog"
rtu = "{RTU}"
address = {IOA_V}
type = "M_ME_TF_1"
units = "kV"

[[points]]
name = "P"
kind = "analog"
rtu = "{RTU}"
address = {IOA_P}
type = "M_ME_NC_1"
units = "MW"
"""


@pytest.fixture
def rig() -> Iterator[tuple[HostileIec104, AdapterProcess]]:
    device = HostileIec104()
    adapter = AdapterProcess(parse_station_config(station_toml(device.port)), "iec104", (RTU,))
    try:
        yield device, adapter
    finally:
        if adapter.proc.exitcode is None:
            adapter.close()
        device.close()


# ------------------------------------------------------------------------------------------------ helpers


def since(a: AdapterProcess, mark: int, typ: type) -> list:
    with a.lock:
        return [m for m in a.msgs[mark:] if isinstance(m, typ)]


def rows_of(a: AdapterProcess, point: int, mark: int) -> list:
    rows = a.rows(mark)
    return list(rows[rows["point"] == point]) if len(rows) else []


def assert_alive_and_beating(a: AdapterProcess, beats: int, case: Case) -> None:
    assert a.proc.is_alive(), f"adapter died after {case.value}"
    wait_for(lambda: len(a.of(Heartbeat)) >= beats + 2, 10, f"heartbeats after {case.value}")


def assert_recovered(a: AdapterProcess, mark: int, case: Case) -> None:
    """Every point good again with the device's values after an InterrogationDone that follows ``mark``."""
    wait_for(lambda: since(a, mark, InterrogationDone), 20, f"InterrogationDone after {case.value}")
    for point, value in ((CB, DoubleState.ON), (V, GOOD_V), (P, GOOD_P)):
        row = a.last_value(point, mark)
        assert row is not None, f"point {point} not interrogated after {case.value}"
        assert row["value"] == value and row["quality"] == Quality.GOOD, (case.value, point, row)
        assert row["cause"] == Cause.INTERROGATED


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.timeout(90)
def test_out_of_spec_asdus_mark_points_and_keep_the_link(rig) -> None:
    device, a = rig
    a.wait_interrogations(1)
    assert_recovered(a, 0, Case.NAN_FLOAT)
    for case in (Case.NAN_FLOAT, Case.TIME_INVALID, Case.UNKNOWN_TYPE, Case.VSQ_OVERCOUNT, Case.WRONG_CA,
                 Case.UNKNOWN_IOA):
        mark, beats = a.mark(), len(a.of(Heartbeat))
        device.inject(case)
        if case is Case.NAN_FLOAT:  # the point must become INVALID, never a NaN "good" value
            wait_for(lambda m=mark: rows_of(a, P, m) and rows_of(a, V, m), 10, "NaN and inf rows")
            (p,), (v,) = rows_of(a, P, mark), rows_of(a, V, mark)
            assert p["value"] != p["value"] and p["quality"] & Quality.INVALID, p
            assert v["value"] == float("inf") and v["quality"] & Quality.INVALID, v
            wait_for(lambda: a.counters().get("invalid_values", 0) >= 2, 5, "invalid_values counted")
        elif case is Case.TIME_INVALID:
            wait_for(lambda m=mark: rows_of(a, CB, m), 10, "CB with an invalid time tag")
            (cb,) = rows_of(a, CB, mark)
            assert cb["value"] == DoubleState.OFF and cb["quality"] == Quality.TIME_INVALID, cb
            assert cb["cause"] == Cause.SPONTANEOUS
        else:
            # the good value sent right behind the hostile frame arrives: the link still carries data
            wait_for(lambda m=mark: any(r["value"] == PROBE_P for r in rows_of(a, P, m)), 10,
                     f"probe value behind {case.value}")
            values = [(float(r["value"]), int(r["quality"])) for r in rows_of(a, P, mark)]
            counter = {Case.UNKNOWN_TYPE: "unknown_type_id", Case.VSQ_OVERCOUNT: "malformed_asdu",
                       Case.WRONG_CA: "unknown_common_address", Case.UNKNOWN_IOA: "unknown_ioa"}[case]
            wait_for(lambda c=counter: a.counters().get(c, 0) >= 1, 5, f"counter {counter}")
            if case is Case.VSQ_OVERCOUNT:  # the one object that fits is decoded, but the ASDU is malformed
                assert values == [(99.0, Quality.INVALID), (PROBE_P, Quality.GOOD)], values
            else:  # dropped: nothing of the foreign station / unknown object reaches a configured point
                assert values == [(PROBE_P, Quality.GOOD)], values
        assert not since(a, mark, LinkEvent), f"{case.value} must not drop the link"
        assert_alive_and_beating(a, beats, case)
        # the device behaves again: a GI brings every point back to good
        mark = a.mark()
        a.send(InterrogationRequest(RTU))
        assert_recovered(a, mark, case)
    assert device.connections == 1
    c = a.counters()
    print("IEC 104 hostile ASDU counters:", {k: c[k] for k in sorted(c) if not k.startswith(("batches", "flush"))})
    assert a.close() == 0


@pytest.mark.timeout(90)
def test_broken_framing_drops_the_link_and_it_recovers(rig) -> None:
    device, a = rig
    a.wait_interrogations(1)
    t1_s, t3_s = 2, 1
    for case in (Case.LENGTH_OVERRUN, Case.LENGTH_SHORT, Case.TRUNCATED_CLOSE, Case.BAD_NS):
        mark, beats, conns = a.mark(), len(a.of(Heartbeat)), device.connections
        t0 = time.monotonic()
        device.inject(case)
        down = wait_for(lambda m=mark: next((e for e in since(a, m, LinkEvent) if not e.up), None), 15,
                        f"LinkEvent down after {case.value}")
        elapsed_s = time.monotonic() - t0
        assert down.rtu == RTU and "lost" in down.reason, down
        # framing errors and a closed socket are seen at once; a frame that never ends only by t3 + t1
        limit_s = t3_s + t1_s + 3.0 if case is Case.LENGTH_OVERRUN else 3.0
        assert elapsed_s < limit_s, (case.value, elapsed_s)
        assert_alive_and_beating(a, beats, case)
        # the device behaves again on the next connection: reconnect, GI, every point good
        wait_for(lambda m=mark: [e for e in since(a, m, LinkEvent) if e.up], 20, f"LinkEvent up after {case.value}")
        assert_recovered(a, mark, case)
        assert device.connections == conns + 1
        print(f"{case.value}: link down after {elapsed_s:.2f} s")
    # the Heartbeat's counters lag the events by up to half a heartbeat period
    wait_for(lambda: a.counters().get("link_up", 0) == 5, 5, "link_up counted 5 times")
    assert a.counters().get("link_down", 0) == 4, a.counters()
    assert a.close() == 0
