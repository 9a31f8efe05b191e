"""Major Event Day threshold by the IEEE 1366 2.5β method.

From a history of daily SAIDI (minutes; IEEE 1366 asks for the five previous years): drop the days with zero SAIDI
(the log is undefined), take natural logs, α = their mean, β = their sample standard deviation (n − 1), and
T_MED = exp(α + 2.5·β). A day whose SAIDI exceeds T_MED is a Major Event Day.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from oms.errors import OmsError

__all__ = ["MED_BETA_MULTIPLIER", "MedThreshold", "med_threshold"]

MED_BETA_MULTIPLIER = 2.5


@dataclass(frozen=True, slots=True)
class MedThreshold:
    alpha: float  # mean of ln(daily SAIDI) over non-zero days
    beta: float  # sample standard deviation of the same
    t_med_min: float  # exp(alpha + 2.5 beta), minutes of SAIDI per day
    history_days: int  # days in the history, zero days included
    zero_days_dropped: int
    first_day: date | None = None
    last_day: date | None = None


def med_threshold(daily_saidi_min: Sequence[float] | np.ndarray, days: Sequence[date] | None = None) -> MedThreshold:
    """T_MED from daily SAIDI values (minutes, one per day; days without interruptions as 0)."""
    values = np.asarray(daily_saidi_min, dtype=float).ravel()
    if days is not None and len(days) != len(values):
        raise OmsError(f"daily SAIDI history: {len(values)} values but {len(days)} days")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise OmsError("daily SAIDI history: values must be finite and not negative")
    positive = values[values > 0]
    if len(positive) < 2:
        raise OmsError(f"daily SAIDI history: {len(positive)} day(s) with SAIDI > 0; the 2.5β method needs at "
                       "least 2 (IEEE 1366 uses five years)")
    logs = np.log(positive)
    alpha = float(logs.mean())
    beta = float(logs.std(ddof=1))
    return MedThreshold(alpha=alpha, beta=beta, t_med_min=float(np.exp(alpha + MED_BETA_MULTIPLIER * beta)),
                        history_days=len(values), zero_days_dropped=int(len(values) - len(positive)),
                        first_day=min(days) if days else None, last_day=max(days) if days else None)
