"""Station configuration: TOML loaded into validated frozen dataclasses.

One file configures the server, the operators, the RTUs and the point list; the front ends, the simulators and the
RTDB all load the same file, so a point's ``id`` (its position in the list) is the same in every process.
Errors name the file, the line of the table and the field; nothing is returned half-validated.

Calculated points (``models.calculated_points``): ``[calculated] state_estimate = true`` adds the internal source
``DMS-SE`` (protocol ``calculated``: no adapter, no simulator, no address) and the state-estimation result points
after every other point; ``stale_after_s`` (default 30 s: three runs of the estimator's default 10 s period) and
``min_bus_kv`` (default 1 kV: voltage points for the MV/HV buses only) tune them. It needs ``[network]`` and RTUs
with ``equipment`` (the measured elements get flow points). ``protocol = "calculated"`` cannot be given to an RTU
in ``[[rtus]]``: the control centre makes those sources itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from models.calculated_points import SE_SOURCE, CalculatedPoint, derive_state_estimate_points
from models.errors import ConfigError, ModelError
from models.measurement_points import DEFAULT_IOA_BASE, DerivedPoint, MeasurementBinding, RtuEquipment
from models.network import NetworkModel
from models.points import (
    AnalogLimits,
    ControlDef,
    ControlMode,
    ControlType,
    PointDef,
    PointKind,
    PointSource,
    Priority,
    StateAlarm,
)
from models.protocols import DerivedAddress
from models.protocols import dnp3 as dnp3_proto
from models.protocols import iccp as iccp_proto
from models.protocols import iec104 as iec104_proto
from models.protocols import iec61850 as iec61850_proto
from models.protocols import modbus as modbus_proto

if TYPE_CHECKING:
    from models.iccp_config import IccpConfig


class Role(StrEnum):
    VIEWER = "viewer"  # read points, alarms, SOE, history
    OPERATOR = "operator"  # + controls, acknowledge, shelve
    ENGINEER = "engineer"  # + tags, manual entry
    ADMIN = "admin"


class Protocol(StrEnum):
    IEC104 = "iec104"
    DNP3 = "dnp3"
    MODBUS = "modbus"  # Modbus TCP
    IEC61850 = "iec61850"  # MMS client
    CALCULATED = "calculated"  # computed in the control centre (``[calculated]``): no adapter, no field address
    ICCP = "iccp"  # a remote control centre of ``[[iccp.remotes]]`` (TASE.2 client); not declared in [[rtus]]


#: The addressing rules of each field protocol (models/protocols/); CALCULATED has none.
PROTOCOL_MODULES: dict[Protocol, ModuleType] = {
    Protocol.IEC104: iec104_proto,
    Protocol.DNP3: dnp3_proto,
    Protocol.MODBUS: modbus_proto,
    Protocol.IEC61850: iec61850_proto,
    Protocol.ICCP: iccp_proto,
}
#: Range of the RTU's ``common_address`` per protocol: IEC 104 common address (ASDU address), DNP3 outstation link
#: address, Modbus unit id; an IEC 61850 IED has none (its IED name is in ``iec61850.ied_name``).
COMMON_ADDRESS_RANGE: dict[Protocol, tuple[int, int]] = {
    Protocol.IEC104: (1, 65_534),
    Protocol.DNP3: dnp3_proto.LINK_ADDRESS_RANGE,
    Protocol.MODBUS: modbus_proto.UNIT_ID_RANGE,
    Protocol.IEC61850: (0, 65_535),
    Protocol.ICCP: (0, 0),
}


class LoadCurve(StrEnum):
    FLAT = "flat"
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"


#: Monitoring type identifiers accepted per protocol and point kind.
MONITOR_TYPES: dict[Protocol, dict[PointKind, frozenset[str]]] = {
    proto: module.MONITOR_TYPES for proto, module in PROTOCOL_MODULES.items()
}

#: Which control types fit which point kind.
CONTROL_TYPES: dict[PointKind, frozenset[ControlType]] = {
    PointKind.SINGLE: frozenset({ControlType.SINGLE}),
    PointKind.DOUBLE: frozenset({ControlType.DOUBLE}),
    PointKind.SETPOINT: frozenset({ControlType.SETPOINT_FLOAT, ControlType.SETPOINT_SCALED}),
    PointKind.COMMAND: frozenset({ControlType.SINGLE, ControlType.DOUBLE}),
    PointKind.ANALOG: frozenset(),
    PointKind.COUNTER: frozenset(),
}

DEFAULT_FREQUENCY_HZ = 50.0

DEFAULT_STALE_AFTER_S: dict[PointKind, float] = {
    PointKind.SINGLE: 900.0,
    PointKind.DOUBLE: 900.0,
    PointKind.ANALOG: 120.0,
    PointKind.COUNTER: 3600.0,
    PointKind.SETPOINT: 0.0,
    PointKind.COMMAND: 0.0,
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    grpc_address: str = "127.0.0.1:50051"
    data_dir: str = "var/dscada"
    grpc_workers: int = 64  # each open stream holds one; calls beyond are refused RESOURCE_EXHAUSTED


@dataclass(frozen=True, slots=True)
class SupervisionConfig:
    stale_after_s: dict[PointKind, float] = field(default_factory=lambda: dict(DEFAULT_STALE_AFTER_S))
    adapter_heartbeat_timeout_s: float = 5.0  # an adapter silent this long is hung: killed and restarted
    adapter_restart_backoff_s: float = 1.0
    adapter_restart_backoff_max_s: float = 30.0


@dataclass(frozen=True, slots=True)
class HistorianConfig:
    retention_days: float = 14.0
    max_interval_s: float = 900.0  # store an analog sample at least this often even inside the deadband


@dataclass(frozen=True, slots=True)
class OmsConfig:
    """``[oms]``: the utility's clock (daily reliability reports and billing days are local days) and the daily jobs."""

    utc_offset_min: int = 0  # ``utc_offset = "+05:30"``; fixed (no daylight saving)
    settle_s: float = 900.0  # after local midnight, wait this long for late data before the daily jobs run
    saidi_history: str | None = None  # CSV of past daily SAIDI (``dscada reliability --history`` format) for T_MED
    headend_url: str | None = None  # the AMI head-end's meter-read endpoint (http://host:port): the OMS pings meters


@dataclass(frozen=True, slots=True)
class AlarmConfig:
    shelve_max_s: float = 8 * 3600.0


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    name: str
    role: Role
    token: str


@dataclass(frozen=True, slots=True)
class RtuConfig:
    name: str
    protocol: Protocol
    common_address: int
    addresses: tuple[str, ...]  # "host:port", primary first; a second one is the redundant link
    gi_period_s: float = 600.0
    frtu: bool = False
    connect_timeout_s: float = 2.0
    reconnect_backoff_s: float = 1.0
    reconnect_backoff_max_s: float = 15.0
    max_updates_per_s: float = 2000.0  # simulator pacing; c104 servers lose data silently above ~5k/s
    # IEC 60870-5-104 link supervision. t1: a sent I-frame must be acknowledged within t1. t3: after t3 without
    # traffic the master sends TESTFR, then every t3; lib60870 closes the link after three unanswered, so a silent
    # link (no TCP close) is declared lost about 4 x t3 after its last frame. A closed socket is seen at once.
    t1_s: int = 15
    t3_s: int = 20
    # CIM equipment-name globs: every measurement of matching equipment becomes a point of this RTU
    # (models.measurement_points), numbered from ioa_base.
    equipment: tuple[str, ...] = ()
    ioa_base: int = DEFAULT_IOA_BASE
    # Protocol tables (``dnp3 = { master_address = 1 }`` ...): only the one of ``protocol`` may be given; the others
    # keep their defaults and mean nothing.
    dnp3: dnp3_proto.Options = field(default_factory=dnp3_proto.Options)
    modbus: modbus_proto.Options = field(default_factory=modbus_proto.Options)
    iec61850: iec61850_proto.Options = field(default_factory=iec61850_proto.Options)

    @property
    def ied_name(self) -> str:
        """The IEC 61850 IED name (prefix of every logical device on the wire)."""
        return self.iec61850.ied_name or iec61850_proto.default_ied_name(self.name)


@dataclass(frozen=True, slots=True)
class SimProfile:
    """How the RTU simulator drives a point."""

    nominal: float = 0.0  # engineering units; initial state for status points
    noise_pct: float = 0.0
    curve: LoadCurve = LoadCurve.FLAT
    period_s: float = 0.0  # 0: report on change only (status); >0: analog refresh period


@dataclass(frozen=True, slots=True)
class StationConfig:
    name: str
    source_path: str
    server: ServerConfig
    supervision: SupervisionConfig
    historian: HistorianConfig
    alarms: AlarmConfig
    operators: tuple[OperatorConfig, ...]
    rtus: tuple[RtuConfig, ...]
    points: tuple[PointDef, ...]
    sim: tuple[SimProfile, ...]  # parallel to ``points``
    network: NetworkModel | None = None  # the CIM network model of ``[network] cim``, loaded and validated
    # Parallel to ``points`` (or empty): the measurement a point was derived from, None for hand-written points.
    bindings: tuple[MeasurementBinding | None, ...] = ()
    frequency_hz: float = 50.0  # of the network model (``[network] frequency_hz``)
    calculated: tuple[CalculatedPoint, ...] = ()  # what each calculated point carries (``[calculated]``)
    oms: OmsConfig = OmsConfig()
    iccp: IccpConfig | None = None  # ``[iccp]`` (models.iccp_config): TASE.2 identity, bilateral tables, remotes

    def binding(self, point: PointDef) -> MeasurementBinding | None:
        return self.bindings[point.id] if point.id < len(self.bindings) else None

    def point(self, name: str) -> PointDef:
        for p in self.points:
            if p.name == name:
                return p
        raise ConfigError(f"{self.source_path}: no point named {name!r}")

    def rtu(self, name: str) -> RtuConfig:
        for r in self.rtus:
            if r.name == name:
                return r
        raise ConfigError(f"{self.source_path}: no RTU named {name!r}")

    def points_of_rtu(self, rtu: str) -> tuple[PointDef, ...]:
        return tuple(p for p in self.points if p.source.rtu == rtu)

    def stale_after_s(self, point: PointDef) -> float:
        return point.stale_after_s or self.supervision.stale_after_s.get(point.kind, 0.0)


# --------------------------------------------------------------------------------------------------- loading


class _Locator:
    """Maps a table path such as ``points[3]`` to the line where that table starts in the TOML text."""

    def __init__(self, text: str) -> None:
        self._arrays: dict[str, list[int]] = {}
        self._tables: dict[str, int] = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            m = re.match(r"\s*\[\[\s*([A-Za-z0-9_.]+)\s*\]\]", line)
            if m:
                self._arrays.setdefault(m.group(1), []).append(lineno)
                continue
            m = re.match(r"\s*\[\s*([A-Za-z0-9_.]+)\s*\]", line)
            if m:
                self._tables[m.group(1)] = lineno

    def line(self, table: str, index: int | None = None) -> int | None:
        if index is None:
            return self._tables.get(table)
        lines = self._arrays.get(table, [])
        return lines[index] if index < len(lines) else None


class _Reader:
    """Reads one TOML table with strict key checking; every error names file, line and field path."""

    def __init__(self, path: str, locator: _Locator, table: dict[str, Any], where: str, line: int | None):
        self.path, self.loc, self.table, self.where, self.lineno = path, locator, table, where, line
        self._used: set[str] = set()

    def fail(self, key: str | None, problem: str) -> ConfigError:
        at = f"{self.path}:{self.lineno}" if self.lineno else self.path
        fld = f"{self.where}.{key}" if key else self.where
        return ConfigError(f"{at}: {fld}: {problem}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        self._used.add(key)
        if key not in self.table:
            if required or default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.table[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and typ in (int, float):
            raise self.fail(key, f"expected {typ.__name__}, got a boolean")
        if not isinstance(value, typ):
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise self.fail(key, f"expected {names}, got {type(value).__name__} {value!r}")
        return value

    def enum(self, key: str, enum: type[StrEnum], default: Any = ...) -> Any:
        raw = self.get(key, str, default if default is ... else str(default))
        try:
            return enum(raw)
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise self.fail(key, f"unknown value {raw!r} (expected one of: {choices})") from None

    def positive(self, key: str, default: float, *, allow_zero: bool = False) -> float:
        v = self.get(key, float, default)
        if v < 0 or (v == 0 and not allow_zero):
            raise self.fail(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {v}")
        return v

    def sub(self, key: str) -> _Reader | None:
        raw = self.get(key, dict, None)
        if raw is None:
            return None
        return _Reader(self.path, self.loc, raw, f"{self.where}.{key}", self.lineno)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self._used)
        if unknown:
            raise self.fail(None, f"unknown field(s): {', '.join(unknown)}")


def _priority(r: _Reader, key: str, default: Priority) -> Priority:
    raw = r.get(key, str, default.name.lower())
    try:
        return Priority[raw.upper()]
    except KeyError:
        raise r.fail(key, f"unknown priority {raw!r} (expected critical, high, medium or low)") from None


def _address(r: _Reader, key: str, value: str, *, allow_port_zero: bool = False) -> str:
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+):(\d{1,5})", value)
    if not m or not (0 if allow_port_zero else 1) <= int(m.group(2)) < 65536:
        raise r.fail(key, f"{value!r} is not host:port")
    return value


def load_station_config(path: str | Path) -> StationConfig:
    """Load and validate a station configuration file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration: {exc.strerror}") from None
    return parse_station_config(text, str(path))


def parse_station_config(text: str, source: str = "<config>") -> StationConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if not doc:
        raise ConfigError(f"{source}: the configuration is empty")
    loc = _Locator(text)
    top = _Reader(source, loc, doc, "<top>", None)

    def table(name: str) -> _Reader:
        raw = top.get(name, dict, {})
        return _Reader(source, loc, raw, name, loc.line(name))

    st = table("station")
    name = st.get("name", str, required=True)
    st.finish()

    sv = table("server")
    server = ServerConfig(
        grpc_address=_address(sv, "grpc_address", sv.get("grpc_address", str, "127.0.0.1:50051"),
                              allow_port_zero=True),
        data_dir=sv.get("data_dir", str, "var/dscada"),
        grpc_workers=sv.get("grpc_workers", int, 64),
    )
    sv.finish()

    su = table("supervision")
    stale = dict(DEFAULT_STALE_AFTER_S)
    st_r = su.sub("stale_after_s")
    if st_r is not None:
        for key in list(st_r.table):
            try:
                kind = PointKind(key)
            except ValueError:
                raise st_r.fail(key, "is not a point kind") from None
            stale[kind] = st_r.positive(key, 0.0, allow_zero=True)
        st_r.finish()
    supervision = SupervisionConfig(
        stale_after_s=stale,
        adapter_heartbeat_timeout_s=su.positive("adapter_heartbeat_timeout_s", 5.0),
        adapter_restart_backoff_s=su.positive("adapter_restart_backoff_s", 1.0),
        adapter_restart_backoff_max_s=su.positive("adapter_restart_backoff_max_s", 30.0),
    )
    su.finish()

    hi = table("historian")
    historian = HistorianConfig(
        retention_days=hi.positive("retention_days", 14.0), max_interval_s=hi.positive("max_interval_s", 900.0)
    )
    hi.finish()

    al = table("alarms")
    alarms = AlarmConfig(shelve_max_s=al.positive("shelve_max_s", 8 * 3600.0))
    al.finish()

    om = table("oms")
    offset_text = om.get("utc_offset", str, "+00:00")
    m = re.fullmatch(r"([+-])(\d{2}):(\d{2})", offset_text)
    if m is None or int(m.group(2)) > 14 or int(m.group(3)) % 15 or int(m.group(3)) >= 60:
        raise om.fail("utc_offset", f"must be +HH:MM or -HH:MM in quarter hours (got {offset_text!r})")
    history = om.get("saidi_history", str, None)
    if history is not None and not Path(history).is_absolute():
        history = str(Path(source).parent / history)
    headend = om.get("headend_url", str, None)
    if headend is not None and not re.fullmatch(r"https?://[^/\s]+(/\S*)?", headend):
        raise om.fail("headend_url", f"must be an http:// or https:// URL (got {headend!r})")
    oms = OmsConfig(utc_offset_min=(1 if m.group(1) == "+" else -1) * (int(m.group(2)) * 60 + int(m.group(3))),
                    settle_s=om.positive("settle_s", 900.0, allow_zero=True), saidi_history=history,
                    headend_url=headend)
    om.finish()

    network, frequency_hz = _network(table("network"), source)
    operators = _operators(top, source, loc)
    rtus = _rtus(top, source, loc)
    iccp_table = table("iccp")
    pending_iccp = None
    if iccp_table.table:
        from models.iccp_config import parse_iccp  # it imports this module; it reads [iccp] with this _Reader

        pending_iccp = parse_iccp(iccp_table, {r.name for r in rtus})
        rtus = rtus + pending_iccp.rtus
    points, sims = _points(top, source, loc, {r.name: r for r in rtus})
    bindings: tuple[MeasurementBinding | None, ...] = ()
    if any(r.equipment for r in rtus):
        points, sims, bindings = _derived_points(top, source, loc, network, rtus, points, sims)
    rtus, points, sims, bindings, calculated = _calculated_points(table("calculated"), network, rtus, points, sims,
                                                                  bindings)
    iccp = pending_iccp.finish(points) if pending_iccp is not None else None
    top.finish()
    config = StationConfig(
        name=name,
        source_path=source,
        server=server,
        supervision=supervision,
        historian=historian,
        alarms=alarms,
        operators=operators,
        rtus=rtus,
        points=points,
        sim=sims,
        network=network,
        bindings=bindings,
        frequency_hz=frequency_hz,
        calculated=calculated,
        oms=oms,
        iccp=iccp,
    )
    _check_scl_files(config, loc)
    return config


def _check_scl_files(config: StationConfig, loc: _Locator) -> None:
    """Every point of an IEC 61850 RTU with ``iec61850.scl`` must find its objects, of a fitting class, in that file."""
    from models.scl import SclError, check_points_in_scl, load_scl  # only stations with SCL files pay for it

    for i, rtu in enumerate(config.rtus):
        if rtu.protocol is not Protocol.IEC61850 or not rtu.iec61850.scl:
            continue
        line = loc.line("rtus", i)
        at = f"{config.source_path}:{line}" if line else config.source_path
        try:
            check_points_in_scl(config, rtu, load_scl(rtu.iec61850.scl))
        except SclError as exc:
            raise ConfigError(f"{at}: rtus[{i}].iec61850.scl: {exc}") from None


def _network(r: _Reader, source: str) -> tuple[NetworkModel | None, float]:
    """``[network] cim = "file.xml"``: the CIM model, relative to the configuration file's folder; ``frequency_hz``
    (CIM does not carry it): 50 by default, 60 for the IEEE feeders."""
    cim = r.get("cim", str, None)
    frequency_hz = r.positive("frequency_hz", DEFAULT_FREQUENCY_HZ)
    if frequency_hz not in (50.0, 60.0):
        raise r.fail("frequency_hz", f"must be 50 or 60, not {frequency_hz:g}")
    r.finish()
    if cim is None:
        return None, frequency_hz
    from models.cim import load_cim  # the importer is only needed by stations that have a network model

    path = Path(cim)
    if not path.is_absolute():
        path = Path(source).resolve().parent / path
    try:
        return load_cim(path), frequency_hz
    except ModelError as exc:
        raise r.fail("cim", f"cannot load the network model: {exc}") from None


def _operators(top: _Reader, source: str, loc: _Locator) -> tuple[OperatorConfig, ...]:
    out: list[OperatorConfig] = []
    seen_names: dict[str, int] = {}
    seen_tokens: dict[str, int] = {}
    for i, raw in enumerate(top.get("operators", list, [])):
        r = _Reader(source, loc, raw, f"operators[{i}]", loc.line("operators", i))
        op = OperatorConfig(
            name=r.get("name", str, required=True), role=r.enum("role", Role), token=r.get("token", str, required=True)
        )
        r.finish()
        if op.name in seen_names:
            raise r.fail("name", f"duplicate operator {op.name!r} (also operators[{seen_names[op.name]}])")
        if len(op.token) < 8:
            raise r.fail("token", "must be at least 8 characters")
        if op.token in seen_tokens:
            raise r.fail("token", f"same token as operators[{seen_tokens[op.token]}]")
        seen_names[op.name], seen_tokens[op.token] = i, i
        out.append(op)
    return tuple(out)


def _rtus(top: _Reader, source: str, loc: _Locator) -> tuple[RtuConfig, ...]:
    out: list[RtuConfig] = []
    seen: dict[str, int] = {}
    seen_addr: dict[str, int] = {}
    for i, raw in enumerate(top.get("rtus", list, [])):
        r = _Reader(source, loc, raw, f"rtus[{i}]", loc.line("rtus", i))
        name = r.get("name", str, required=True)
        protocol = r.enum("protocol", Protocol, Protocol.IEC104)
        if protocol is Protocol.CALCULATED:
            raise r.fail("protocol", "calculated sources are made by the control centre: use the [calculated] "
                                     "table (e.g. state_estimate = true), not an RTU")
        if protocol is Protocol.ICCP:
            raise r.fail("protocol", "ICCP remote control centres are declared in [[iccp.remotes]], not as RTUs")
        addrs = r.get("addresses", list, required=True)
        if not 1 <= len(addrs) <= 2 or not all(isinstance(a, str) for a in addrs):
            raise r.fail("addresses", "must list one or two \"host:port\" strings (primary, backup)")
        lo, hi = COMMON_ADDRESS_RANGE[protocol]
        ca = r.get("common_address", int, 0 if protocol is Protocol.IEC61850 else ..., required=False)
        if not lo <= ca <= hi:
            raise r.fail("common_address", f"must be {lo}..{hi} on {protocol.value}, got {ca}")
        options: dict[str, Any] = {}
        for proto in (Protocol.DNP3, Protocol.MODBUS, Protocol.IEC61850):
            sub = r.sub(proto.value)
            if sub is None:
                continue
            if proto is not protocol:
                raise r.fail(proto.value, f"is a {proto.value} table but the RTU speaks {protocol.value}")
            options[proto.value] = PROTOCOL_MODULES[proto].parse_options(sub)
        if "iec61850" in options and options["iec61850"].scl:
            scl = Path(options["iec61850"].scl)
            if not scl.is_absolute():
                scl = Path(source).resolve().parent / scl
            options["iec61850"] = replace(options["iec61850"], scl=str(scl))
        rtu = RtuConfig(
            name=name,
            protocol=protocol,
            common_address=ca,
            addresses=tuple(_address(r, "addresses", a) for a in addrs),
            gi_period_s=r.positive("gi_period_s", 600.0),
            frtu=r.get("frtu", bool, False),
            connect_timeout_s=r.positive("connect_timeout_s", 2.0),
            reconnect_backoff_s=r.positive("reconnect_backoff_s", 1.0),
            reconnect_backoff_max_s=r.positive("reconnect_backoff_max_s", 15.0),
            max_updates_per_s=r.positive("max_updates_per_s", 2000.0),
            t1_s=r.get("t1_s", int, 15),
            t3_s=r.get("t3_s", int, 20),
            equipment=tuple(r.get("equipment", list, [])),
            ioa_base=r.get("ioa_base", int, DEFAULT_IOA_BASE),
            **options,
        )
        r.finish()
        if not all(isinstance(g, str) and g for g in rtu.equipment):
            raise r.fail("equipment", "must list CIM equipment-name globs (non-empty strings)")
        if not 0 <= rtu.ioa_base <= 16_000_000:
            raise r.fail("ioa_base", f"must be 0..16000000, got {rtu.ioa_base}")
        for key, value in (("t1_s", rtu.t1_s), ("t3_s", rtu.t3_s)):
            if not 1 <= value <= 255:
                raise r.fail(key, f"must be 1..255 s (IEC 60870-5-104 timer), got {value}")
        if name in seen:
            raise r.fail("name", f"duplicate RTU name {name!r} (also rtus[{seen[name]}])")
        for a in rtu.addresses:
            if a in seen_addr:
                raise r.fail("addresses", f"{a} is already used by rtus[{seen_addr[a]}]")
            seen_addr[a] = i
        seen[name] = i
        out.append(rtu)
    return tuple(out)


def _points(
    top: _Reader, source: str, loc: _Locator, rtus: dict[str, RtuConfig]
) -> tuple[tuple[PointDef, ...], tuple[SimProfile, ...]]:
    points: list[PointDef] = []
    sims: list[SimProfile] = []
    names: dict[str, int] = {}
    addresses: dict[tuple[str, Hashable], str] = {}  # (rtu, protocol address key) -> "points[i] (name)"
    for i, raw in enumerate(top.get("points", list, [])):
        r = _Reader(source, loc, raw, f"points[{i}]", loc.line("points", i))
        name = r.get("name", str, required=True)
        r.where = f"points[{i}] ({name})"
        if name in names:
            raise r.fail("name", f"duplicate point name (also points[{names[name]}])")
        kind = r.enum("kind", PointKind)
        rtu_name = r.get("rtu", str, required=True)
        if rtu_name not in rtus:
            raise r.fail("rtu", f"unknown RTU {rtu_name!r}")
        rtu = rtus[rtu_name]
        type_id = r.get("type", str, "")
        allowed = MONITOR_TYPES[rtu.protocol][kind]
        if type_id not in allowed:
            choices = ", ".join(sorted(t for t in allowed if t)) or "none (omit 'type')"
            raise r.fail("type", f"{type_id!r} does not fit a {kind.value} point on {rtu.protocol.value} "
                                 f"(expected {choices})")
        named = rtu.protocol in (Protocol.IEC61850, Protocol.ICCP)  # objects named by reference, not numbered
        address = r.get("address", int, 0 if kind is PointKind.COMMAND or named else ...)
        reference = r.get("reference", str, "" if kind is PointKind.COMMAND or not named else ...)
        if reference and not named:
            raise r.fail("reference", f"object references are for iec61850/iccp points; {rtu_name!r} speaks "
                                      f"{rtu.protocol.value} (use 'address')")
        if reference and rtu.protocol is Protocol.ICCP and not iccp_proto.REFERENCE_RE.fullmatch(reference):
            raise r.fail("reference", f"{reference!r} is not a TASE.2 name such as \"FREQ_SYS\"")
        if reference and rtu.protocol is Protocol.IEC61850 and not iec61850_proto.REFERENCE_RE.fullmatch(reference):
            raise r.fail("reference", f"{reference!r} is not an IEC 61850 reference such as \"LD0/XCBR1.Pos\"")
        control = _control(r, kind, rtu.protocol)
        if kind in (PointKind.SETPOINT, PointKind.COMMAND) and control is None:
            raise r.fail("control", f"a {kind.value} point needs a control table")
        if not named:
            lo, hi = PROTOCOL_MODULES[rtu.protocol].ADDRESS_RANGE
            for a in ([] if kind is PointKind.COMMAND else [address]) + ([control.address] if control else []):
                if not lo <= a <= hi:
                    raise r.fail("address", f"address {a} out of range {lo}..{hi} on {rtu.protocol.value}")
        probe = PointDef(id=i, name=name, kind=kind, source=PointSource(
            rtu.protocol.value, rtu_name, rtu.common_address, address, type_id, reference), control=control)
        for key in PROTOCOL_MODULES[rtu.protocol].address_keys(probe):
            if (rtu_name, key) in addresses:
                raise r.fail("address", f"{_key_text(key)} on RTU {rtu_name!r} is already used by "
                                        f"{addresses[(rtu_name, key)]}")
            addresses[(rtu_name, key)] = f"points[{i}] ({name})"
        limits = _limits(r, kind)
        state_alarms = _state_alarms(r, kind)
        sim = _sim(r)
        point = PointDef(
            id=i,
            name=name,
            kind=kind,
            source=probe.source,
            units=r.get("units", str, ""),
            scale=r.get("scale", float, 1.0),
            offset=r.get("offset", float, 0.0),
            element=r.get("element", str, ""),
            terminal=r.get("terminal", int, None),
            description=r.get("description", str, ""),
            control=control,
            limits=limits,
            state_alarms=state_alarms,
            limit_priority=_priority(r, "limit_priority", Priority.MEDIUM),
            stale_after_s=r.positive("stale_after_s", 0.0, allow_zero=True),
            historian_deadband=r.positive("historian_deadband", 0.0, allow_zero=True),
        )
        if point.scale == 0:
            raise r.fail("scale", "must not be 0")
        r.finish()
        names[name] = i
        points.append(point)
        sims.append(sim)
    return tuple(points), tuple(sims)


def _derived_points(top: _Reader, source: str, loc: _Locator, network: NetworkModel | None,
                    rtus: tuple[RtuConfig, ...], points: tuple[PointDef, ...], sims: tuple[SimProfile, ...]
                    ) -> tuple[tuple[PointDef, ...], tuple[SimProfile, ...], tuple[MeasurementBinding | None, ...]]:
    """Append the points derived from the network's measurements (after the hand-written ones)."""
    from models.measurement_points import derive_measurement_points

    first = next(i for i, r in enumerate(rtus) if r.equipment)
    r = _Reader(source, loc, {}, f"rtus[{first}] ({rtus[first].name})", loc.line("rtus", first))
    if network is None:
        raise r.fail("equipment", "needs a network model: add [network] cim = \"file.xml\"")
    claims = [RtuEquipment(x.name, x.equipment, x.ioa_base) for x in rtus if x.equipment]
    try:
        derived = derive_measurement_points(network, claims)
    except ConfigError as exc:
        raise r.fail("equipment", str(exc)) from None
    by_rtu = {x.name: x for x in rtus}
    names = {p.name: p for p in points}
    used: dict[tuple[str, Hashable], str] = {}
    for p in points:
        for key in PROTOCOL_MODULES[by_rtu[p.source.rtu].protocol].address_keys(p):
            used[(p.source.rtu, key)] = p.name
    placed: dict[int, DerivedAddress] = {}  # index in derived.points -> its address on its RTU's protocol
    for x in rtus:
        mine = [k for k, d in enumerate(derived.points) if d.rtu == x.name]
        for k, addr in zip(mine, PROTOCOL_MODULES[x.protocol].assign_derived([derived.points[k] for k in mine]),
                           strict=True):
            placed[k] = addr
    out_points, out_sims = list(points), list(sims)
    bindings: list[MeasurementBinding | None] = [None] * len(points)
    for k, d in enumerate(derived.points):
        rtu = by_rtu[d.rtu]
        point = _derived_point_def(d, placed[k], len(out_points), rtu)
        if d.name in names:
            raise r.fail("equipment", f"derived point {d.name!r} clashes with the hand-written point of that name")
        if rtu.protocol is Protocol.IEC104:
            for a in [point.source.address] + ([point.control.address] if point.control else []):
                if not 1 <= a <= 16_777_215:
                    raise r.fail("ioa_base", f"derived point {d.name!r}: IOA {a} out of range 1..16777215")
        for key in PROTOCOL_MODULES[rtu.protocol].address_keys(point):
            if (d.rtu, key) in used:
                raise r.fail("ioa_base", f"derived point {d.name!r}: {_key_text(key)} on RTU {d.rtu!r} is already "
                                         f"used by {used[(d.rtu, key)]!r}")
            used[(d.rtu, key)] = d.name
        names[d.name] = point
        out_points.append(point)
        out_sims.append(SimProfile(nominal=d.initial))
        bindings.append(d.binding)
    return tuple(out_points), tuple(out_sims), tuple(bindings)


def _calculated_points(r: _Reader, network: NetworkModel | None, rtus: tuple[RtuConfig, ...],
                       points: tuple[PointDef, ...], sims: tuple[SimProfile, ...],
                       bindings: tuple[MeasurementBinding | None, ...]
                       ) -> tuple[tuple[RtuConfig, ...], tuple[PointDef, ...], tuple[SimProfile, ...],
                                  tuple[MeasurementBinding | None, ...], tuple[CalculatedPoint, ...]]:
    """``[calculated]``: the internal calculated sources and their points, appended after every field point."""
    state_estimate = r.get("state_estimate", bool, False)
    stale_after_s = r.positive("stale_after_s", 30.0)
    min_bus_kv = r.positive("min_bus_kv", 1.0, allow_zero=True)
    r.finish()
    if not state_estimate:
        return rtus, points, sims, bindings, ()
    if network is None:
        raise r.fail("state_estimate", "needs a network model: add [network] cim = \"file.xml\"")
    if any(x.name == SE_SOURCE for x in rtus):
        raise r.fail("state_estimate", f"the RTU name {SE_SOURCE!r} is reserved for the state-estimation source")
    full = bindings + (None,) * (len(points) - len(bindings))
    new_points, calculated = derive_state_estimate_points(network, full, first_id=len(points),
                                                          stale_after_s=stale_after_s, min_bus_kv=min_bus_kv)
    names = {p.name for p in points}
    seen: set[str] = set()
    for p in new_points:
        if p.name in names:
            raise r.fail("state_estimate", f"calculated point {p.name!r} clashes with the field point of that name")
        if p.name in seen:
            raise r.fail("state_estimate", f"calculated point name {p.name!r} is not unique (two network elements "
                                           "share a name)")
        seen.add(p.name)
    source = RtuConfig(name=SE_SOURCE, protocol=Protocol.CALCULATED, common_address=0, addresses=())
    return ((*rtus, source), points + new_points, sims + (SimProfile(),) * len(new_points),
            full + (None,) * len(new_points), calculated)


def _derived_point_def(d: DerivedPoint, addr: DerivedAddress, point_id: int, rtu: RtuConfig) -> PointDef:
    control = None
    if addr.control_address is not None:
        control = ControlDef(addr.control_type, addr.control_address, mode=addr.control_mode,
                             reference=addr.control_reference)
    limits = None
    if d.limits is not None:
        lolo, lo, hi, hihi, deadband = d.limits
        limits = AnalogLimits(lolo=lolo, lo=lo, hi=hi, hihi=hihi, deadband=deadband)
    return PointDef(
        id=point_id, name=d.name, kind=PointKind(d.kind),
        source=PointSource(rtu.protocol.value, rtu.name, rtu.common_address, addr.address, addr.type_id,
                           addr.reference),
        units=d.units, element=d.element, terminal=d.terminal, description=d.description, control=control,
        limits=limits, state_alarms=tuple(StateAlarm(v, Priority[p.upper()], t) for v, p, t in d.state_alarms),
    )


def _control(r: _Reader, kind: PointKind, protocol: Protocol) -> ControlDef | None:
    c = r.sub("control")
    if c is None:
        return None
    if protocol is Protocol.ICCP:
        raise r.fail("control", "points imported over ICCP cannot be commanded (device control of a remote "
                                "centre is not offered)")
    named = protocol is Protocol.IEC61850
    ctype = c.enum("type", ControlType)
    if ctype not in CONTROL_TYPES[kind]:
        raise c.fail("type", f"a {kind.value} point cannot take a {ctype.value} control")
    control = ControlDef(
        type=ctype,
        address=c.get("address", int, 0 if named else ...),
        mode=c.enum("mode", ControlMode, ControlMode.SELECT_BEFORE_OPERATE),
        timeout_s=c.positive("timeout_s", 10.0),
        feedback_timeout_s=c.positive("feedback_timeout_s", 10.0),
        reference=c.get("reference", str, ... if named else ""),
    )
    c.finish()
    if control.mode is ControlMode.SBO_ENHANCED and not named:
        raise c.fail("mode", f"sbo_enhanced is an IEC 61850 control model; {protocol.value} has sbo or direct")
    if control.reference and not named:
        raise c.fail("reference", f"object references are for iec61850 controls, not {protocol.value}")
    if named and not iec61850_proto.REFERENCE_RE.fullmatch(control.reference):
        raise c.fail("reference", f"{control.reference!r} is not an IEC 61850 reference such as \"LD0/CSWI1.Pos\"")
    return control


def _key_text(key: Hashable) -> str:
    if isinstance(key, tuple) and len(key) == 2:
        what, where = key
        return {"ioa": f"IOA {where}", "ref": f"reference {where!r}", "ctl": f"control {where!r}"}.get(
            str(what), f"{what} {where}")
    return str(key)


def _limits(r: _Reader, kind: PointKind) -> AnalogLimits | None:
    lr = r.sub("limits")
    if lr is None:
        return None
    if kind is not PointKind.ANALOG:
        raise r.fail("limits", f"limits apply to analog points, not {kind.value}")
    lim = AnalogLimits(
        lolo=lr.get("lolo", float, None),
        lo=lr.get("lo", float, None),
        hi=lr.get("hi", float, None),
        hihi=lr.get("hihi", float, None),
        deadband=lr.positive("deadband", 0.0, allow_zero=True),
    )
    lr.finish()
    order = [v for v in (lim.lolo, lim.lo, lim.hi, lim.hihi) if v is not None]
    if order != sorted(order) or len(set(order)) != len(order):
        raise lr.fail(None, "limits must rise strictly: lolo < lo < hi < hihi")
    return lim


def _state_alarms(r: _Reader, kind: PointKind) -> tuple[StateAlarm, ...]:
    raw = r.get("state_alarms", list, [])
    if raw and not kind.is_status:
        raise r.fail("state_alarms", f"state alarms apply to single/double points, not {kind.value}")
    out = []
    for j, item in enumerate(raw):
        if not isinstance(item, dict):
            raise r.fail(f"state_alarms[{j}]", "must be a table")
        s = _Reader(r.path, r.loc, item, f"{r.where}.state_alarms[{j}]", r.lineno)
        value = s.get("value", int, required=True)
        hi = 1 if kind is PointKind.SINGLE else 3
        if not 0 <= value <= hi:
            raise s.fail("value", f"must be 0..{hi} for a {kind.value} point")
        out.append(StateAlarm(value=value, priority=_priority(s, "priority", Priority.HIGH),
                              text=s.get("text", str, required=True)))
        s.finish()
    return tuple(out)


def _sim(r: _Reader) -> SimProfile:
    s = r.sub("sim")
    if s is None:
        return SimProfile()
    prof = SimProfile(
        nominal=s.get("nominal", float, 0.0),
        noise_pct=s.positive("noise_pct", 0.0, allow_zero=True),
        curve=s.enum("curve", LoadCurve, LoadCurve.FLAT),
        period_s=s.positive("period_s", 0.0, allow_zero=True),
    )
    s.finish()
    return prof
