"""The mixed-fleet generator and the benchmark's loss/latency bookkeeping (benchmarks/fleet_budget.py)."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.config import parse_station_config
from models.synthetic import fleet_points_per_device, mixed_fleet_station_toml

REPO = Path(__file__).resolve().parents[2]


def _bench():  # benchmarks/ is a folder of scripts, not a package
    name = "fleet_budget_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "fleet_budget.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_fleet_meets_the_issue_minimum() -> None:
    ports = {"iec104": range(20000, 20050), "dnp3": range(21000, 21050), "modbus": range(22000, 22020),
             "iec61850": range(23000, 23010)}
    config = parse_station_config(mixed_fleet_station_toml(ports, 20000))
    assert len(config.points) >= 20000
    assert Counter(r.protocol.value for r in config.rtus) == {"iec104": 50, "dnp3": 50, "modbus": 20, "iec61850": 10}
    assert all(r.frtu == (r.protocol.value == "dnp3") for r in config.rtus)
    kinds = Counter((p.source.frontend, p.kind.value) for p in config.points)
    for proto in ports:
        assert kinds[(proto, "analog")] > 0
        assert kinds[(proto, "double")] + kinds[(proto, "single")] > 0


def test_points_per_device_follow_the_weights() -> None:
    per = fleet_points_per_device({"iec104": 2, "dnp3": 1, "modbus": 0}, 1000)
    assert per["iec104"] == 2 * per["dnp3"]
    assert "modbus" not in per
    assert 2 * per["iec104"] + per["dnp3"] >= 1000
    with pytest.raises(ValueError, match="empty"):
        fleet_points_per_device({"iec104": 0}, 10)


def _log(rows: list[tuple[int, float, int]]) -> np.ndarray:
    return np.array(rows, dtype=_bench().LOG_DTYPE)


def _rows(rows: list[tuple[int, float, int]], read_ms: list[int] | None = None) -> np.ndarray:
    """Arrival rows (point, value, receipt); ``read_ms``: their time tags (a poll's time), -1 (none) by default."""
    fb = _bench()
    out = np.zeros(len(rows), dtype=fb.ROW_DTYPE)
    for i, (p, v, recv) in enumerate(rows):
        out[i] = (p, v, -1 if read_ms is None else read_ms[i], recv, 3)
    return out


def test_change_log_joins_an_arrival_to_the_change_that_produced_its_value() -> None:
    fb = _bench()
    clog = fb.ChangeLog(_log([(7, 1.0, 1000), (7, 2.0, 1500), (7, 1.0, 2000), (8, 5.0, 1200)]))
    lat, match = clog.latency(_rows([(7, 2.0, 2100), (7, 1.0, 2300), (8, 5.0, 1250), (8, 6.0, 1300)]))
    # 2.0 arrived after 1.0 had come back: it is the 1500 change; 1.0 is the latest (2000) change to 1.0.
    assert lat[:3].tolist() == [600.0, 300.0, 50.0]
    assert np.isnan(lat[3]) and match[3] == -1  # a value the load never produced


def test_modbus_loss_counts_only_values_held_for_a_scan() -> None:
    fb = _bench()
    modbus = fb.PROTOCOLS.index("modbus")
    table = fb.PointTable(protocol=np.full(2, modbus, dtype=np.int8), digital=np.array([True, False]),
                          rtu=np.zeros(2, dtype=np.int32), budget_ms=np.full(2, 4000.0), goal_ms=np.full(2, 2250.0),
                          field_time=np.zeros(2, dtype=bool), rtu_names=("MTR000",))
    scan = np.full(2, 2000.0)
    initial = np.array([0.0, 100.0])
    # Point 0 flips 0 -> 1 -> 0 within 100 ms (never polled: fine, the RTDB already holds 0), then to 1 and stays.
    # Point 1 goes to 120 and stays, but no poll ever brought it: a loss.
    clog = fb.ChangeLog(_log([(0, 1.0, 1000), (0, 0.0, 1100), (0, 1.0, 5000), (1, 120.0, 1000)]))
    arrived = _rows([(0, 1.0, 6000)])
    got = fb.modbus_loss(arrived, clog, table, scan, initial, end_ms=20000)
    assert got == {"changes": 4, "changes_held_a_scan": 3, "held_changes_missed": 1, "changes_seen": 1,
                   "superseded_before_a_poll_unseen": 1}
    got = fb.modbus_loss(_rows([(0, 1.0, 6000), (1, 120.0, 2500)]), clog, table, scan, initial, end_ms=20000)
    assert got["held_changes_missed"] == 0


def test_a_late_poll_delivery_is_late_not_lost() -> None:
    fb = _bench()
    modbus = fb.PROTOCOLS.index("modbus")
    table = fb.PointTable(protocol=np.full(1, modbus, dtype=np.int8), digital=np.array([False]),
                          rtu=np.zeros(1, dtype=np.int32), budget_ms=np.full(1, 5000.0), goal_ms=np.full(1, 2750.0),
                          field_time=np.zeros(1, dtype=bool), rtu_names=("MTR000",))
    clog = fb.ChangeLog(_log([(0, 120.0, 1000), (0, 130.0, 9000)]))
    # Polled at 2500 and 9500, but the server took 30 s to take the first one in.
    rows = _rows([(0, 120.0, 32500), (0, 130.0, 32600)], read_ms=[2500, 9500])
    got = fb.modbus_loss(rows, clog, table, np.full(1, 2500.0), np.array([100.0]), end_ms=40000)
    assert got["held_changes_missed"] == 0 and got["changes_seen"] == 2
    lat, _ = clog.latency(rows)
    assert lat.tolist() == [31500.0, 23600.0]  # each joined to its own change, not to the later one
