"""GridAPPS-D state-estimator offline test set (``state-estimator/test_files_123``): loader, runner, comparison.

Files: ``nodelist.csv`` (one node per line), ``ysparse.csv`` (Row, Col, G, B in siemens, 1-based into the node list,
lower triangle), ``vnom.csv`` (Nodename, Mag volts, Arg degrees), ``measurements.csv``, ``measurement_data.csv``
(timestamp + one column per measurement id), ``simulation_data.csv`` (truth vmag_/varg_ per node) and
``results_data.csv`` (GridAPPS-D's estimate). Regulators are the nodes named ``<bus>R.<phase>`` whose primary
``<bus>.<phase>`` exists (GridAPPS-D's naming); those without a tap measurement get a freely estimated ratio.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dms.se.bad_data import BadDataOptions, estimate_with_bad_data
from dms.se.errors import MeasurementFileError
from dms.se.measurements import MeasurementSet, load_gridappsd_measurements
from dms.se.wls3ph import PhaseNetwork, StartMode, ThreePhaseWls, WlsOptions

S_BASE_VA = 1e6  # GridAPPS-D's power base: injections in measurements.csv are in MW / Mvar per phase
TRUTH_MIN_PU = 0.5  # nodes with a lower true |V| (de-energised) are left out of the error figures


@dataclass(frozen=True, slots=True, eq=False)
class GridappsdTestset:
    network: PhaseNetwork
    measurements: MeasurementSet  # layout and the file's nominal values
    timestamps: np.ndarray  # int, per snapshot
    values: np.ndarray  # snapshots x measurements, in ``measurements`` order
    truth_vm_pu: np.ndarray  # snapshots x nodes
    theirs_vm_pu: np.ndarray  # snapshots x nodes (GridAPPS-D's estimate)


@dataclass(frozen=True, slots=True)
class ErrorFigures:
    mean_pu: float
    p95_pu: float
    max_pu: float

    @classmethod
    def of(cls, error: np.ndarray) -> ErrorFigures:
        return cls(float(np.mean(error)), float(np.percentile(error, 95)), float(np.max(error)))


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    timestamp: int
    time_ms: float
    iterations: int
    removed: tuple[str, ...]
    ours: ErrorFigures
    theirs: ErrorFigures


@dataclass(frozen=True, slots=True)
class TestsetReport:
    rows: tuple[SnapshotRow, ...]
    ours: ErrorFigures  # over all snapshots and nodes
    theirs: ErrorFigures
    time_ms_mean: float
    time_ms_max: float
    nodes: int
    measurements: int


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or ())]
            if missing:
                raise MeasurementFileError(f"{path}:1: missing column(s) {', '.join(missing)}")
            return list(reader)
    except OSError as exc:
        raise MeasurementFileError(f"{path}: cannot read ({exc.strerror})") from exc


def _columns(path: Path, rows: list[dict[str, str]], names: list[str]) -> np.ndarray:
    out = np.empty((len(rows), len(names)))
    for i, row in enumerate(rows):
        try:
            out[i] = [float(row[c]) for c in names]
        except KeyError as exc:
            raise MeasurementFileError(f"{path}:1: missing column {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise MeasurementFileError(f"{path}:{i + 2}: bad number ({exc})") from None
    return out


def load_network(directory: Path) -> PhaseNetwork:
    path = directory / "nodelist.csv"
    try:
        nodes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise MeasurementFileError(f"{path}: cannot read ({exc.strerror})") from exc
    index = {name: i for i, name in enumerate(nodes)}
    n = len(nodes)
    vpath = directory / "vnom.csv"
    vmag, varg = np.zeros(n), np.zeros(n)
    seen = np.zeros(n, dtype=bool)
    for line, row in enumerate(_read_csv(vpath, ("Nodename", "Mag", "Arg")), start=2):
        i = index.get(row["Nodename"])
        if i is None:
            raise MeasurementFileError(f"{vpath}:{line}: node {row['Nodename']!r} is not in the node list")
        vmag[i], varg[i], seen[i] = float(row["Mag"]), np.deg2rad(float(row["Arg"])), True
    if not seen.all():
        raise MeasurementFileError(f"{vpath}: no nominal voltage for node {nodes[int(np.argmin(seen))]!r}")
    ypath = directory / "ysparse.csv"
    yrows = _read_csv(ypath, ("Row", "Col", "G", "B"))
    trip = _columns(ypath, yrows, ["Row", "Col", "G", "B"])
    r, c = trip[:, 0].astype(np.int64) - 1, trip[:, 1].astype(np.int64) - 1
    bad = np.flatnonzero((r < 0) | (r >= n) | (c < 0) | (c >= n))
    if bad.size:
        raise MeasurementFileError(f"{ypath}:{bad[0] + 2}: row/column outside 1..{n}")
    y = trip[:, 2] + 1j * trip[:, 3]
    off = r != c  # the file holds one triangle; mirror it
    ybus = sp.csr_matrix((np.concatenate([y, y[off]]), (np.concatenate([r, c[off]]), np.concatenate([c, r[off]]))),
                         shape=(n, n))
    ybus_pu = (sp.diags(vmag) @ ybus @ sp.diags(vmag) / S_BASE_VA).tocsr()
    primary, regulated = [], []
    for name, i in index.items():
        bus, _, phase = name.rpartition(".")
        if bus.endswith("R") and f"{bus[:-1]}.{phase}" in index:
            primary.append(index[f"{bus[:-1]}.{phase}"])
            regulated.append(i)
    return PhaseNetwork(tuple(nodes), ybus_pu, varg, np.array(primary, dtype=np.int64),
                        np.array(regulated, dtype=np.int64))


def load_testset(directory: Path) -> GridappsdTestset:
    network = load_network(directory)
    index = {name: i for i, name in enumerate(network.node_names)}
    mset = load_gridappsd_measurements(directory / "measurements.csv", index)
    mpath = directory / "measurement_data.csv"
    mrows = _read_csv(mpath, ("timestamp",))
    values = _columns(mpath, mrows, list(mset.ids))
    stamps = _columns(mpath, mrows, ["timestamp"])[:, 0].astype(np.int64)
    spath = directory / "simulation_data.csv"
    srows = _read_csv(spath, ("timestamp",))
    truth = _columns(spath, srows, [f"vmag_{k}" for k in network.node_names])
    rpath = directory / "results_data.csv"
    rrows = _read_csv(rpath, ("timestamp",))
    theirs = _columns(rpath, rrows, [f"vmag_{k}" for k in network.node_names])
    for path, other in ((spath, srows), (rpath, rrows)):
        if len(other) != len(mrows) or any(int(o["timestamp"]) != t for o, t in zip(other, stamps, strict=True)):
            raise MeasurementFileError(f"{path}: timestamps differ from {mpath}")
    return GridappsdTestset(network, mset, stamps, values, truth, theirs)


def run_testset(testset: GridappsdTestset, *, wls: WlsOptions | None = None,
                bad_data: BadDataOptions | None = None) -> TestsetReport:
    """Estimate every snapshot (flat start first, then the previous estimate) and compare with truth and theirs."""
    estimator = ThreePhaseWls(testset.network, wls)
    rows: list[SnapshotRow] = []
    ours_all, theirs_all = [], []
    x0 = None
    for k, stamp in enumerate(testset.timestamps):
        mset = testset.measurements.with_values(testset.values[k])
        t0 = time.perf_counter()
        out = estimate_with_bad_data(estimator, mset, options=bad_data,
                                     start=StartMode.FLAT if x0 is None else StartMode.PREVIOUS, x0=x0)
        elapsed_ms = (time.perf_counter() - t0) * 1e3
        x0 = out.result.state
        truth = testset.truth_vm_pu[k]
        live = truth >= TRUTH_MIN_PU
        ours = np.abs(out.result.vm_pu - truth)[live]
        theirs = np.abs(testset.theirs_vm_pu[k] - truth)[live]
        ours_all.append(ours)
        theirs_all.append(theirs)
        rows.append(SnapshotRow(int(stamp), elapsed_ms, out.result.iterations, out.removed, ErrorFigures.of(ours),
                                ErrorFigures.of(theirs)))
    times = np.array([r.time_ms for r in rows])
    return TestsetReport(tuple(rows), ErrorFigures.of(np.concatenate(ours_all)),
                         ErrorFigures.of(np.concatenate(theirs_all)), float(times.mean()), float(times.max()),
                         testset.network.size, len(testset.measurements))
