"""`dscada demo` runs to the end on the embedded CIM sample network and leaves its figures and CIM difference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "scada.cli", "demo", "--fast", "--data-dir", str(tmp_path / "data"),
         "--report-dir", str(report)],
        capture_output=True, text=True, timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "would parallel source SS-GRID1 with source SS-GRID2" in out
    assert "marked faulted by dms:flisr" in out  # FLISR marked the section it isolated
    assert "bad data: F3-CB.A.ph_B" in out  # the estimator caught the corrupted current
    assert "FLISR run 1" in out and "OMS outage record" in out
    assert "via SS-TR1-OLTC.Step.Set (modbus): done" in out or "no action" in out  # Volt/VAR through SCADA
    assert "Received by TSO-ICCP from this centre's TASE.2 server" in out  # ICCP both ways, outage recovered
    assert "ICCP: link outage backfilled from DR files" in out
    assert "Demo complete." in out
    for name in ("voltage_profile.png", "network_normal.png", "network_fault.png", "network_restored.png"):
        assert (report / name).stat().st_size > 10_000
    diff = (report / "reconfiguration_difference.xml").read_text(encoding="utf-8")
    assert "DifferenceModel" in diff and "Switch.open" in diff
