"""Measurement sets for the state estimators as numpy structured arrays (one row per measurement).

A :class:`MeasurementSet` is immutable: a new snapshot of values is a new set sharing the layout
(:meth:`MeasurementSet.with_values`), so the estimator can cache everything that depends only on the layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np

from dms.se.errors import MeasurementFileError


class MeasurementKind(IntEnum):
    """What a measurement observes; the GridAPPS-D code letters are in :data:`GRIDAPPSD_CODES`."""

    V_MAG = 0  # phase-voltage magnitude, pu of nominal
    V_ANGLE = 1  # phase-voltage angle minus its nominal angle, rad
    P_INJ = 2  # active power injected at a node, pu of the power base
    Q_INJ = 3  # reactive power injected at a node, pu
    TAP = 4  # regulator ratio |V regulated| / |V primary| (ideal), pu
    # Branch kinds: ``node`` is a row of the network's branch-terminal matrix (the current into one element at one
    # of its terminal nodes), ``node2`` that terminal's node. Power/current *into the element* at that terminal.
    P_FLOW = 5  # active power, pu of the power base
    Q_FLOW = 6  # reactive power, pu
    I_MAG = 7  # current magnitude, pu (amperes x node base voltage / power base)


BRANCH_KINDS = frozenset({MeasurementKind.P_FLOW, MeasurementKind.Q_FLOW, MeasurementKind.I_MAG})


GRIDAPPSD_CODES: dict[str, MeasurementKind] = {
    "vi": MeasurementKind.V_MAG,
    "Ti": MeasurementKind.V_ANGLE,
    "Pi": MeasurementKind.P_INJ,
    "Qi": MeasurementKind.Q_INJ,
    "aji": MeasurementKind.TAP,
}

MEASUREMENT_DTYPE = np.dtype([
    ("kind", np.int8),
    ("node", np.int32),  # index into the network's node list
    ("node2", np.int32),  # regulated side of a tap measurement, the terminal node of a branch one, else == node
    ("value", np.float64),
    ("sigma", np.float64),
    ("pseudo", np.bool_),
])


def measurement_array(size: int) -> np.ndarray:
    """An all-zero measurement array of ``size`` rows."""
    return np.zeros(size, dtype=MEASUREMENT_DTYPE)


@dataclass(frozen=True, slots=True)
class MeasurementSet:
    """Measurements of one snapshot: ``ids[i]`` names row ``data[i]``."""

    ids: tuple[str, ...]
    data: np.ndarray

    def __post_init__(self) -> None:
        if self.data.dtype != MEASUREMENT_DTYPE:
            raise ValueError(f"measurement set: dtype {self.data.dtype} is not MEASUREMENT_DTYPE")
        if len(self.ids) != len(self.data):
            raise ValueError(f"measurement set: {len(self.ids)} ids for {len(self.data)} rows")
        bad = np.flatnonzero(~(self.data["sigma"] > 0))
        if bad.size:
            raise ValueError(f"measurement {self.ids[bad[0]]!r}: sigma {self.data['sigma'][bad[0]]} must be > 0")

    def __len__(self) -> int:
        return len(self.data)

    def with_values(self, values: np.ndarray) -> MeasurementSet:
        """The same measurements with new values (one per row, same order)."""
        if values.shape != (len(self.data),):
            raise ValueError(f"measurement set: {values.shape} values for {len(self.data)} measurements")
        data = self.data.copy()
        data["value"] = values
        return MeasurementSet(self.ids, data)

    def without(self, rows: np.ndarray) -> MeasurementSet:
        """The set with the given row indices removed (bad-data removal)."""
        keep = np.ones(len(self.data), dtype=bool)
        keep[rows] = False
        return MeasurementSet(tuple(i for i, k in zip(self.ids, keep, strict=True) if k), self.data[keep])


def load_gridappsd_measurements(path: Path, node_index: dict[str, int]) -> MeasurementSet:
    """Read a GridAPPS-D ``measurements.csv`` (ztype, zid, znode1, znode2, zval, zsig, zpseudo, znomval).

    Raises :class:`MeasurementFileError` naming the file and line of the first bad row.
    """
    required = ("ztype", "zid", "znode1", "znode2", "zval", "zsig", "zpseudo")
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise MeasurementFileError(f"{path}:1: missing column(s) {', '.join(missing)}")
            rows = list(reader)
    except OSError as exc:
        raise MeasurementFileError(f"{path}: cannot read ({exc.strerror})") from exc
    data = measurement_array(len(rows))
    ids: list[str] = []
    for i, row in enumerate(rows):
        where = f"{path}:{i + 2}"  # line 1 is the header
        kind = GRIDAPPSD_CODES.get(row["ztype"])
        if kind is None:
            raise MeasurementFileError(f"{where}: unknown measurement type {row['ztype']!r}")
        for col in ("znode1", "znode2"):
            if row[col] not in node_index:
                raise MeasurementFileError(f"{where}: {col} {row[col]!r} is not in the node list")
        try:
            value, sigma, pseudo = float(row["zval"]), float(row["zsig"]), int(row["zpseudo"])
        except (TypeError, ValueError) as exc:
            raise MeasurementFileError(f"{where}: bad number ({exc})") from exc
        if not sigma > 0:
            raise MeasurementFileError(f"{where}: sigma {sigma} of {row['zid']!r} must be > 0")
        data[i] = (kind, node_index[row["znode1"]], node_index[row["znode2"]], value, sigma, pseudo != 0)
        ids.append(row["zid"])
    if len(set(ids)) != len(ids):
        dup = next(x for x in ids if ids.count(x) > 1)
        raise MeasurementFileError(f"{path}: measurement id {dup!r} appears more than once")
    return MeasurementSet(tuple(ids), data)
