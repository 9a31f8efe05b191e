"""The dscada command line as a user runs it: bad configuration is refused before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from models.samples import relocate_station_text, sample_station_path

REPO = Path(__file__).resolve().parents[2]


def _station(tmp_path: Path, text_edit) -> Path:
    text = text_edit(relocate_station_text(sample_station_path().read_text(), tmp_path / "data"))
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def _dscada(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scada.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout_s)


@pytest.mark.timeout(90)
def test_serve_refuses_contradictory_config_and_starts_nothing(tmp_path: Path) -> None:
    # a second point on the breaker's IOA: the whole station must be refused, naming the line and field
    extra = '\n[[points]]\nname = "SHN/F1/DUP"\nkind = "single"\nrtu = "RTU-SHN"\naddress = 1002\ntype = "M_SP_TB_1"\n'
    path = _station(tmp_path, lambda t: t + extra)
    data_dir = tmp_path / "data"
    lines = path.read_text().splitlines()
    dup_line = len(lines) - 5
    assert lines[dup_line - 1] == "[[points]]"
    proc = _dscada("serve", "--config", str(path))
    assert proc.returncode == 2
    assert f"{path}:{dup_line}: points[" in proc.stderr
    assert "(SHN/F1/DUP).address: IOA 1002 on RTU 'RTU-SHN' is already used by points[1] (SHN/F1/CB)" in proc.stderr
    assert not data_dir.exists()  # nothing half-started: no database was created


@pytest.mark.timeout(60)
def test_unknown_point_kind_is_refused(tmp_path: Path) -> None:
    path = _station(tmp_path, lambda t: t.replace('kind = "analog"', 'kind = "analogue"', 1))
    proc = _dscada("serve", "--config", str(path))
    assert proc.returncode == 2 and "kind: unknown value 'analogue'" in proc.stderr
    assert "expected one of: single, double, analog" in proc.stderr
