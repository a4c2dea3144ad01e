"""Training-step speed of one network under several settings, side by side in interleaved rounds.

    python benchmarks/train_step.py                          # Fast-SCNN a=1,t=6,r=3,pp=1 at 192x192
    python benchmarks/train_step.py --compile --rounds 6     # also torch.compile (slow to start: minutes)

Each contender is one setting (batch size, precision, memory format, compiled or not, Adam's implementation,
the loss's) of the same network stepping with Adam on random tensors, with the trainer's own loss at the
trainer's mask size (BCE + soft Dice against masks at ``label_scale`` x the input, some pixels ignored); no
data loading (see ``train_packages.py`` for that). The contenders take turns round by round (A B C A B C ...),
each round about 32 images, and the first round is left out. Prints the median images/s of each and its
ratio to the first: the step as it was before the speed work (batch 4, float32, channels-last, Adam's
per-parameter loop, the loss that gathered the valid pixels, torch's dropout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F

from optiseg.cli._common import parse_knobs
from optiseg.data import IGNORE
from optiseg.models import parse_resolution
from optiseg.network import Network
from optiseg.training import SegmentationLoss
from train_packages import LossBefore, with_torch_dropout

LABEL_SCALE = 2  # the trainer's default: masks at twice the input size


class Setting(NamedTuple):
    batch: int
    bf16: bool = False
    channels_last: bool = True
    compiled: bool = False
    fused_adam: bool = True
    loss: type[SegmentationLoss] = SegmentationLoss
    torch_dropout: bool = False


class LossElementwise(SegmentationLoss):
    """The binary loss as autograd's element-wise steps (BCE with weights, sigmoid, products, sums): the same
    value and gradient as today's written-out :class:`_BinaryLoss`, a dozen autograd nodes instead of one."""

    def forward(self, logits, target):
        if self.num_logits != 1:
            return super().forward(logits, target)
        logits = F.interpolate(logits.float(), size=target.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        valid = target != self.ignore_index
        count, truth, weight = valid.sum(), (target == 1).float(), valid.float()
        loss = F.binary_cross_entropy_with_logits(logits, truth, weight=weight, reduction="sum") / count
        probability = torch.sigmoid(logits)
        intersection, total = (probability * truth).sum(), (probability * weight).sum() + truth.sum()
        return loss + self.dice_weight * (1.0 - (2 * intersection + 1.0) / (total + 1.0))


CONTENDERS = {
    "before (batch 4)": Setting(4, fused_adam=False, loss=LossBefore, torch_dropout=True),
    "batch 4 (today)": Setting(4),
    "batch 4 torch dropout": Setting(4, torch_dropout=True),
    "batch 4 autograd loss": Setting(4, loss=LossElementwise),
    "batch 4 NCHW": Setting(4, channels_last=False),
    "batch 4 bf16": Setting(4, bf16=True),
    "batch 8": Setting(8),
    "batch 16": Setting(16),
    "batch 16 bf16": Setting(16, bf16=True),
    "batch 32": Setting(32),
}


def stepper(network: Network, setting: Setting):
    torch.manual_seed(0)
    memory = torch.channels_last if setting.channels_last else torch.contiguous_format
    model = network.build().to(memory_format=memory)
    if setting.torch_dropout:
        with_torch_dropout(model)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=setting.fused_adam or None)
    forward = torch.compile(model) if setting.compiled else model
    height, width = network.resolution
    inputs = torch.randn(setting.batch, network.in_channels, height, width).contiguous(memory_format=memory)
    target = (torch.rand(setting.batch, LABEL_SCALE * height, LABEL_SCALE * width) > 0.5).to(torch.uint8)
    target[:, : LABEL_SCALE * height // 10] = IGNORE  # a band of ignored pixels, as rotations and shifts leave
    loss_fn = setting.loss(1, 1.0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if setting.bf16 else nullcontext():
            logits = forward(inputs)
        loss_fn(logits.float(), target).backward()
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fastscnn")
    parser.add_argument("--knobs", default="a=1,t=6,r=3,pp=1")
    parser.add_argument("--resolution", default="192")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also torch.compile at batch 16 (compiles first: minutes)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    network = Network.create(args.model, parse_knobs(args.knobs), parse_resolution(args.resolution))
    contenders = dict(CONTENDERS, **({"batch 16 compiled": Setting(16, compiled=True)} if args.compile else {}))
    steps, warmup = {}, {}
    for name, setting in contenders.items():
        steps[name] = stepper(network, setting)
        started = time.perf_counter()
        steps[name]()
        steps[name]()
        warmup[name] = time.perf_counter() - started
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(args.rounds + 1):
        for name, (batch, *_) in contenders.items():
            count = max(2, 32 // batch)
            started = time.perf_counter()
            for _ in range(count):
                steps[name]()
            if round_:
                rates[name].append(count * batch / (time.perf_counter() - started))
    first = statistics.median(rates[next(iter(contenders))])
    result = {name: {"images_per_second": statistics.median(v), "ratio": statistics.median(v) / first,
                     "first_two_steps_s": warmup[name]} for name, v in rates.items()}
    if args.json:
        print(json.dumps({"network": network.describe(), "threads": torch.get_num_threads(), "contenders": result}))
        return 0
    print(f"{network.describe()}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds")
    for name, row in result.items():
        print(f"{name:20s} {row['images_per_second']:7.1f} images/s  {row['ratio']:.2f}x  (first two steps {row['first_two_steps_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
