"""Live reconfiguration: proposals on the real-time network state (switch positions from the topology service).

Build it from a ControlCenter: ``ReconfigService.from_center(center)``; ``start()``/``stop()`` are there for the
composition (no thread: a proposal runs on request). One proposal runs at a time (a second caller waits).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from dms.network_state import NetworkState
from dms.reconfig.engine import DEFAULT_OPTIONS, ReconfigOptions, StateProposal, propose_for_state
from dms.reconfig.errors import ReconfigError
from models.network import NetworkModel

__all__ = ["ReconfigService", "live_state"]


def live_state(model: NetworkModel, frequency_hz: float, topology: Any | None) -> NetworkState:
    """The model with the topology service's present switch positions (``topology`` may be None: model state)."""
    state = NetworkState.from_model(model, label=f"real time {time.strftime('%H:%M:%S')}", frequency_hz=frequency_hz)
    if topology is not None:
        snap = topology.snapshot()
        if len(snap.switch_closed) == len(model.switches):
            state = state.with_switch_array(snap.switch_closed)
    return state


class ReconfigService:
    """``state_provider`` returns the state to reconfigure (real time, or a study's)."""

    def __init__(self, state_provider: Callable[[], NetworkState], *,
                 options: ReconfigOptions = DEFAULT_OPTIONS,
                 held_provider: Callable[[], frozenset[str]] | None = None) -> None:
        self.state_provider = state_provider
        self.held_provider = held_provider  # switches to leave alone now (tags, faulted/earthed sections)
        self.options = options
        self._lock = threading.Lock()
        self.last: StateProposal | None = None

    @classmethod
    def from_center(cls, center: Any, *, options: ReconfigOptions = DEFAULT_OPTIONS) -> ReconfigService:
        """From a ``scada.server.ControlCenter``: its network model, frequency and topology service."""
        topology = getattr(center, "topology", None)
        model = topology.model if topology is not None else center.config.network
        if model is None:
            raise ReconfigError("reconfiguration needs a network model: the station configuration has none")
        frequency_hz = float(center.config.frequency_hz)

        def state() -> NetworkState:
            live_model = topology.model if topology is not None else model
            return live_state(live_model, frequency_hz, topology)

        return cls(state, options=options)

    def start(self) -> None:  # nothing runs in the background
        pass

    def stop(self) -> None:
        pass

    def propose(self, options: ReconfigOptions | None = None) -> StateProposal:
        options = options or self.options
        if self.held_provider is not None:
            options = dataclasses.replace(options, held=options.held | self.held_provider())
        with self._lock:
            proposal = propose_for_state(self.state_provider(), options)
            self.last = proposal
            return proposal
