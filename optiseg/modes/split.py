"""Mode ``split``: the network cut in two, the head on the device and the tail on the server.

Deployment knobs (each (cut, bits) plan of a trained network is a point of its
own, none costs a training):

* ``cut``: where the network is cut, a cut point the model declares
  (:func:`optiseg.split.cut_points`, e.g. ``bottlenecks1``), or ``server``
  (everything on the server: the image crosses);
* ``bits``: bits per value of the tensors that cross (32 float32, 16 float16,
  8 or 4 uniform affine quantization; :mod:`optiseg._runners.tensor_codec`).

Cost (before training): the untrained network's head and tail are exported;
the head is timed **on the device** with the encoding of what crosses in each
run, the tail **on the server** with the decoding in each run; the frame's
bytes come from that encoding. The link adds ``link.upload_ms(frame)`` and
``link.download_ms(mask)``: end to end = head + upload + tail + download.
Quality (after training): the trained head and tail run by onnxruntime on the
test split, every frame encoded and decoded at ``bits`` in between, so the
loss at 4 bits is measured.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .._runners.tensor_codec import BITS, mask_nbytes
from ..devices import CodecStep
from ..errors import UsageError
from ..layout import NetworkFolder, PlanFolder
from ..network import Network
from ..plans import DeploymentPlan, Evaluation
from ..split.timing import SplitTiming
from . import register_mode
from ._base import Artifact, ModeContext
from ._common import MB, against_whole_network, keep_scores, read_json, timed

DEFAULT_BITS = 8


def plan_folder(network_folder: NetworkFolder, cut: str) -> PlanFolder:
    """Where the head, the tail and their latencies of one cut live (shared by every ``bits``)."""
    return network_folder.plan(f"split-{cut}")


def quality_folder(network_folder: NetworkFolder, cut: str, bits: int) -> PlanFolder:
    return network_folder.plan(f"split-{cut}-b{bits}")


@functools.lru_cache(maxsize=256)
def _cut_names(model: str, knobs: tuple) -> tuple[str, ...]:
    """Cut names depend on the architecture knobs only (a module left out has no cut after it), not on the input."""
    from ..split import cut_names

    return tuple(cut_names(Network.create(model, dict(knobs), 64)))


class SplitMode:
    name = "split"
    family = "split"
    description = "the network cut in two: its head on the device, its tail on the server, what crosses sent over the link"
    needs_server = True
    latency_is_one_model = False  # head + link + tail: no one graph's latency, so no latency model, no confirmation rounds
    knobs: Mapping[str, tuple[Any, ...]] = {"cut": (), "bits": BITS}  # cut: the network's own cut points, or "server"

    def plan(self, network: Network, knobs: Mapping[str, Any]) -> DeploymentPlan:
        from ..split import SERVER

        bits = knobs.get("bits", DEFAULT_BITS)
        if isinstance(bits, bool) or bits not in BITS:
            raise UsageError(f"bits={bits!r} is invalid: choose one of {', '.join(map(str, BITS))}")
        return DeploymentPlan(mode=self.name, networks=(network,), knobs=(("bits", int(bits)), ("cut", str(knobs.get("cut", SERVER)))),
                              placement=(("head", "device"), ("tail", "server")))

    def knob_values(self, network: Network) -> Mapping[str, tuple[Any, ...]]:
        """``cut``: ``server``, then the network's cut points in order; ``bits``: 32, 16, 8, 4."""
        return {"cut": _cut_names(network.model, network.knobs), "bits": BITS}

    def cost(self, plan: DeploymentPlan, context: ModeContext) -> Evaluation:
        from ..profile import profile_model
        from ..split import export_split, find_cut, plan_cuts, split_model

        if context.link is None or context.measure_server is None:
            raise UsageError("a split plan needs a server and a link: add `server:` and `link:` to the study config")
        network, bits, cut_name = plan.network, int(plan.knob_dict["bits"]), str(plan.knob_dict["cut"])
        with timed(context, "profile_s"):
            context.stage("building")
            model = network.build()
            whole = profile_model(model, network.input_shape)
            cut = find_cut(plan_cuts(network, model), cut_name)
            head_module, _ = split_model(model, network, cut)
            head = profile_model(head_module, network.input_shape)
        folder = plan_folder(context.network_folder, cut.after)
        head_file, tail_file = folder.part("head", trained=False), folder.part("tail", trained=False)
        if not (head_file.is_file() and tail_file.is_file()):
            with timed(context, "export_s"):
                context.stage(f"exporting the head and the tail (cut after {cut.after})")
                folder.path.mkdir(parents=True, exist_ok=True)
                export_split(model, network, cut, head_file, tail_file)
        encode, decode = CodecStep("encode", bits), CodecStep("decode", bits)
        head_latency = context.measure(head_file, folder.part_latency("head", encode.suffix),
                                       f"{network.key}@head-{cut.after}{encode.suffix}", codec=encode)
        tail_latency = context.measure_server(tail_file, folder.part_latency("tail", decode.suffix),
                                              f"{network.key}@tail-{cut.after}{decode.suffix}", codec=decode)
        timing = SplitTiming.of(head_latency, tail_latency, context.link, mask_nbytes(*network.resolution))
        onnx_mb = round(head_file.stat().st_size / MB, 4)
        metrics = {
            "params": whole.params, "macs": whole.macs, "activation_mb": round(whole.activation_mb, 3),
            **timing.metrics(), "onnx_mb": onnx_mb,
            "device_mb": round(onnx_mb + head.activation_mb, 3),  # the head's file (its weights) and activations
        }
        split = {
            "cut": cut.after, "bits": bits, "frame_bytes": timing.frame_bytes, "mask_bytes": timing.mask_bytes,
            "tensors": [{"name": t.name, "shape": list(t.shape), "skip": t.skip, "produced_by": t.produced_by} for t in cut.tensors],
            "values": cut.values, "device_macs": head.macs, "device_params": head.params,
            "server_macs": whole.macs - head.macs,
            "upload_ms": timing.upload_ms, "download_ms": timing.download_ms, "link": context.link.model_dump(mode="json"),
            "placement": {"head": context.device_label, "tail": context.server_label},
        }
        return Evaluation(metrics=metrics, details={"latency": head_latency, "server_latency": tail_latency, "split": split})

    def quality(self, plan: DeploymentPlan, trained: Any, context: ModeContext, cost: Evaluation) -> Evaluation:
        from ..checkpoint import load_checkpoint, model_from_checkpoint
        from ..split import export_split, find_cut, iou_with_codec, plan_cuts

        network, bits, cut_name = plan.network, int(plan.knob_dict["bits"]), str(plan.knob_dict["cut"])
        scores_file = quality_folder(context.network_folder, cut_name, bits).quality
        stored = read_json(scores_file)
        if stored is not None:
            return Evaluation.from_dict(stored)
        folder = plan_folder(context.network_folder, cut_name)
        head_file, tail_file = folder.part("head"), folder.part("tail")
        if not (head_file.is_file() and tail_file.is_file()):
            with timed(context, "export_s"):
                context.stage(f"exporting the trained head and tail (cut after {cut_name})")
                model = model_from_checkpoint(load_checkpoint(context.network_folder.best_checkpoint))
                export_split(model, network, find_cut(plan_cuts(network, model), cut_name), head_file, tail_file)
        with timed(context, "score_s"):
            context.stage(f"scoring head and tail on the test split, {bits} bits on the link")
            dataset = context.dataset
            scores = iou_with_codec(
                head_file, tail_file, context.cache.resized("test", network.resolution), context.cache.original_masks("test"),
                bits=bits, class_names=tuple(dataset.class_names), binary=dataset.binary, in_channels=network.in_channels,
            )
        evaluation = cost.merged(
            metrics={"iou": scores.primary_iou, "miou": scores.mean_iou, "val_iou": trained.metrics.get("val_iou")},
            per_class_iou={k: v for k, v in zip(scores.class_names, scores.iou) if v is not None},
            details={
                "iou_source": f"the trained head and tail run by onnxruntime on the test split, what crosses encoded "
                              f"and decoded at {bits} bits in between",
                **against_whole_network(scores.primary_iou, trained),
            },
        )
        return keep_scores(scores_file, evaluation)

    def artifacts(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> list[Artifact]:
        folder = plan_folder(network_folder, str(plan.knob_dict["cut"]))
        runners = resources.files("optiseg._runners")
        return [
            Artifact(folder.part("head"), "head.onnx", "the device's part: image in, the tensors that cross the cut out"),
            Artifact(folder.part("tail"), "tail.onnx", "the server's part: the crossing tensors in, logits out"),
            Artifact(Path(str(runners.joinpath("split_device.py"))), "split_device.py",
                     "runs the head on each image, sends what crosses, receives the mask (device side)"),
            Artifact(Path(str(runners.joinpath("split_server.py"))), "split_server.py",
                     "receives each frame, runs the tail, sends the mask back (server side)"),
            Artifact(Path(str(runners.joinpath("tensor_codec.py"))), "tensor_codec.py",
                     "the tensor format on the link (both sides import it)"),
        ]

    def deploy_readme(self, record: Any, out: Path, files: Mapping[str, str]) -> list[Path]:
        """``split.json`` (cut, bits, what crosses, the measured parts) and a README for the two scripts."""
        import json

        split = dict(record.evaluation.details.get("split") or {})
        metrics = record.evaluation.metrics
        plan_file = out / "split.json"
        plan_file.write_text(json.dumps({**split, "trial": record.number, "plan": record.plan_key,
                                         "metrics": dict(metrics)}, indent=2, default=str) + "\n", encoding="utf-8")
        crossing = "\n".join(
            f"| `{t['name']}` | {'x'.join(map(str, t['shape']))} | {'skip connection' if t['skip'] else 'main path'} |"
            for t in split.get("tensors", ()))
        table = "\n".join(f"| `{name}` | {text} |" for name, text in files.items())
        placement = split.get("placement") or {}
        link = split.get("link") or {}

        def ms(name: str) -> str:
            value = metrics.get(name)
            return "n/a" if value is None else f"{value:.2f} ms"

        text = f"""# A split {record.model} from optiseg trial {record.number}: cut after `{split.get('cut')}`, {split.get('bits')} bits

The device runs the head, sends the tensors that cross the cut to the server, and gets the mask back.

| file | what it is |
|---|---|
{table}
| `split.json` | the plan: cut, bits, the crossing tensors, the measured figures |
| `predict.py` | preprocessing shared by the scripts (and a whole-network predictor) |

| | |
|---|---|
| plan | `{record.plan_key}` |
| test IoU | {record.iou:.4f} (measured with the head and tail run by onnxruntime, {split.get('bits')} bits on the link) |
| end to end | {ms('latency_ms')} = head {ms('device_latency_ms')} on {placement.get('head', 'the device')} + link {ms('link_ms')} + tail {ms('server_latency_ms')} on {placement.get('tail', 'the server')} |
| link | {split.get('frame_bytes', 0):,} bytes up per frame, {split.get('mask_bytes', 0):,} down; measured for {link.get('uplink_mbps', '?')} Mbit/s up, {link.get('downlink_mbps', '?')} down, RTT {link.get('rtt_ms', '?')} ms |

What crosses the cut (float32 before encoding, batch of one):

| tensor | shape | role |
|---|---|---|
{crossing}

## Run it

```bash
pip install onnxruntime numpy pillow                              # on both machines
python3 split_server.py tail.onnx --host 0.0.0.0 --port 5555      # on the server
python3 split_device.py head.onnx image.jpg --server SERVER:5555 -o masks/   # on the device
```

`split_device.py` prints one JSON line per image (head, encoding and round-trip times, bytes sent);
`--bits` overrides the plan's {split.get('bits')} bits (the IoU above holds for those). The frame format is
`tensor_codec.py`: a JSON header (names, shapes, scales) and the packed values, length-prefixed on the socket;
the answer is the mask, one class index per pixel at the network's input size. The link is not encrypted: run
it inside a trusted network or a tunnel (`ssh -L 5555:localhost:5555 server`).
"""
        readme = out / "README.md"
        readme.write_text(text, encoding="utf-8")
        return [plan_file, readme]

    def timed_model(self, plan: DeploymentPlan, network_folder: NetworkFolder) -> Path | None:
        """None: a split plan's latency is two graphs and a link, measured by ``cost``, not one file to time again."""
        return None


register_mode(SplitMode())
