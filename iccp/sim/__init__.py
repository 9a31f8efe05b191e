"""The transmission-SCADA simulator: what a transmission control centre sends a distribution centre over ICCP."""

from iccp.sim.transmission import (
    DEFAULT_LOAD_SHAPE,
    DEFAULT_TIES,
    BreakerResult,
    PointValue,
    SimPointDef,
    SimPointType,
    TieSpec,
    TransmissionConfig,
    TransmissionSimError,
    TransmissionSystem,
    ties_from_network,
)

__all__ = [
    "DEFAULT_LOAD_SHAPE",
    "DEFAULT_TIES",
    "BreakerResult",
    "PointValue",
    "SimPointDef",
    "SimPointType",
    "TieSpec",
    "TransmissionConfig",
    "TransmissionSimError",
    "TransmissionSystem",
    "ties_from_network",
]
