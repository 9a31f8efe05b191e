"""``dscada oms replay EVENTS.csv --model FILE`` as an operator runs it: text, JSON and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.sample_network import SAMPLE_NETWORK_PATH, build_sample_network
from oms.connectivity import Connectivity, build_connectivity
from oms.events import EventKind, OmsEvent, write_events_csv

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
T0 = 1_790_000_000_000


def _dscada(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, "-m", "scada.cli", "oms", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "COLUMNS": "200"})


def _meters(conn: Connectivity, device: str) -> list[str]:
    loads = conn.downstream_loads(conn.device(device).index)
    return [conn.meter_ids[i] for i in np.flatnonzero(np.isin(conn.meter_load, loads))]


@pytest.fixture(scope="module")
def events_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conn = build_connectivity(build_sample_network())
    fuse = _meters(conn, "F1-RMU03-TEE")
    lone = _meters(conn, "F2-RMU02-TEE")[5]
    events = [OmsEvent(T0 + 30_000 + 100 * i, EventKind.PON, m) for i, m in enumerate(fuse[:30])]
    events += [
        OmsEvent(T0 + 31_000, EventKind.PON, fuse[0]),  # duplicate
        OmsEvent(T0 + 32_000, EventKind.PON, "000000000000"),  # unknown meter
        OmsEvent(T0 + 40_000, EventKind.PON, lone),
        OmsEvent(T0 + 300_000, EventKind.SCADA_OPEN, "F4-CB", "trip"),
        OmsEvent(T0 + 320_000, EventKind.CALL, _meters(conn, "F4-CB")[0], "no power, loud bang"),
        OmsEvent(T0 + 1_200_000, EventKind.SCADA_CLOSE, "F4-CB"),
    ]
    events += [OmsEvent(T0 + 3_600_000, EventKind.PRN, m) for m in fuse[:30]]
    return write_events_csv(tmp_path_factory.mktemp("oms") / "events.csv", events)


def test_replay_json_lists_predictions_slos_and_outcomes(events_csv: Path) -> None:
    run = _dscada("replay", str(events_csv), "--model", str(SAMPLE_NETWORK_PATH), "--json")
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["events"] == 66
    assert doc["outcomes"]["applied"] == 64 and doc["outcomes"]["duplicate"] == 1 and doc["outcomes"]["unknown"] == 1
    assert [(n["id"], n["outcome"]) for n in doc["not_applied"]] == [("170011030001", "duplicate"),
                                                                     ("000000000000", "unknown")]
    by_device = {p["device"]: p for p in doc["predictions"]}
    assert set(by_device) == {"F1-RMU03-TEE", "F4-CB"}
    assert by_device["F1-RMU03-TEE"]["state"] == "restored" and by_device["F1-RMU03-TEE"]["pons"] == 30
    breaker = by_device["F4-CB"]
    assert breaker["state"] == "restored" and breaker["scada_confirmed"] and breaker["calls"] == 1
    assert [e["state"] for e in breaker["timeline"]] == ["confirmed", "restored"]
    assert [(s["dt"], s["state"]) for s in doc["slos"]] == [("F2-RMU02-DT", "open")]


def test_replay_text_prints_tables_and_timelines(events_csv: Path) -> None:
    run = _dscada("replay", str(events_csv), "--model", str(SAMPLE_NETWORK_PATH))
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "66 events against sample_network" in out and "unknown ids (1): 000000000000" in out
    assert "Predicted outages (2):" in out and "Single lights out (1):" in out and "Timelines:" in out
    assert "F1-RMU03-TEE" in out and "confirmed: SCADA reports the device open" in out


def test_replay_errors_are_one_line(tmp_path: Path) -> None:
    run = _dscada("replay", str(tmp_path / "missing.csv"), "--model", str(SAMPLE_NETWORK_PATH))
    assert run.returncode == 2 and "missing.csv: cannot read events" in run.stderr and "Traceback" not in run.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("time,kind,id\n2026-11-27T03:10:00Z,flicker,1\n")
    run = _dscada("replay", str(bad), "--model", str(SAMPLE_NETWORK_PATH))
    assert run.returncode == 2 and "bad.csv:2: unknown kind 'flicker'" in run.stderr
    run = _dscada("replay", str(bad), "--model", str(tmp_path / "nope.xml"))
    assert run.returncode == 2 and "nope.xml" in run.stderr and "Traceback" not in run.stderr
