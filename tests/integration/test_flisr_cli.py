"""``dscada flisr FILE --fault SECTION`` as an engineer runs it: tables, JSON, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.sample_network import SAMPLE_NETWORK_PATH
from tests.support import IEEE123, requires_reference_feeders

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


def _dscada(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    python = str(PYTHON) if PYTHON.exists() else sys.executable
    return subprocess.run([python, "-m", "scada.cli", "flisr", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "COLUMNS": "200"})


def test_sample_fault_prints_steps_customers_and_checks() -> None:
    run = _dscada(str(SAMPLE_NETWORK_PATH), "--fault", "F2-C04")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "Switching steps" in out and "F2-RMU03-LBS2" in out and "F1-RMU08-LBS2" in out
    assert "restore_upstream" in out and "Customers" in out and "final check" in out
    assert "telemetered switches" in out  # default: switches with a Pos measurement


def test_sample_fault_json_is_the_whole_plan() -> None:
    run = _dscada(str(SAMPLE_NETWORK_PATH), "--fault", "F2-C04", "--json")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["fault"]["tripped_switch"] == "F2-CB"
    assert [s["switch"] for s in plan["steps"]] == ["F2-RMU03-LBS2", "F2-RMU06-LBS1", "F2-CB", "F1-RMU08-LBS2"]
    assert plan["steps"][2]["purpose"] == "restore_upstream" and plan["steps"][0]["action"] == "open"
    assert plan["customers_restored"] == (plan["customers_restored_upstream"]
                                          + plan["customers_restored_downstream"]) > 0
    assert plan["options"][0]["accepted"] is True and plan["plan_ms"] > 0


def test_controllable_list_marks_crew_steps() -> None:
    run = _dscada(str(SAMPLE_NETWORK_PATH), "--fault", "F2-C04", "--json", "--controllable", "F2-CB,F1-RMU08-LBS2")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert [s["telemetered"] for s in plan["isolation"]] == [False, False]


@pytest.mark.parametrize(("args", "expected"), [
    (("--fault", "F9-C99"), "no line or transformer named 'F9-C99'"),
    (("--fault", "F2-C04", "--controllable", "F2-CB,NOPE"), "no switch named 'NOPE'"),
])
def test_unknown_names_are_one_line_errors(args: tuple[str, ...], expected: str) -> None:
    run = _dscada(str(SAMPLE_NETWORK_PATH), *args)
    assert run.returncode == 2
    assert expected in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert run.stdout == ""


def test_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    run = _dscada(str(tmp_path / "none.xml"), "--fault", "l1")
    assert run.returncode == 2 and "none.xml" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@requires_reference_feeders()
def test_ieee123_json_uses_tie_sw7() -> None:
    run = _dscada(str(IEEE123), "--fault", "l117", "--json")
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["restoration"][-1]["switch"] == "sw7"
    assert plan["customers_unserved"] > 0 and plan["customers_restored_downstream"] > 0
