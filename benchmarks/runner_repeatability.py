"""Latency runners: repeatability of the median, and what measuring over SSH costs beyond the timing.

    python benchmarks/runner_repeatability.py [--repeats 5] [--threads 2] [--warmup 10]
        [--min-runs 50] [--min-seconds 2] [--config DEVICE.yaml] [--json]

Two models: a small one (Fast-SCNN a=0.25 at 128x128) and a large one (Fast-SCNN
a=1 at 512x512). Each is measured ``--repeats`` times by the local runner and by
the SSH runner, interleaved. Every repeat times a fresh copy of the model (same
network, one metadata entry different), so every SSH measurement uploads it, as
in a search; the connection is opened once beforehand and reused, as in a search.

Without ``--config`` the SSH device is this machine through a real sshd on
127.0.0.1 started here (as the tests do; needs Debian's openssh-server), so
local and SSH time the same CPU and their difference is the cost of SSH.
With ``--config`` the SSH device is the one configured there (a Raspberry Pi, say).

Reported per model and runner:
  * cv_of_median_pct: standard deviation / mean of the medians over the repeats
    (target <= 3 % on an idle machine);
  * overhead_s: mean wall time of a measurement minus its device-side part
    (session creation + warm-up + timed runs), i.e. process start, checks,
    upload and SSH round trips;
  * ssh_minus_local_s (same machine only): mean SSH wall time minus mean local
    wall time (target < 1 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = [
    ("small", "fastscnn", {"a": 0.25, "t": 6, "r": 3, "pp": 1}, (128, 128)),
    ("large", "fastscnn", {"a": 1.0, "t": 6, "r": 3, "pp": 1}, (512, 512)),
]


def export_case(folder: Path, name: str, model: str, knobs: dict, size: tuple[int, int]) -> Path:
    from optiseg.export import export_onnx
    from optiseg.network import Network
    from optiseg.models import build_model

    path = folder / f"{name}.onnx"
    export_onnx(build_model(model, knobs, 1), path, Network.create(model, knobs, size, num_classes=1))
    return path


def fresh_copy(source: Path, index: int, folder: Path) -> Path:
    """The same network with one more metadata entry: other bytes, so the SSH runner uploads it again."""
    import onnx

    graph = onnx.load(str(source))
    graph.metadata_props.add(key="benchmark_copy", value=str(index))
    path = folder / f"{source.stem}-copy{index}.onnx"
    onnx.save(graph, str(path))
    return path


def device_side_s(result) -> float:
    per_run_s = result.median_ms / 1000.0
    return result.session_ms / 1000.0 + result.warmup * per_run_s + result.loop_s


def summarize(results: list) -> dict:
    medians = [r.median_ms for r in results]
    return {
        "medians_ms": [round(m, 4) for m in medians],
        "median_of_medians_ms": round(statistics.median(medians), 4),
        "cv_of_median_pct": round(100 * statistics.stdev(medians) / statistics.mean(medians), 2) if len(medians) > 1 else None,
        "mean_wall_s": round(statistics.mean(r.wall_s for r in results), 3),
        "overhead_s": round(statistics.mean(r.wall_s - device_side_s(r) for r in results), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--min-runs", type=int, default=50)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--config", type=Path, help="a YAML with the SSH device's device: section (default: local sshd)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from optiseg.config.device import DeviceConfig, load_device_config
    from optiseg.devices import make_runner

    measure = {"threads": args.threads, "warmup": args.warmup, "min_runs": args.min_runs, "min_seconds": args.min_seconds}
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.config is None:
            sys.path.insert(0, str(REPO / "tests"))
            from sshd import start_sshd

            server = start_sshd(folder / "sshd")
            ssh_config = DeviceConfig.model_validate(
                server.device(server.write_known_hosts(folder / "known_hosts"), measure=measure, command_timeout=600)
            )
        else:
            loaded = load_device_config(args.config)
            ssh_config = loaded.model_copy(update={"measure": loaded.measure.model_copy(update=measure)})
        local = make_runner(DeviceConfig(measure=measure))
        remote = make_runner(ssh_config)
        report = {"settings": {**measure, "repeats": args.repeats, "ssh_device": remote.device_key}, "models": {}}
        try:
            started = time.perf_counter()
            remote.connect()
            report["settings"]["ssh_connect_s"] = round(time.perf_counter() - started, 3)
            for name, model, knobs, size in CASES:
                source = export_case(folder, name, model, knobs, size)
                results: dict[str, list] = {"local": [], "ssh": []}
                for index in range(args.repeats):
                    copy = fresh_copy(source, index, folder)
                    results["local"].append(local.measure(copy))
                    results["ssh"].append(remote.measure(copy))
                    if not args.json:
                        print(
                            f"{name} repeat {index + 1}/{args.repeats}: local {results['local'][-1].median_ms:.3f} ms "
                            f"({results['local'][-1].wall_s:.2f} s wall), ssh {results['ssh'][-1].median_ms:.3f} ms "
                            f"({results['ssh'][-1].wall_s:.2f} s wall)",
                            file=sys.stderr,
                            flush=True,
                        )
                entry = {"model": f"{model} {knobs} {size[0]}x{size[1]}", **{k: summarize(v) for k, v in results.items()}}
                if server is not None:
                    entry["ssh_minus_local_s"] = round(entry["ssh"]["mean_wall_s"] - entry["local"]["mean_wall_s"], 3)
                entry["load_1m"] = results["ssh"][-1].facts.load_1m
                report["models"][name] = entry
        finally:
            remote.close()
            if server is not None:
                server.stop()
    if args.json:
        print(json.dumps(report))
        return 0
    print(json.dumps(report["settings"]))
    for name, entry in report["models"].items():
        print(f"\n{name}: {entry['model']}")
        for runner in ("local", "ssh"):
            figures = entry[runner]
            print(
                f"  {runner:5s} median of medians {figures['median_of_medians_ms']:9.3f} ms"
                f"  CV {figures['cv_of_median_pct']} %  mean wall {figures['mean_wall_s']:.2f} s"
                f"  overhead beyond the timing {figures['overhead_s']:.3f} s"
            )
        if "ssh_minus_local_s" in entry:
            print(f"  SSH minus local: {entry['ssh_minus_local_s']:.3f} s per model (load {entry['load_1m']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
