"""Training-step speed of one network under several settings, side by side in interleaved rounds.

    python benchmarks/train_step.py                          # Fast-SCNN a=1,t=6,r=3,pp=1 at 192x192
    python benchmarks/train_step.py --compile --rounds 6     # also torch.compile (slow to start: minutes)

Each contender is one (batch size, precision, memory format, compiled, Adam's
implementation) setting of the same network with Adam, stepping on random tensors (no data loading: see
``train_packages.py`` for that); the contenders take turns round by round (A B C
A B C ...), each round about 32 images, and the first round is left out. Prints
the median images/s of each and its ratio to the first (today's: batch 4,
float32, channels-last).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import nullcontext

import torch

from optiseg.cli._common import parse_knobs
from optiseg.models import parse_resolution
from optiseg.network import Network

CONTENDERS = {  # name: (batch size, bf16 autocast, channels-last, compiled, Adam: "loop" (torch's CPU default) or "fused")
    "batch 4 (today)": (4, False, True, False, "loop"),
    "batch 4 NCHW": (4, False, False, False, "loop"),
    "batch 4 bf16": (4, True, True, False, "loop"),
    "batch 4 fused Adam": (4, False, True, False, "fused"),
    "batch 8": (8, False, True, False, "loop"),
    "batch 16": (16, False, True, False, "loop"),
    "batch 16 bf16": (16, True, True, False, "loop"),
    "batch 16 fused Adam": (16, False, True, False, "fused"),
    "batch 32": (32, False, True, False, "loop"),
    "batch 32 fused Adam": (32, False, True, False, "fused"),
}


def stepper(network: Network, batch: int, bf16: bool, channels_last: bool, compiled: bool, adam: str = "loop"):
    torch.manual_seed(0)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model = network.build().to(memory_format=memory)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=adam == "fused" or None)
    forward = torch.compile(model) if compiled else model
    height, width = network.resolution
    inputs = torch.randn(batch, network.in_channels, height, width).contiguous(memory_format=memory)
    target = (torch.rand(batch, height, width) > 0.5).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = forward(inputs)
        loss_fn(logits.float()[:, 0], target).backward()
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
    contenders = dict(CONTENDERS, **({"batch 16 compiled": (16, False, True, True, "loop")} if args.compile else {}))
    steps, warmup = {}, {}
    for name, setting in contenders.items():
        steps[name] = stepper(network, *setting)
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
