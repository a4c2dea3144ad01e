"""A cascade as a folder to copy to the device and the server: models, scripts, the threshold table, a policy, a README."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from .._atomic import write_json_atomic, write_text_atomic
from ..errors import UsageError
from ._build import CURVE, CascadeResult
from ._curve import CurvePoint, best_within
from ._device_graph import TARGET_WORDS

SCRIPTS = ("cascade_device.py", "cascade_server.py", "tensor_codec.py")
DEFAULT_MAX_LOSS = 0.03


def default_threshold(result: CascadeResult, max_loss: float = DEFAULT_MAX_LOSS) -> float:
    """The threshold of the fastest point (expected latency) that loses at most ``max_loss`` IoU against the large network alone.

    Without such a point, the threshold of the point with the highest IoU.
    """
    large_iou = result.references["large"].iou
    chosen = best_within(result.points, large_iou, max_loss, key="latency_ms") if large_iou is not None else None
    if chosen is None:
        chosen = max(result.points, key=lambda p: (p.iou or 0.0, -p.latency_ms))
    return float(chosen.threshold)


def write_cascade_deployment(result: CascadeResult, out_dir: str | Path, *, threshold: float | None = None,
                             max_loss: float = DEFAULT_MAX_LOSS) -> list[Path]:
    """Write the cascade into ``out_dir``; returns the files written.

    ``device.onnx`` (the small network with its router), ``server.onnx`` (the large network),
    ``thresholds.json`` (every operating point: threshold -> share sent, IoU, latencies, bytes;
    ``default_threshold`` is ``threshold`` or :func:`default_threshold`), ``policy.json`` (an
    example policy), the device and server scripts with the tensor codec they share, and README.md.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file, not a folder", hint="give a folder to write the deployment into")
    for path, what in ((result.device_model, "the device graph"), (result.large.onnx, "the large network's model")):
        if not Path(path).is_file():
            raise UsageError(f"{what} is not at {path}", hint="build the cascade again on this machine (optiseg cascade)")
    out.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copyfile(result.device_model, out / "device.onnx")),
               Path(shutil.copyfile(result.large.onnx, out / "server.onnx"))]
    return written + write_cascade_files(result, out, threshold=threshold, max_loss=max_loss)


def write_cascade_files(result: CascadeResult, out_dir: str | Path, *, threshold: float | None = None,
                        max_loss: float = DEFAULT_MAX_LOSS) -> list[Path]:
    """Everything of :func:`write_cascade_deployment` but the two models (for a folder that has them already, e.g.
    ``optiseg deploy``'s): the threshold table, the policy, the scripts and the README; returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen = default_threshold(result, max_loss) if threshold is None else float(threshold)
    written = []
    table = threshold_table(result, chosen)
    write_json_atomic(out / "thresholds.json", table)
    written.append(out / "thresholds.json")
    write_json_atomic(out / "policy.json", example_policy(result.points, chosen))
    written.append(out / "policy.json")
    runners = resources.files("optiseg._runners")
    for name in SCRIPTS:
        write_text_atomic(out / name, runners.joinpath(name).read_text(encoding="utf-8"))
        written.append(out / name)
    write_text_atomic(out / "README.md", _readme(result, table, curve_shipped=(out / CURVE).is_file()))
    written.append(out / "README.md")
    return written


def threshold_table(result: CascadeResult, chosen: float) -> dict:
    """``thresholds.json``: the rule, the default threshold and every operating point of the deployed router."""
    fields = ("threshold", "share_sent", "iou", "miou", "pixel_accuracy", "latency_ms", "device_latency_ms", "server_latency_ms", "link_bytes", "macs")
    return {
        "router": result.router,
        "rule": f"send the image to the server when the device graph's quality output (the small network's predicted {TARGET_WORDS[result.target]}) < threshold",
        "target": result.target,
        "default_threshold": chosen,
        "small": result.small.network.key,
        "large": result.large.network.key,
        "server_input_shape": list(result.large.network.input_shape),
        "measured_on": dict(result.measured_on),
        "points": [{name: p.as_dict()[name] for name in fields} for p in result.points],
        "references": {name: {k: p.as_dict()[k] for k in fields if k != "threshold"} for name, p in result.references.items()},
    }


def example_policy(points: tuple[CurvePoint, ...], chosen: float) -> dict:
    """A policy sending half as many images on a low battery or a busy device (an example to edit)."""
    current = min(points, key=lambda p: abs(p.threshold - chosen))
    fewer = min(points, key=lambda p: abs(p.share_sent - current.share_sent / 2))
    return {"default": chosen,
            "battery": [{"below": 20, "threshold": fewer.threshold}],
            "load": [{"above": 3.0, "threshold": fewer.threshold}]}


def _readme(result: CascadeResult, table: dict, curve_shipped: bool = False) -> str:
    small, large = result.small.network, result.large.network
    rows = "\n".join(
        f"| {p['threshold']:.4f} | {p['share_sent']:.0%} | {_fmt(p['iou'])} | {p['latency_ms']:.2f} | {p['device_latency_ms']:.2f} "
        f"| {p['link_bytes'] / 1e3:.1f} |" for p in table["points"]
    )
    refs = table["references"]
    curve_row = ("\n| `curve.json` | the operating curve the table comes from: every router's points, the oracle and random "
                 "references, the measured parts |") if curve_shipped else ""
    return f"""# A cascade from optiseg: {small.describe()} on the device, {large.describe()} on a server

| file | what it is |
|---|---|
| `device.onnx` | the small network and its {result.router} router in one graph: input `input` {list(small.input_shape)}, outputs `logits` and `quality` (the small network's predicted {TARGET_WORDS[result.target]}) |
| `server.onnx` | the large network: input {list(large.input_shape)}, output `logits` |
| `thresholds.json` | every operating point (threshold -> share of images sent, test IoU, expected latencies, bytes); `default_threshold` = {table['default_threshold']:.4f} |
| `policy.json` | an example policy: battery level / load average -> threshold |{curve_row}
| `cascade_device.py`, `cascade_server.py`, `tensor_codec.py` | the device and server scripts (numpy + onnxruntime; Pillow on the device) and the frame format they share |

An image goes to the server when `quality < threshold`; otherwise the small network's mask is kept.

## Run it

On the server: `pip install onnxruntime numpy`, then

```bash
python3 cascade_server.py server.onnx --host 0.0.0.0 --port 5555
```

On the device: `pip install onnxruntime numpy pillow`, then

```bash
python3 cascade_device.py device.onnx image.jpg -o masks/ --server SERVER:5555                  # thresholds.json's default
python3 cascade_device.py device.onnx image.jpg -o masks/ --server SERVER:5555 --threshold 0.9  # send more
python3 cascade_device.py device.onnx image.jpg -o masks/ --server SERVER:5555 --policy policy.json
```

**The threshold moves without deploying again.** `--threshold` fixes it; `--policy FILE` is read
again whenever the file changes (between images): the battery rule with the lowest `below` that the
battery level (percent) is under, else the load rule with the highest `above` that the 1-minute load
average exceeds, else `default`. The device prints one JSON line: each image's route, score,
threshold (and where it came from) and times. A server it cannot reach leaves the small network's
mask in place (`fallback` says why).

**On the link**: the image goes up as uint8 RGB at the large network's input size
({large.resolution_text}: {large.resolution[0] * large.resolution[1] * 3:,} bytes), the mask comes down as a uint8 class
map at that size ({large.resolution[0] * large.resolution[1]:,} bytes), each in one tensor_codec frame
(8 bits per value, a header of about 200 bytes not counted below); the device resizes it to the
image's size with nearest neighbour.

## Operating points (test split; {result.measured_on.get('device')} as device, {result.measured_on.get('server')} as server, link {result.measured_on.get('link')})

| threshold | sent | IoU | expected latency ms | device ms | KB per frame |
|---|---|---|---|---|---|
{rows}

Small network alone: IoU {_fmt(refs['small']['iou'])}, {refs['small']['latency_ms']:.2f} ms. Large network alone
(every frame sent): IoU {_fmt(refs['large']['iou'])}, {refs['large']['latency_ms']:.2f} ms expected. IoU is the test IoU
with each image scored by the model that handled it (foreground IoU for binary data, mean IoU
otherwise); expected latency = device (small network + router) + share sent x (upload + large
network on the server + download), each part measured on its machine.
"""


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"
