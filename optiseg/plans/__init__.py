"""What is deployed and what it scored.

* :class:`DeploymentPlan`: a deployment mode, the network(s) it uses, its
  deployment knobs (precision, ...) and where each part runs; one key.
* :class:`Evaluation`: the named metrics a plan scored (:data:`METRICS` lists
  every name, its unit and its direction), plus optional operating points.

Both are plain frozen values, JSON round-trippable; :mod:`optiseg.records` is
the one module that stores them in a study.
"""

from ._evaluation import METRICS, Evaluation, Metric, OperatingPoint, get_metric, tail_latency_ms
from ._plan import DEFAULT_DEPLOYMENT, DEPLOYMENT_KNOBS, DeploymentPlan

__all__ = ["DEFAULT_DEPLOYMENT", "DEPLOYMENT_KNOBS", "METRICS", "DeploymentPlan", "Evaluation", "Metric", "OperatingPoint", "get_metric",
           "tail_latency_ms"]
