"""Daily load curves: a smooth per-unit multiplier by hour of day.

Shapes are 24 hourly values (hour 0 = midnight..01:00 centre at 0.0) joined by a periodic Catmull-Rom spline, so the
multiplier and its slope are continuous across hours and across midnight.
"""

from __future__ import annotations

import math
import time

from models.config import LoadCurve

#: Per-unit demand at each full hour, peak = 1.0.
LOAD_SHAPES: dict[LoadCurve, tuple[float, ...]] = {
    LoadCurve.FLAT: (1.0,) * 24,
    # Night trough, a morning peak at 07-08 h and the evening peak at 19-20 h.
    LoadCurve.RESIDENTIAL: (
        0.45, 0.40, 0.37, 0.36, 0.37, 0.42, 0.58, 0.74, 0.76, 0.66, 0.60, 0.58,
        0.58, 0.56, 0.55, 0.57, 0.63, 0.75, 0.90, 1.00, 0.98, 0.86, 0.70, 0.54,
    ),
    # Offices and shops: low at night, a plateau during business hours with a lunch dip.
    LoadCurve.COMMERCIAL: (
        0.30, 0.28, 0.27, 0.27, 0.28, 0.30, 0.38, 0.55, 0.80, 0.95, 1.00, 0.99,
        0.93, 0.97, 0.99, 0.97, 0.92, 0.82, 0.66, 0.52, 0.44, 0.38, 0.34, 0.32,
    ),
}


def curve_multiplier(curve: LoadCurve, hour: float) -> float:
    """Per-unit multiplier of ``curve`` at ``hour`` (any real number; taken modulo 24)."""
    shape = LOAD_SHAPES[curve]
    h = hour % 24.0
    i = math.floor(h)
    t = h - i
    p0, p1, p2, p3 = (shape[(i + k) % 24] for k in (-1, 0, 1, 2))
    # Catmull-Rom through p1 (t=0) and p2 (t=1).
    return 0.5 * (
        2.0 * p1
        + (p2 - p0) * t
        + (2.0 * p0 - 5.0 * p1 + 4.0 * p2 - p3) * t * t
        + (3.0 * p1 - p0 - 3.0 * p2 + p3) * t * t * t
    )


def hour_of_day(epoch_s: float, *, utc: bool = False) -> float:
    """Fractional hour of the day of ``epoch_s`` in local time (or UTC)."""
    tm = time.gmtime(epoch_s) if utc else time.localtime(epoch_s)
    return tm.tm_hour + tm.tm_min / 60.0 + (tm.tm_sec + epoch_s % 1.0) / 3600.0


def energy_kwh(curve: LoadCurve, nominal_kwh_per_h: float, start_epoch_s: float, end_epoch_s: float) -> float:
    """Energy accumulated between two instants at ``nominal_kwh_per_h`` times the curve (trapezoid rule)."""
    dt_h = (end_epoch_s - start_epoch_s) / 3600.0
    if dt_h <= 0:
        return 0.0
    m0 = curve_multiplier(curve, hour_of_day(start_epoch_s))
    m1 = curve_multiplier(curve, hour_of_day(end_epoch_s))
    return nominal_kwh_per_h * 0.5 * (m0 + m1) * dt_h
