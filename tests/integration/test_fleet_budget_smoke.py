"""The mixed-fleet budget benchmark, run tiny: every protocol's processes start, the JSON has its shape, nothing is
lost, and every change arrives inside its budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTOCOLS = ("iec104", "dnp3", "modbus", "iec61850")


@pytest.mark.slow
@pytest.mark.timeout(240)  # ~25 s alone; 8 processes start, so leave room on a busy 2-core machine
def test_fleet_budget_smoke(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    png = tmp_path / "fleet.png"
    cmd = [sys.executable, str(REPO / "benchmarks" / "fleet_budget.py"), "--iec104", "2", "--dnp3", "2",
           "--modbus", "2", "--iec61850", "2", "--points", "400", "--changes-per-s", "100", "--seconds", "10",
           "--json", str(out), "--png", str(png)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=220)
    assert run.returncode == 0, f"benchmark failed:\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    r = json.loads(out.read_text())
    assert png.stat().st_size > 10_000

    assert r["params"]["devices"] == dict.fromkeys(PROTOCOLS, 2)
    assert r["params"]["points"] >= 400
    assert set(r["latency"]) == set(PROTOCOLS)
    for proto in PROTOCOLS:
        for cls in ("digital", "analog"):
            entry = r["latency"][proto][cls]
            for path in ("rtdb", "grpc"):
                s = entry[path]
                assert s["count"] > 0, (proto, cls, path)
                assert s["unmatched"] == 0, (proto, cls, path)
                assert 0 <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"], (proto, cls, path, s)
                assert s["inside_budget_pct"] == 100.0, (proto, cls, path, s)

    # Zero loss, proven by the simulators' counters against the RTDB's.
    assert r["lost_total"] == 0, r["loss"]
    for proto in ("iec104", "dnp3", "iec61850"):
        loss = r["loss"][proto]
        assert loss["changes_generated"] == loss["reports_sent"] == loss["rtdb_received"] > 0, (proto, loss)
        assert loss["lost_examples"] == [], (proto, loss)
    modbus = r["loss"]["modbus"]
    assert modbus["held_changes_missed"] == 0 and modbus["final_value_mismatches"] == 0, modbus
    assert modbus["changes_seen"] > 0, modbus
    assert r["goals"]["zero_loss"] is True
    links = {proto: loss["link_events"] for proto, loss in r["loss"].items() if loss["link_events"]}
    assert not links, f"links lost on the way: {links}"  # (the loss figures above could hide behind a reconnect)
    assert r["changes_generated"] > 500  # 100 changes/s for 10 s

    # Every process of the deployment was measured.
    procs = r["processes"]
    expected = {"server", "grpc_subscriber"} | {f"adapter:{p}" for p in PROTOCOLS} | \
        {f"simulator:{p}" for p in PROTOCOLS}
    assert set(procs) == expected
    for name, p in procs.items():
        assert p["pid"] > 0 and p["peak_rss_mb"] > 10, (name, p)
    assert procs["server"]["cpu_s"] > 0
    assert r["adapter_restarts"] == dict.fromkeys(PROTOCOLS, 0)
