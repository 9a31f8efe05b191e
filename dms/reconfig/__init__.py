"""Feeder reconfiguration (issue #5): the open points that minimise losses or balance feeder loading, radial, every
load supplied, within limits, and the switching sequence that gets there. See ``dms.reconfig.engine``."""

from dms.reconfig.engine import (
    ALGORITHM,
    ReconfigOptions,
    ReconfigResult,
    StateProposal,
    ThreePhaseVerdict,
    load_network,
    propose_for_state,
    reconfigure,
    reconfigure_file,
    state_to_net,
)
from dms.reconfig.errors import (
    InfeasibleReconfigurationError,
    MeshedNetworkError,
    NetworkFileError,
    ReconfigError,
)
from dms.reconfig.evaluate import FeederLoading, Operating
from dms.reconfig.milp import MilpResult, Objective, solve_milp
from dms.reconfig.problem import ReconfigProblem, SwitchableLines, build_problem
from dms.reconfig.sequence import StepAction, SwitchingStep, TransferMode

__all__ = [
    "ALGORITHM", "FeederLoading", "InfeasibleReconfigurationError", "MeshedNetworkError", "MilpResult",
    "NetworkFileError", "Objective", "Operating", "ReconfigError", "ReconfigOptions", "ReconfigProblem",
    "ReconfigResult", "StateProposal", "StepAction", "SwitchableLines", "SwitchingStep", "ThreePhaseVerdict",
    "TransferMode", "build_problem", "load_network", "propose_for_state", "reconfigure", "reconfigure_file",
    "solve_milp", "state_to_net",
]
