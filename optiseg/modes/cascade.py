"""Mode ``cascade``: a small network and a router on the device, hard images sent to a large network on a server.

A cascade plan is **derived**: it pairs two networks the study has already
trained (the fastest on the front as the small one, the best IoU as the large
one), so the sampler never proposes one and it costs no training. When a
study's ``mode:`` lists ``cascade``, the search builds the cascade of that pair
once its trials are done (:func:`optiseg.search.derived.add_cascade_plans`:
per-image scores, the router trained on images the small network never trained
on, the device graph timed on the device, the large network on the server) and
stores each threshold of the router's operating curve as a trial of its own, on
the same front as every other plan. Deployment knob: ``threshold`` (the router
sends an image when its predicted score for the small network is below it).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import StudyError, UsageError
from ..layout import NetworkFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation
from . import register_mode
from ._base import Artifact, ModeContext

CURVE = "curve.json"


class CascadeMode:
    name = "cascade"
    family = "cascade"
    description = "a small network and a router on the device, the images it deems hard sent to a large network on the server"
    needs_server = True
    latency_is_one_model = False
    derived = True  # its plans are made from trained networks after the search, never sampled
    knobs: Mapping[str, tuple[Any, ...]] = {}  # its threshold comes from each pair's operating curve

    def knob_values(self, network: Network) -> None:
        """None: one network is no cascade; plans come from :meth:`pair_plan`."""
        return None

    def pair_plan(self, small: Network, large: Network, threshold: float) -> DeploymentPlan:
        """The plan of one threshold, kept exact (``repr``): the curve's thresholds sit between two images' router scores,
        and a rounded one could send an image more or less than the figures say (and two could share a key)."""
        return DeploymentPlan(mode=self.name, networks=(small, large), knobs=(("threshold", repr(float(threshold))),),
                              placement=(("small", "device"), ("router", "device"), ("large", "server")))

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        raise UsageError("a cascade pairs two trained networks: its plans are made after the search (mode: [..., cascade]) "
                         "or by `optiseg cascade STUDY`")

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        raise StudyError("cascade plans are derived from trained networks, not evaluated as trials")

    quality = cost

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        """``network_folder`` is the cascade's folder (``cascades/<small>+<large>``, wherever the study folder is now): its
        device graph, the large model, and the curve the plan's threshold was stored from."""
        from ..cascade import find_cascade_result

        threshold = float(plan.knob_dict["threshold"])
        result = find_cascade_result(network_folder.path, threshold)
        if result is None:
            raise StudyError(
                f"the curve this cascade plan (threshold {threshold!r}) was stored from is not in {network_folder.path / CURVE}",
                hint="run the search again on this study (it rebuilds the study's cascade and reuses every part made), "
                     "or deploy a cascade of your own choice with `optiseg cascade STUDY --deploy DIR`",
            )
        runners = resources.files("optiseg._runners")
        return [
            Artifact(result.device_model, "device.onnx", "the small network and its router, one graph (device)"),
            Artifact(result.large.onnx, "server.onnx", "the large network (server)"),
            Artifact(result.curve_file, CURVE, "the operating curve the plan is a point of (every router's, the references)"),
            *(Artifact(Path(str(runners.joinpath(name))), name, text) for name, text in (
                ("cascade_device.py", "routes each image: the small network's mask, or the large one's from the server"),
                ("cascade_server.py", "runs the large network on the images the device sends"),
                ("tensor_codec.py", "the frame format on the socket (both sides import it)"))),
        ]

    def deploy_readme(self, record: Any, out: Path, files: Mapping[str, str]) -> list[Path]:
        """The threshold table, an example policy and the README, with the plan's threshold as the default."""
        from ..cascade import read_cascade_result, write_cascade_files

        result = read_cascade_result(out / CURVE)  # the curve just shipped beside the models
        written = write_cascade_files(result, out, threshold=float(record.plan.knob_dict["threshold"]))
        return [p for p in written if p.name not in files]

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path | None:
        """None: the latency is the device graph plus the expected share of link and server time, not one graph."""
        return None


register_mode(CascadeMode())
