"""Switch order management: switching orders of open/close/earth/tag steps, validated against the topology
interlocks on a simulated copy of the network, simulated in study mode, executed through SCADA (telemetered steps)
or recorded from field-crew reports (manual steps), exported to work-force management as a CIM SwitchingPlan-shaped
JSON document (``dms.switching.export``)."""

from dms.switching.errors import OrderNotFoundError, OrderStateError, PlanFormatError, StepRefusedError, SwitchingError
from dms.switching.export import FORMAT, PlanSpec, order_document, order_specs_from_document
from dms.switching.order import (
    OrderState,
    ProblemKind,
    SimulationReport,
    StepAction,
    StepProblem,
    StepSimulation,
    StepSpec,
    StepStatus,
    SwitchingOrder,
    SwitchingStep,
    ValidationReport,
)
from dms.switching.service import ExecutionOutcome, SwitchingService
from dms.switching.store import OrderStore
from dms.switching.validation import Marking, StepWalk, markings_from_tags, simulate_steps, validate_steps

__all__ = [
    "FORMAT",
    "ExecutionOutcome",
    "Marking",
    "OrderNotFoundError",
    "OrderState",
    "OrderStateError",
    "OrderStore",
    "PlanFormatError",
    "PlanSpec",
    "ProblemKind",
    "SimulationReport",
    "StepAction",
    "StepProblem",
    "StepRefusedError",
    "StepSimulation",
    "StepSpec",
    "StepStatus",
    "StepWalk",
    "SwitchingError",
    "SwitchingOrder",
    "SwitchingService",
    "SwitchingStep",
    "ValidationReport",
    "markings_from_tags",
    "order_document",
    "order_specs_from_document",
    "simulate_steps",
    "validate_steps",
]
