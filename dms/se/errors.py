"""Errors of the state estimators."""

from __future__ import annotations

from dms.errors import DmsError


class SeError(DmsError):
    """Base class of state-estimation errors."""


class MeasurementFileError(SeError):
    """A measurement, network or snapshot file is missing or malformed (the message names file and line)."""


class NotObservableError(SeError):
    """The gain matrix is singular: the measurements do not determine the state."""


class DivergenceError(SeError):
    """Gauss-Newton did not converge within the iteration limit."""
