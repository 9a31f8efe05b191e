"""``dscada reliability OUTAGES.csv --customers N ...`` as an engineer runs it: JSON, tables, report, errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"

OUTAGES = """start,end,customers,feeder,substation,planned,cause,event_id
2025-03-01T10:00:00,2025-03-01T11:00:00,100,F1,S1,false,tree,
2025-03-01T12:00:00,2025-03-01T12:30:00,200,F2,S1,false,cable,
2025-03-01T13:00:00,2025-03-01T13:02:00,300,F2,S1,false,lightning,E1
2025-03-01T13:03:00,2025-03-01T13:04:00,300,F2,S1,false,lightning,E1
2025-03-01T08:00:00,2025-03-01T12:00:00,40,F1,S1,true,maintenance,
2025-03-02T02:00:00,2025-03-02T14:00:00,900,F2,S1,false,storm,
"""


def _dscada(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, "-m", "scada.cli", "reliability", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    out = {"outages": tmp_path / "outages.csv", "history": tmp_path / "history.csv", "served": tmp_path / "served.csv"}
    out["outages"].write_text(OUTAGES, encoding="utf-8")
    days = [f"2024-01-{d:02d},{v}" for d, v in zip(range(1, 11), (10, 20, 40, 20, 10, 0, 30, 20, 10, 20), strict=True)]
    out["history"].write_text("date,saidi_min\n" + "\n".join(days) + "\n", encoding="utf-8")
    out["served"].write_text("name,customers_served\nF1,400\nF2,600\n", encoding="utf-8")
    return out


def test_json_with_history_groups_and_report(files: dict[str, Path], tmp_path: Path) -> None:
    run = _dscada(str(files["outages"]), "--customers", "1000", "--history", str(files["history"]), "--by", "feeder",
                  "--served", str(files["served"]), "--json", "--report-dir", str(tmp_path / "report"))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["period"] == {"start": "2025-03-01T00:00:00", "end": "2025-03-03T00:00:00", "hours": 48.0}
    ix = data["indices"]
    # ΣNi = 100 + 200 + 900 = 1200, Σri·Ni = 60·100 + 30·200 + 720·900 = 660,000 min
    assert ix["saifi"] == pytest.approx(1.2) and ix["saidi_min"] == pytest.approx(660.0)
    assert ix["maifi"] == pytest.approx(0.6) and ix["maifie"] == pytest.approx(0.3)
    # T_MED ≈ 70 min: day 2 (648 min of SAIDI) is a Major Event Day, day 1 (12 min) is not;
    # without day 2: ΣNi = 300, Σri·Ni = 12,000
    assert data["med"]["major_event_days"] == ["2025-03-02"] and data["med"]["zero_days_dropped"] == 1
    assert data["indices_excluding_med"]["saifi"] == pytest.approx(0.3)
    assert data["indices_excluding_med"]["saidi_min"] == pytest.approx(12.0)
    assert data["planned"]["saidi_min"] == pytest.approx(9.6) and data["records"] == {"total": 6, "planned": 1}
    assert data["groups"]["by"] == "feeder" and data["groups"]["basis"] == "group"
    assert data["groups"]["indices"]["F1"]["saifi"] == pytest.approx(100 / 400)
    assert data["groups"]["indices_excluding_med"]["F2"]["saidi_min"] == pytest.approx(6000 / 600)
    assert [d["major_event_day"] for d in data["daily"]] == [False, True]
    assert len(data["report_files"]) == 4
    for name in data["report_files"]:
        assert Path(name).stat().st_size > 0
    assert (tmp_path / "report" / "daily_saidi.png").read_bytes()[:4] == b"\x89PNG"


def test_tables_by_substation(files: dict[str, Path]) -> None:
    run = _dscada(str(files["outages"]), "--customers", "1000", "--by", "substation", "--to", "2025-03-01")
    assert run.returncode == 0, run.stderr
    assert "IEEE 1366 indices" in run.stdout and "By substation" in run.stdout and "S1" in run.stdout
    assert "contribution to the system indices" in run.stdout
    assert "0.3000" in run.stdout and "12.0000" in run.stdout  # SAIFI and SAIDI of day 1 alone


@pytest.mark.parametrize(("text", "expected"), [
    ("start,end,customers\n2025-03-01T10:00,2025-03-01T09:00,5\n", r"bad\.csv:2: .*end 2025-03-01T09:00:00 is before"),
    ("start,end,customers,kolour\n", r"bad\.csv:1: unknown column 'kolour'"),
    ("start,end,customers\n2025-03-01T10:00,2025-03-01T11:00,5\n2025-03-01T10:00,2025-03-01T11:00,-5\n",
     r"bad\.csv:3: customers must not be negative"),
])
def test_bad_input_is_a_one_line_error(tmp_path: Path, text: str, expected: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text, encoding="utf-8")
    run = _dscada(str(bad), "--customers", "1000", "--json")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("dscada reliability: ")
    assert re.search(expected, run.stderr), run.stderr


def test_argument_errors(files: dict[str, Path]) -> None:
    run = _dscada(str(files["outages"]), "--customers", "0")
    assert run.returncode == 2 and "must be positive" in run.stderr
    run = _dscada(str(files["outages"]), "--customers", "10", "--by", "feeder", "--served", str(files["history"]))
    assert run.returncode == 2 and "unknown column 'date'" in run.stderr
