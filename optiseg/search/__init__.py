"""The search: one YAML file in, the IoU-latency Pareto front out.

config -> search space -> trial (build, export, measure, train) -> results.
Only this package knows every stage.
"""

from .lease import LeaseSettings, recover_stale_trials
from .loop import SearchSummary, run_search
from .sampler import SAMPLERS, make_sampler
from .space import Candidate, SearchSpace, build_search_space
from .study import StudyHandle, StudyPaths, open_existing_study

__all__ = [
    "SAMPLERS",
    "Candidate",
    "LeaseSettings",
    "SearchSpace",
    "SearchSummary",
    "StudyHandle",
    "StudyPaths",
    "build_search_space",
    "make_sampler",
    "open_existing_study",
    "recover_stale_trials",
    "run_search",
]
