"""The search: one YAML file in, the IoU-latency Pareto front out.

config -> search space -> plan -> (cost on the device, train, quality) -> records -> results.
Only this package knows every stage.
"""

from .confirm import ConfirmReport, confirm_study
from .lease import LeaseSettings, recover_stale_trials
from .loop import SearchSummary, run_search
from .sampler import SAMPLERS, make_sampler
from ..layout import StudyLayout
from .space import SearchSpace, build_search_space
from .study import StudyHandle, open_existing_study

__all__ = [
    "SAMPLERS",
    "ConfirmReport",
    "LeaseSettings",
    "SearchSpace",
    "SearchSummary",
    "StudyHandle",
    "StudyLayout",
    "build_search_space",
    "confirm_study",
    "make_sampler",
    "open_existing_study",
    "recover_stale_trials",
    "run_search",
]
