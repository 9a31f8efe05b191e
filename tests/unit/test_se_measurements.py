"""Measurement loader: good files load; bad rows are named by file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dms.se.errors import MeasurementFileError
from dms.se.measurements import MeasurementKind, load_gridappsd_measurements

HEADER = "ztype,zid,znode1,znode2,zval,zsig,zpseudo,znomval\n"
NODES = {"1.1": 0, "1.2": 1, "2.1": 2, "2R.1": 3}


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "measurements.csv"
    path.write_text(HEADER + body)
    return path


def test_loads_kinds_nodes_and_flags(tmp_path: Path) -> None:
    path = _write(tmp_path, "vi,v1,1.1,1.1,1.01,0.01,0,1\nPi,p2,2.1,2.1,-0.02,0.003,1,0\n"
                            "aji,tap,2.1,2R.1,1.0125,0.001,0,1\n")
    mset = load_gridappsd_measurements(path, NODES)
    assert mset.ids == ("v1", "p2", "tap")
    assert list(mset.data["kind"]) == [MeasurementKind.V_MAG, MeasurementKind.P_INJ, MeasurementKind.TAP]
    assert list(mset.data["node2"]) == [0, 2, 3]
    assert list(mset.data["pseudo"]) == [False, True, False]
    assert np.isclose(mset.data["value"][2], 1.0125)


@pytest.mark.parametrize(("body", "message"), [
    ("vi,v1,1.1,1.1,1,0.01,0,1\nXi,v2,1.1,1.1,1,0.01,0,1\n", r"measurements.csv:3: unknown measurement type 'Xi'"),
    ("vi,v1,9.9,9.9,1,0.01,0,1\n", r"measurements.csv:2: znode1 '9.9' is not in the node list"),
    ("vi,v1,1.1,1.1,abc,0.01,0,1\n", r"measurements.csv:2: bad number"),
    ("vi,v1,1.1,1.1,1,0,0,1\n", r"measurements.csv:2: sigma 0.0 of 'v1' must be > 0"),
    ("vi,v1,1.1,1.1,1,0.01,0,1\nvi,v1,1.2,1.2,1,0.01,0,1\n", r"measurement id 'v1' appears more than once"),
])
def test_bad_rows_name_file_and_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(MeasurementFileError, match=message):
        load_gridappsd_measurements(_write(tmp_path, body), NODES)


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "measurements.csv"
    path.write_text("ztype,zid\nvi,v1\n")
    with pytest.raises(MeasurementFileError, match=r"measurements.csv:1: missing column\(s\) znode1"):
        load_gridappsd_measurements(path, NODES)
    with pytest.raises(MeasurementFileError, match="nowhere.csv: cannot read"):
        load_gridappsd_measurements(tmp_path / "nowhere.csv", NODES)
