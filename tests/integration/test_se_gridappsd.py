"""Our three-phase WLS on GridAPPS-D's IEEE 123 estimator test set (../shared/data/se-ieee123), against the truth
and against GridAPPS-D's own estimate, plus the ``dscada se`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dms.se.gridappsd_testset import load_testset, run_testset

REPO = Path(__file__).resolve().parents[2]
SE_DIR = REPO.parent / "shared/data/se-ieee123"

pytestmark = pytest.mark.skipif(not (SE_DIR / "measurement_data.csv").is_file(),
                                reason=f"GridAPPS-D test set not found at {SE_DIR}")

# Achieved (benchmarks/results/se_gridappsd.json): mean 0.00170, p95 0.00612, max 0.01509 pu; a margin above them.
OURS_LIMIT = {"mean_pu": 0.0020, "p95_pu": 0.0070, "max_pu": 0.0170}


def test_beats_gridappsd_on_every_figure() -> None:
    report = run_testset(load_testset(SE_DIR))
    print(f"\nours {report.ours}\ntheirs {report.theirs}\ntime per snapshot mean {report.time_ms_mean:.1f} ms, "
          f"max {report.time_ms_max:.1f} ms")
    assert len(report.rows) == 39
    for name, limit in OURS_LIMIT.items():
        assert getattr(report.ours, name) <= limit, name
        assert getattr(report.ours, name) < getattr(report.theirs, name), name
    # GridAPPS-D's published-by-the-brief figures, to show the comparison reads their file correctly.
    assert report.theirs.mean_pu == pytest.approx(0.0057, abs=2e-4)
    assert report.theirs.max_pu == pytest.approx(0.0385, abs=2e-4)
    # The budget is 50 ms per snapshot; the mean is far below, allow noise on a shared 2-core machine.
    assert report.time_ms_mean < 50


def test_cli_json_and_bad_directory(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "scada.cli", "se", "gridappsd-testset", str(SE_DIR), "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert len(data["rows"]) == 39 and data["ours"]["max_pu"] < data["theirs"]["max_pu"]
    bad = subprocess.run([sys.executable, "-m", "scada.cli", "se", "gridappsd-testset", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "nodelist.csv: cannot read" in bad.stderr
