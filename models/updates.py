"""Messages on the one update path: adapter -> batch -> RTDB.

Bulk rows are numpy structured arrays so a batch crosses a process boundary as a few buffers, not objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Cause(IntEnum):
    """Why a value was reported (IEC 60870-5-101/104 cause of transmission, generalised)."""

    SPONTANEOUS = 3
    PERIODIC = 1
    BACKGROUND = 2
    INTERROGATED = 20  # general or counter interrogation: confirms the value is current
    RETURN_REMOTE = 11  # result of a remote command
    RETURN_LOCAL = 12
    MANUAL = 50  # manual entry / substitution in the control centre
    SUPERVISION = 60  # quality change by the RTDB itself (stale, link lost)


#: One row per reported value. ``source_time_ms`` is the field's time tag (UTC epoch ms), -1 if none.
UPDATE_DTYPE = np.dtype(
    [
        ("point", "<i4"),
        ("value", "<f8"),
        ("quality", "<u2"),
        ("source_time_ms", "<i8"),
        ("cause", "u1"),
    ]
)


def new_update_rows(n: int) -> np.ndarray:
    return np.zeros(n, dtype=UPDATE_DTYPE)


@dataclass(frozen=True, slots=True)
class UpdateBatch:
    """Values gathered by an adapter from one protocol response (or one short flush interval)."""

    adapter: str
    rows: np.ndarray  # UPDATE_DTYPE
    received_ms: int  # adapter receive time, UTC epoch ms


@dataclass(frozen=True, slots=True)
class LinkEvent:
    """An RTU link came up or went down; ``address`` is the active link when up."""

    adapter: str
    rtu: str
    up: bool
    address: str = ""
    reason: str = ""
    time_ms: int = 0


@dataclass(frozen=True, slots=True)
class InterrogationDone:
    """A general interrogation of ``rtu`` completed (ACT_TERM), so every point it covers was confirmed."""

    adapter: str
    rtu: str
    time_ms: int
