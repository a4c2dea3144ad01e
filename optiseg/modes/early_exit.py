"""Mode ``early_exit``: a network with side exits run on the device as a chain of stage graphs that stops early.

Deployment knob ``threshold``: an image leaves at the first exit whose
confidence (mean largest class probability, :data:`optiseg.exits.CONFIDENCES`
``max_prob``) reaches it, else at the final output. Every threshold of a
trained network is a plan of its own on the front; none costs a training.

Cost (before training): the untrained network's chain of stage graphs is
exported and **each stage graph and exit upsampling is timed on the device**;
the time to output k is the sum up to it. Which exit the images take is not
known before training, so the cost's ``latency_ms`` is the optimistic bound
(every image leaves at the first exit): a plan over ``max_latency_ms`` even
then is not trained. Quality (after training): the trained chain runs by
onnxruntime on every test image once per network (every output's confidence
and confusion kept in ``outputs-test.json``); the threshold's operating point
gives the IoU (the outputs the images left at, scored together) and the
expected latency ``sum_k share_k x ms_k``, which replaces the bound. The whole
curve is stored as the plan's operating points.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import write_json_atomic
from .._runners.tensor_codec import BITS, mask_nbytes
from ..devices import p90_of
from ..errors import UsageError
from ..layout import NetworkFolder, PlanFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation, OperatingPoint, tail_latency_ms
from . import register_mode
from ._base import Artifact, ModeContext
from ._common import MB, NOTHING_REMOTE, against_whole_network, keep_scores, read_json, timed, untrained_network

THRESHOLDS = (0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)  # a trained binary network is sure: 0.99..0.999 matter
CONFIDENCE = "max_prob"
CHAIN_FOLDER = "early_exit"
PER_IMAGE = "outputs-test.json"


def chain_folder(network_folder: NetworkFolder) -> PlanFolder:
    """The chain of one network (``untrained/`` timed before training, ``trained/`` deployed), shared by every threshold."""
    return network_folder.plan(CHAIN_FOLDER)


def threshold_folder(network_folder: NetworkFolder, plan: DeploymentPlan) -> PlanFolder:
    """Where one plan's scores live: ``early_exit-t<threshold>``, ``early_exit_split-t<threshold>-b<bits>``."""
    knobs = plan.knob_dict
    bits = f"-b{knobs['bits']}" if "bits" in knobs else ""
    return network_folder.plan(f"{plan.mode}-t{float(knobs['threshold']):g}{bits}")


def has_exits(network: Network) -> bool:
    from ..models import get_model_entry

    return "exits" in get_model_entry(network.model).knob_names and int(network.knob("exits")) > 0


class EarlyExitMode:
    name = "early_exit"
    family = "early_exit"
    description = "the network's chain of stage graphs on the device: an image leaves at the first sure exit"
    needs_server = False
    latency_is_one_model = False  # an expected time over the exits taken: no one graph to predict or time again
    knobs: Mapping[str, tuple[Any, ...]] = {"threshold": THRESHOLDS}

    def knob_values(self, network: Network) -> Mapping[str, tuple[Any, ...]] | None:
        """The thresholds; ``None`` for a network without exits (nothing to leave early from)."""
        return self.knobs if has_exits(network) else None

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        threshold = knobs.get("threshold", THRESHOLDS[0])
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise UsageError(f"threshold={threshold!r} is invalid: give a confidence in (0, 1], e.g. {THRESHOLDS[2]}")
        if not has_exits(network):
            raise UsageError(f"{network.describe()} has no exits, so it cannot leave early",
                             hint="open the knob exits, e.g. search_space: {exits: [0, 2]}")
        return DeploymentPlan(mode=self.name, networks=(network,), knobs=(("threshold", float(threshold)),))

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        from ..exits import chain_latency, export_exit_chain

        network = plan.network
        figures, _ = untrained_network(network, context)
        folder = chain_folder(context.network_folder).path / "untrained"
        chain = _load(folder)
        if chain is None:
            with timed(context, "export_s"):
                context.stage("exporting the exit chain (untrained, for timing)")
                chain = export_exit_chain(network.build(), network, folder)
        stages, upsamples = [], []
        for stage in chain.stages:
            stages.append(context.measure(stage.path, folder / f"stage{stage.index}-latency.json", f"{network.key}@exit-stage{stage.index}"))
            if stage.upsample is not None:
                upsamples.append(context.measure(stage.upsample, folder / f"exit{stage.index}-latency.json",
                                                 f"{network.key}@exit-upsample{stage.index}"))
        latency = chain_latency([float(r["median_ms"]) for r in stages], [float(r["median_ms"]) for r in upsamples])
        tail = chain_latency([p90_of(r) for r in stages], [p90_of(r) for r in upsamples])
        # The optimistic bound before training: every image leaves at the fastest output (mostly the first exit; a
        # slow upsampling can make a later one faster).
        optimistic, optimistic_p90 = min(latency.cumulative_ms), min(tail.cumulative_ms)
        onnx_mb = round(sum(p.stat().st_size for s in chain.stages for p in (s.path, s.upsample) if p is not None) / MB, 4)
        metrics = {
            **figures,
            "latency_ms": optimistic, "latency_p90_ms": optimistic_p90, "device_latency_ms": optimistic, **NOTHING_REMOTE,
            "onnx_mb": onnx_mb, "device_mb": round(onnx_mb + figures["activation_mb"], 3), "fps": 1000.0 / optimistic,
        }
        return Evaluation(metrics=metrics, details={
            "latency": stages[0],
            "exits": {"names": list(chain.exits), **latency.as_dict(), "stage_p90_ms": list(tail.stage_ms),
                      "cumulative_p90_ms": list(tail.cumulative_ms),
                      "cumulative_macs": list(chain.cumulative_macs),
                      "latency_is": "optimistic before training: every image leaves at the fastest output"},
        })

    def _tail_ms(self, exits: Mapping[str, Any]) -> list[float]:
        """The time to each output at the 90th percentile over runs (each part's p90, summed as split plans do; the
        medians for a plan costed before these were kept)."""
        return list(exits.get("cumulative_p90_ms") or exits["cumulative_ms"])

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation:
        from ..exits import operating_curve, sweep_thresholds

        network, threshold = plan.network, float(plan.knob_dict["threshold"])
        scores_file = threshold_folder(context.network_folder, plan).quality
        stored = read_json(scores_file)
        if stored is not None:
            return Evaluation.from_dict(stored)
        chain = self._trained_chain(network, context)
        per_image, cumulative_ms = self._inputs(chain, network, context, cost, self._per_image(chain, network, context))
        exits = cost.details["exits"]
        scoring = {"class_names": tuple(context.dataset.class_names), "binary": context.dataset.binary,
                   "confidence": CONFIDENCE, "cumulative_macs": chain.cumulative_macs}
        point, = operating_curve(per_image, cumulative_ms, [threshold], **scoring)
        curve = operating_curve(per_image, cumulative_ms, sweep_thresholds(per_image, CONFIDENCE), **scoring)
        evaluation = cost.merged(
            metrics={"iou": point.iou, "val_iou": trained.metrics.get("val_iou"), "latency_ms": point.expected_ms,
                     "latency_p90_ms": tail_latency_ms(self._tail_ms(exits), point.shares),
                     "device_latency_ms": point.expected_ms, "fps": 1000.0 / point.expected_ms,
                     "macs": int(round(point.expected_macs)), **self._expected(point, point.shares, exits)},
            per_class_iou={},
            operating_points=tuple(
                OperatingPoint("threshold", p.threshold, {"iou": p.iou, "latency_ms": p.expected_ms,
                                                          "latency_p90_ms": tail_latency_ms(self._tail_ms(exits), p.shares),
                                                          "macs": p.expected_macs,
                                                          **{f"share_{n}": s for n, s in zip(chain.exits, p.shares)}})
                for p in curve if not math.isinf(p.threshold) and p.iou is not None),
            details={
                "exits": {**exits, "cumulative_ms": list(cumulative_ms), "threshold": threshold, "confidence": CONFIDENCE,
                          "shares": dict(zip(chain.exits, point.shares)), "whole_network_macs": cost.get("macs"),
                          "latency_is": "expected over the test split: the share leaving at each output x the time to it"},
                "iou_source": f"the trained stage graphs run by onnxruntime on the test split, each image leaving at the "
                              f"first exit with {CONFIDENCE} >= {threshold:g}",
                **against_whole_network(point.iou, trained),
            },
        )
        return keep_scores(scores_file, evaluation)

    def _inputs(self, chain, network: Network, context: ModeContext, cost: Evaluation, per_image):
        """What the curve is computed from: every image through every output, and the time to each output."""
        from ..exits import chain_latency

        exits = cost.details["exits"]
        return per_image, tuple(chain_latency(exits["stage_ms"], exits["upsample_ms"]).cumulative_ms)

    def _expected(self, point, shares, exits: Mapping[str, Any]) -> dict[str, float]:
        """Figures beyond IoU and latency that depend on where the images leave (none: everything on the device)."""
        return {}

    def _trained_chain(self, network: Network, context: ModeContext):
        from ..checkpoint import load_checkpoint, model_from_checkpoint
        from ..exits import export_exit_chain

        folder = chain_folder(context.network_folder).path / "trained"
        chain = _load(folder)
        if chain is None:
            with timed(context, "export_s"):
                context.stage("exporting the trained exit chain")
                model = model_from_checkpoint(load_checkpoint(context.network_folder.best_checkpoint))
                chain = export_exit_chain(model, network, folder)
        return chain

    def _per_image(self, chain, network: Network, context: ModeContext):
        """Every test image's exit confidences and output confusions: computed once per network, then read back."""
        from ..exits import ImageExits, exit_outputs

        path = chain.folder.parent / PER_IMAGE
        stored = read_json(path)
        if stored is not None and stored.get("chain") == str(chain.max_abs_diff):
            return [ImageExits(confidences={k: tuple(v) for k, v in image["confidences"].items()},
                               confusions=tuple(np.asarray(m, dtype=np.int64) for m in image["confusions"]))
                    for image in stored["images"]]
        with timed(context, "score_s"):
            context.stage("running the trained exit chain on the test split")
            dataset = context.dataset
            per_image = exit_outputs(chain, context.cache.resized("test", network.resolution), context.cache.original_masks("test"),
                                     num_classes=len(dataset.class_names), in_channels=network.in_channels)
        write_json_atomic(path, {"chain": str(chain.max_abs_diff), "images": [
            {"confidences": {k: list(v) for k, v in image.confidences.items()},
             "confusions": [m.tolist() for m in image.confusions]} for image in per_image]})
        return per_image

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        folder = chain_folder(network_folder).path / "trained"
        chain = _load(folder)
        if chain is None:
            return [Artifact(folder / "exits.json", "exits.json", "the chain's manifest")]  # deploy reports it missing
        files = [Artifact(stage.path, stage.path.name, f"stage {stage.index} of the chain: gives {stage.exit}"
                          + ("" if stage.index == 1 else ", from the features of the stage before"))
                 for stage in chain.stages]
        files += [Artifact(stage.upsample, stage.upsample.name, f"resizes {stage.exit}'s logits to the input size")
                  for stage in chain.stages if stage.upsample is not None]
        files.append(Artifact(folder / "exits.json", "exits.json", "the chain (stages, inputs, outputs), the policy and its operating curve"))
        files.append(Artifact(Path(str(resources.files("optiseg._runners").joinpath("early_exit.py"))), "early_exit.py",
                              "runs the exit policy on the device: the stages one by one, leaving at the first sure exit"))
        return files

    def deploy_readme(self, record: Any, out: Path, files: Mapping[str, str]) -> list[Path]:
        """``exits.json`` (the chain's manifest, the plan's threshold and the operating curve) and a README."""
        from ..exits import ExitChain, load_exit_chain, write_exit_deployment
        from ..exits import OperatingPoint as CurvePoint
        chain: ExitChain = load_exit_chain(out)  # the manifest and stage graphs just shipped
        exits = dict(record.evaluation.details.get("exits") or {})
        names = chain.exits
        curve = [CurvePoint(threshold=p.value, iou=p.metrics.get("iou"), expected_ms=p.metrics["latency_ms"],
                            expected_macs=p.metrics.get("macs", 0.0),
                            shares=tuple(p.metrics.get(f"share_{n}", 0.0) for n in names))
                 for p in record.evaluation.operating_points]
        threshold = float(exits.get("threshold", THRESHOLDS[0]))
        written = write_exit_deployment(chain, curve, out, threshold=threshold, confidence=CONFIDENCE,
                                        latency={k: exits.get(k) for k in ("stage_ms", "upsample_ms", "cumulative_ms")})
        manifest = next(p for p in written if p.name == "exits.json")
        remote = exits.get("remote")
        if remote:  # the last stage runs on the server: the device script sends what it reads at the plan's bits
            content = json.loads(manifest.read_text(encoding="utf-8"))
            content["policy"].update({"bits": remote["bits"], "last_stage": "server", "crossing": remote["tensors"]})
            write_json_atomic(manifest, content)
        shares = ", ".join(f"{share:.0%} at {name}" for name, share in (exits.get("shares") or {}).items())
        table = "\n".join(f"| `{name}` | {text} |" for name, text in files.items())
        metrics = record.evaluation.metrics
        readme = out / "README.md"
        readme.write_text(f"""# {record.model} with early exits, from optiseg trial {record.number}: threshold {threshold:g}

The device runs the chain's stage graphs one after the other and stops at the first exit whose
confidence ({CONFIDENCE}: the mean largest class probability) reaches {threshold:g}.

| file | what it is |
|---|---|
{table}
| `predict.py` | preprocessing shared by the scripts |

| | |
|---|---|
| plan | `{record.plan_key}` |
| test IoU | {record.iou:.4f} (the stage graphs run by onnxruntime on the test split; whole network {_fmt(record.evaluation.details.get('whole_network_iou'))}) |
| expected latency | {metrics.get('latency_ms', float('nan')):.3f} ms on the test split ({shares}) |
| time to each output | {', '.join(f'{n} {ms:.3f} ms' for n, ms in zip(names, exits.get('cumulative_ms') or ()))} |

## Run it

```bash
pip install onnxruntime numpy pillow
python3 early_exit.py . image.jpg -o masks/               # the plan's threshold
python3 early_exit.py . image.jpg --threshold 0.99         # another point of the curve in exits.json
```

It prints one JSON line per image: the exit it left at, its confidence and the time taken.
{_server_text(exits.get("remote"), chain)}""", encoding="utf-8")
        return [manifest, readme]

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path | None:
        """None: the latency is an expectation over the exits the test images take, not one graph to time again."""
        return None


class EarlyExitSplitMode(EarlyExitMode):
    """The exits on the device, the last stage on the server: an image no exit is sure of sends what the last stage
    reads (encoded at ``bits``, as split plans send what crosses their cut) and gets its class map back."""

    name = "early_exit_split"
    family = "early_exit_split"
    description = "the exits on the device; an image no exit is sure of goes on to the last stage on the server"
    needs_server = True
    knobs: Mapping[str, tuple[Any, ...]] = {"threshold": THRESHOLDS, "bits": BITS}

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        bits = knobs.get("bits", 8)
        if isinstance(bits, bool) or bits not in BITS:
            raise UsageError(f"bits={bits!r} is invalid: choose one of {', '.join(map(str, BITS))}")
        plan = super().plan(network, knobs)
        return DeploymentPlan(mode=self.name, networks=plan.networks, knobs=(("bits", int(bits)), *plan.knobs),
                              placement=(("exits", "device"), ("last stage", "server")))

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        from ..devices import CodecStep
        from ..exits import load_exit_chain

        if context.link is None or context.measure_server is None:
            raise UsageError("an early_exit_split plan needs a server and a link: add `server:` and `link:` to the study config")
        base = super().cost(plan, context)
        network, bits = plan.network, int(plan.knob_dict["bits"])
        folder = chain_folder(context.network_folder).path / "untrained"
        chain = load_exit_chain(folder)
        last = chain.stages[-1]
        crossing = folder / "crossing.onnx"
        if not crossing.is_file():
            write_crossing_graph(last.path, crossing)
        encode = context.measure(crossing, folder / f"crossing-latency+encode{bits}.json",
                                 f"{network.key}@exit-crossing+encode{bits}", codec=CodecStep("encode", bits))
        server = context.measure_server(last.path, folder / f"stage{last.index}-server-latency+decode{bits}.json",
                                        f"{network.key}@exit-stage{last.index}+decode{bits}", codec=CodecStep("decode", bits))
        frame_bytes, mask_bytes = crossing_frame_bytes(last.path, bits), mask_nbytes(*network.resolution)
        exits = base.details["exits"]
        device_ms = sum(exits["stage_ms"][:-1]) + float(encode["median_ms"])
        remote = {
            "bits": bits, "frame_bytes": frame_bytes, "mask_bytes": mask_bytes, "tensors": list(last.inputs),
            "device_ms": device_ms, "encode_ms": float(encode["median_ms"]), "server_ms": float(server["median_ms"]),
            "upload_ms": context.link.upload_ms(frame_bytes), "download_ms": context.link.download_ms(mask_bytes),
            "link": context.link.model_dump(mode="json"),
            "placement": {"exits": context.device_label, "last stage": context.server_label},
        }
        link_ms = remote["upload_ms"] + remote["download_ms"]
        remote["ms"] = device_ms + remote["server_ms"] + link_ms
        stage_p90 = exits.get("stage_p90_ms") or exits["stage_ms"]
        remote["p90_ms"] = sum(stage_p90[:-1]) + p90_of(encode) + p90_of(server) + link_ms
        onnx_mb = round(base.metrics["onnx_mb"] - last.path.stat().st_size / MB, 4)  # the last stage is the server's
        # The optimistic bound before training: every image takes the fastest path, an exit or the remote one (a fast
        # link and server can beat an exit's upsampling).
        exit_ms, exit_p90 = exits["cumulative_ms"][:-1], self._tail_ms(exits)[:-1]
        optimistic, optimistic_p90 = min(*exit_ms, remote["ms"]), min(*exit_p90, remote["p90_ms"])
        return base.merged(metrics={"onnx_mb": onnx_mb, "device_mb": round(onnx_mb + base.metrics["activation_mb"], 3),
                                    "latency_ms": optimistic, "latency_p90_ms": optimistic_p90,
                                    "device_latency_ms": min(*exit_ms, device_ms), "fps": 1000.0 / optimistic},
                           details={"exits": {**exits, "remote": remote, "cumulative_p90_ms": [*exit_p90, remote["p90_ms"]],
                                              "latency_is": "optimistic before training: every image takes the fastest "
                                                            "path, an exit or the remote one"},
                                    "server_latency": server, "encode_latency": encode})

    def _tail_ms(self, exits: Mapping[str, Any]) -> list[float]:
        """As the device-only chain's, with the remote path's p90 as the last output's once it is known."""
        times = super()._tail_ms(exits)
        remote = exits.get("remote")
        return [*times[:-1], remote.get("p90_ms", remote["ms"])] if remote else times

    def _expected(self, point, shares, exits: Mapping[str, Any]) -> dict[str, float]:
        remote, sent = exits["remote"], shares[-1]
        device = sum(share * ms for share, ms in zip(shares[:-1], exits["cumulative_ms"][:-1])) + sent * remote["device_ms"]
        link_bytes = sent * remote["frame_bytes"]
        fps = 1000.0 / point.expected_ms
        return {"device_latency_ms": device, "server_latency_ms": sent * remote["server_ms"],
                "link_ms": sent * (remote["upload_ms"] + remote["download_ms"]), "link_bytes": link_bytes,
                "uplink_mbps": link_bytes * 8 * fps / 1e6}

    def _inputs(self, chain, network: Network, context: ModeContext, cost: Evaluation, per_image):
        """The curve's inputs with the last output on the server: its confusions through the codec, its time the remote path's."""
        from ..exits import ImageExits

        exits = cost.details["exits"]
        finals = self._remote_finals(chain, network, context, int(exits["remote"]["bits"]))
        per_image = [ImageExits(confidences=image.confidences, confusions=(*image.confusions[:-1], final))
                     for image, final in zip(per_image, finals)]
        return per_image, (*exits["cumulative_ms"][:-1], exits["remote"]["ms"])

    def _remote_finals(self, chain, network: Network, context: ModeContext, bits: int):
        from ..exits.collect import remote_final_confusions

        path = chain.folder.parent / f"finals-test-b{bits}.json"
        stored = read_json(path)
        if stored is not None and stored.get("chain") == str(chain.max_abs_diff):
            return [np.asarray(m, dtype=np.int64) for m in stored["confusions"]]
        with timed(context, "score_s"):
            context.stage(f"running the last stage on the test split, {bits} bits on the link")
            finals = remote_final_confusions(chain, context.cache.resized("test", network.resolution),
                                             context.cache.original_masks("test"), bits=bits,
                                             num_classes=len(context.dataset.class_names), in_channels=network.in_channels)
        write_json_atomic(path, {"chain": str(chain.max_abs_diff), "confusions": [m.tolist() for m in finals]})
        return finals

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        runners = resources.files("optiseg._runners")
        return [*super().artifacts(plan, network_folder), *(
            Artifact(Path(str(runners.joinpath(name))), name, text) for name, text in (
                ("split_server.py", "runs the last stage on the server: `python3 split_server.py stageN.onnx`"),
                ("tensor_codec.py", "the tensor format on the link (both sides import it)")))]


def write_crossing_graph(last_stage: Path, out: Path) -> Path:
    """An ONNX graph that passes on what ``last_stage`` reads (Identity per tensor): timed with the link's encoding,
    it gives the device's cost of sending those tensors."""
    import onnx
    from onnx import helper

    from ..export import DEFAULT_OPSET

    inputs = onnx.load(str(last_stage), load_external_data=False).graph.input
    nodes = [helper.make_node("Identity", [i.name], [f"{i.name}_sent"]) for i in inputs]
    outputs = [helper.make_tensor_value_info(f"{i.name}_sent", i.type.tensor_type.elem_type,
                                             [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in inputs]
    graph = helper.make_graph(nodes, "crossing", list(inputs), outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", DEFAULT_OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    onnx.save(model, str(partial))
    partial.replace(out)  # a killed run leaves no torn graph to measure forever
    return out


def crossing_frame_bytes(last_stage: Path, bits: int) -> int:
    """The bytes of one frame of what ``last_stage`` reads at ``bits`` (the payload's size does not depend on the values)."""
    import onnx

    from .._runners import tensor_codec

    inputs = onnx.load(str(last_stage), load_external_data=False).graph.input
    rng = np.random.default_rng(0)
    tensors = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32) for i in inputs}
    return len(tensor_codec.encode_frame(tensors, bits))


def _load(folder: Path):
    """The chain exported into ``folder``, or None when there is none (or a torn one from a killed run)."""
    from ..exits import load_exit_chain

    if not (folder / "exits.json").is_file():
        return None
    try:
        chain = load_exit_chain(folder)
    except Exception:  # noqa: BLE001  (a half-written chain is exported again)
        return None
    return chain if all(s.path.is_file() and (s.upsample is None or s.upsample.is_file()) for s in chain.stages) else None


def _server_text(remote: Mapping[str, Any] | None, chain) -> str:
    if not remote:
        return ""
    last = chain.stages[-1].path.name
    return f"""
## The last stage on the server

This plan runs the exits on the device and `{last}` on the server: an image no exit is sure of
sends what `{last}` reads ({', '.join(f'`{t}`' for t in remote['tensors'])}: {remote['frame_bytes']:,} bytes per frame at
{remote['bits']} bits) and gets its class map back ({remote['mask_bytes']:,} bytes).

```bash
python3 split_server.py {last} --host 0.0.0.0 --port 5555                 # on the server
python3 early_exit.py . image.jpg --server SERVER:5555 --bits {remote['bits']}       # on the device
```

The link is not encrypted: run it inside a trusted network or a tunnel (`ssh -L 5555:localhost:5555 server`).
"""


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


register_mode(EarlyExitMode())
register_mode(EarlyExitSplitMode())
