"""`optiseg deploy`: one trained candidate as a folder ready to copy to the device."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path

from .errors import StudyError, UsageError
from .export import read_metadata
from .layout import StudyLayout
from .records import COMPLETE, PARTIAL, TOO_SLOW, TrialRecord
from .results import partial_epochs, partial_figures


def deploy_trial(record: TrialRecord, study_folder: Path, config_path: Path | None, out: Path) -> list[Path]:
    """Write the plan's model(s), metrics.json, config.yaml, predict.py and README.md for ``record`` into ``out``.

    What is shipped comes from the plan's deployment mode (e.g. the INT8 model for an ``int8`` plan). ``out``
    must be a folder that can be written (``optiseg deploy`` checks it first, with :func:`optiseg._paths.require_output`).
    """
    from .modes import get_mode
    from .modes._base import Artifact

    if record.status == TOO_SLOW:
        over = "; ".join(f"{key} by {value:.4g}" for key, value in record.violations.items()) or "a cost constraint"
        what = "too slow" if not record.violations or any("latency" in key for key in record.violations) else "too large"
        raise UsageError(
            f"trial {record.number} was {what} (over {over}) and was not trained, so there is nothing to deploy",
            hint="pick a trial from `optiseg front STUDY`",
        )
    partial = partial_figures(record) if record.mode == "device" else None
    if (record.status != COMPLETE and partial is None) or record.artifacts is None:
        raise UsageError(f"trial {record.number} did not complete ({record.status}); pick a trial from `optiseg front STUDY`"
                         + (" (or `optiseg front STUDY --partial`)" if record.status == PARTIAL else ""))
    folder = StudyLayout(study_folder).network_at(record.artifacts)
    if partial is not None:  # a network trained to a lower rung only, as it stands: marked so wherever it goes
        record = replace(record, feasible=True)
        artifacts = [Artifact(folder.path / partial["onnx"], "model.onnx",
                              f"the network after {partial_epochs(record)} (partial: the study trained it "
                              "no further), its best weights so far, FP32")]
    else:
        artifacts = get_mode(record.mode).artifacts(record.plan, folder)
    for artifact in artifacts:
        if not artifact.source.is_file():
            raise StudyError(
                f"the deployable model of trial {record.number} is not at {artifact.source}",
                hint="run deploy on the machine that trained it (the trial's worker was "
                f"{record.worker or 'unknown'}), or keep the study's output folder on shared storage",
            )
    out.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copyfile(a.source, out / a.name)) for a in artifacts]
    metadata = read_metadata(out / artifacts[0].name)
    figures = {
        "trial": record.number,
        "plan": record.plan_key,
        "mode": record.mode,
        "precision": record.precision,
        "model": record.model,
        "knobs": record.knobs,
        "resolution": record.resolution,
        "in_channels": record.in_channels,
        "params": record.params,
        "macs": record.macs,
        "latency_ms": record.latency_ms,
        "latency_p90_ms": record.latency_p90_ms,
        "fps": record.fps,
        "iou": record.iou,
        "partial": {k: partial[k] for k in ("epochs", "of", "rung")} if partial else None,
        "evaluation": record.evaluation.as_dict(),
        "metrics": record.metrics,
        "device": record.latency.get("facts", {}),
    }
    written.append(_write(out / "metrics.json", json.dumps(figures, indent=2, default=str) + "\n"))
    if config_path is not None and config_path.is_file():
        written.append(Path(shutil.copyfile(config_path, out / "config.yaml")))
    predict = resources.files("optiseg._runners").joinpath("predict.py").read_text(encoding="utf-8")
    written.append(_write(out / "predict.py", predict))  # also the preprocessing the other device-side scripts import
    write_readme = getattr(get_mode(record.mode), "deploy_readme", None)  # a mode with scripts of its own explains them
    if write_readme is not None:
        written.extend(write_readme(record, out, {a.name: a.description for a in artifacts}))
    else:
        written.append(_write(out / "README.md", _readme(record, metadata, artifacts)))
    return written


def _readme(record: TrialRecord, meta: dict[str, str], artifacts) -> str:
    facts = record.latency.get("facts", {}) if record.latency else {}
    device = ", ".join(str(facts[k]) for k in ("cpu_model", "hostname") if facts.get(k)) or "the study's device"
    threads = record.latency.get("threads") if record.latency else None
    decode = meta.get("output", "")
    mean, std = meta.get("normalization_mean", "?"), meta.get("normalization_std", "?")
    files = "\n".join(f"| `{a.name}` | {a.description} |" for a in artifacts)
    quantization = record.evaluation.details.get("quantization") or {}
    int8_note = ""
    if record.precision == "int8":
        settings = quantization.get("settings", {})
        int8_note = (
            f"\n**This model is INT8** (static post-training quantization, QDQ format, calibration "
            f"{settings.get('method', '?')} on {settings.get('calibration_images', '?')} training images, "
            f"per-channel weights {'on' if settings.get('per_channel') else 'off'}). Its IoU above was measured by "
            f"onnxruntime on the test split with this very file (FP32 network: "
            f"{_fmt(record.evaluation.details.get('fp32_iou'))}). Operators left in float: "
            f"{json.dumps(quantization['float_ops']) if quantization.get('float_ops') else 'none'}. Feed it float32 input as for FP32; the "
            "quantize/dequantize steps are inside the graph.\n"
        )
    return f"""# {record.model} from optiseg trial {record.number} ({record.precision or 'fp32'})

| file | what it is |
|---|---|
{files}
{int8_note}
| | |
|---|---|
| plan | `{record.plan_key}` |
| knobs | {json.dumps(record.knobs)} |
| input | `{meta.get('input_name', 'input')}`, {meta.get('input_shape', '?')} ({meta.get('input_layout', 'NCHW float32')}) |
| test IoU | {record.iou:.4f}{_partial_note(record)} |
| latency | median {record.latency_ms:.2f} ms (p90 {record.latency_p90_ms or float('nan'):.2f} ms), {record.fps:.1f} fps on {device}{f', {threads} threads' if threads else ''} |
| parameters / MACs | {record.params:,} / {record.macs:,} |

## Run it on the device

```bash
pip install onnxruntime numpy pillow
python3 predict.py model.onnx image.jpg -o masks/ --threads {threads or 4}
```

`predict.py` reads everything it needs from the model's metadata. To write your own
pre- and post-processing:

1. Resize the image to {meta.get('resolution', '?')} (height x width), bilinear.
2. Channels: {meta.get('channel_order', 'RGB')}{' (luma Y = 0.299 R + 0.587 G + 0.114 B)' if meta.get('channel_order') == 'Y' else ''}; scale pixels by 1/255.
3. Normalize each channel: `(x - mean) / std` with mean {mean} and std {std}.
4. Feed a float32 tensor `1xCxHxW` to input `{meta.get('input_name', 'input')}`.
5. Output `{meta.get('output_name', 'logits')}`: {decode}. Resize the mask back to the image's size with nearest neighbour.

The full metadata is in the ONNX file: `python3 -c "import onnxruntime as o; print(o.InferenceSession('model.onnx').get_modelmeta().custom_metadata_map)"`.
`metrics.json` holds the figures above and the device facts; `config.yaml` is the study config.
"""


def _partial_note(record: TrialRecord) -> str:
    if partial_figures(record) is None:
        return ""
    return f" (**partial**: after {partial_epochs(record)}; a whole training usually scores higher)"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
