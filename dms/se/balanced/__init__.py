"""Balanced WLS state estimation on a pandapower network (issue #5): sparse Gauss-Newton, observability analysis
before solving, chi-square detection and largest-normalised-residual removal of bad data."""

from dms.se.balanced.bad_data import (
    BadDataOptions,
    BadDataResult,
    Detection,
    chi_square_threshold,
    estimate_with_bad_data,
    normalized_residuals,
)
from dms.se.balanced.measurements import (
    MeasKind,
    MeasurementPlan,
    Side,
    generate_measurements,
    make_measurements,
    measurement_name,
    with_zero_injections,
)
from dms.se.balanced.model import BalancedNetwork, network_from_pandapower
from dms.se.balanced.observability import ObservabilityReport, analyse_observability
from dms.se.balanced.wls import BalancedWlsResult, WlsOptions, estimate, jacobian, measurement_function

__all__ = [
    "BadDataOptions", "BadDataResult", "BalancedNetwork", "BalancedWlsResult", "Detection", "MeasKind",
    "MeasurementPlan", "ObservabilityReport", "Side", "WlsOptions", "analyse_observability", "chi_square_threshold",
    "estimate", "estimate_with_bad_data", "generate_measurements", "jacobian", "make_measurements",
    "measurement_function", "measurement_name", "network_from_pandapower", "normalized_residuals",
    "with_zero_injections",
]
