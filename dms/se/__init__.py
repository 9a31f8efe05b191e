"""State estimation (issue #5): three-phase WLS on a phase-level network with bad-data processing."""

from dms.se.bad_data import BadDataOptions, BadDataResult, estimate_with_bad_data, normalized_residuals
from dms.se.errors import DivergenceError, MeasurementFileError, NotObservableError, SeError
from dms.se.measurements import MeasurementKind, MeasurementSet, load_gridappsd_measurements
from dms.se.wls3ph import PhaseNetwork, StartMode, ThreePhaseWls, WlsOptions, WlsResult

__all__ = [
    "BadDataOptions", "BadDataResult", "DivergenceError", "MeasurementFileError", "MeasurementKind", "MeasurementSet",
    "NotObservableError", "PhaseNetwork", "SeError", "StartMode", "ThreePhaseWls", "WlsOptions", "WlsResult",
    "estimate_with_bad_data", "load_gridappsd_measurements", "normalized_residuals",
]
