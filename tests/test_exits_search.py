"""Early-exit plans through the search: every threshold of one trained network with exits on one front, each exit's
time measured on the device, the expected latency from the test split's exits; `optiseg exits STUDY --trial N`;
`optiseg deploy` ships the chain and a script that runs the policy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from optiseg.records import read_record
from test_search_e2e import FAST_MEASURE, data_root, load_study  # noqa: F401  (data_root is a fixture)

pytestmark = pytest.mark.slow

SMALL = {"resolution": [64], "a": [1], "t": [6], "r": [1], "pp": [1], "in_channels": [3], "exits": [2]}


def make_config(folder, data_root, name, **changes):
    config = {
        "study": name, "model": "fastscnn", "effort": "expert", "resolution": 64,
        "search_space": {**SMALL, "threshold": [0.9, 0.99]}, "mode": ["device", "early_exit"],
        "data": {"root": str(data_root)}, "training": {"epochs": 12, "batch_size": 4, "lr": 0.01},
        "device": {"kind": "local", "measure": FAST_MEASURE},
        "budget": {"n_trials": 1}, "confirm": False, "output": str(folder / "runs"),
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_every_threshold_on_one_front_from_one_training_and_deployed(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "exits")
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    done = [read_record(t) for t in load_study(tmp_path, "exits").trials]
    done = [r for r in done if r.status == "complete" and r.duplicate_of is None]
    assert sorted((r.mode, r.plan.knob_dict.get("threshold")) for r in done) == \
        [("device", None), ("early_exit", 0.9), ("early_exit", 0.99)]
    assert summary["counts"]["networks_trained"] == 1

    device = next(r for r in done if r.mode == "device")
    exits = {r.plan.knob_dict["threshold"]: r for r in done if r.mode == "early_exit"}
    for threshold, r in exits.items():
        details = r.evaluation.details["exits"]
        cumulative, shares = details["cumulative_ms"], list(details["shares"].values())
        assert details["names"] == ["exit1", "exit2", "logits"] and len(cumulative) == 3
        assert cumulative == sorted(cumulative) and all(ms > 0 for ms in details["stage_ms"])
        assert sum(shares) == pytest.approx(1.0)
        assert r.latency_ms == pytest.approx(sum(s * ms for s, ms in zip(shares, cumulative)))
        assert cumulative[0] <= r.latency_ms <= cumulative[-1]
        assert 0.0 <= r.iou <= 1.0 and f">= {threshold:g}" in r.evaluation.details["iou_source"]
        points = r.evaluation.operating_points
        assert points and all(p.knob == "threshold" for p in points)
        same = [p for p in points if p.value == pytest.approx(threshold)]
        assert not same or same[0].metrics["iou"] == pytest.approx(r.iou)
    # A higher threshold leaves early no more often: later exits, at least as much time.
    assert exits[0.99].latency_ms >= exits[0.9].latency_ms - 1e-9
    assert exits[0.99].evaluation.details["exits"]["shares"]["logits"] >= exits[0.9].evaluation.details["exits"]["shares"]["logits"]
    assert device.iou > 0.15 and device.latency_ms > 0

    study = tmp_path / "runs" / "exits"
    trial = exits[0.9].number
    shown = cli("exits", str(study), "--trial", str(trial), "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert [row["name"] for row in report["exits"]] == ["exit1", "exit2", "logits"] and report["curve"]
    table = cli("exits", str(study), "--trial", str(trial))
    assert table.returncode == 0 and "operating curve" in table.stdout
    wrong = cli("exits", str(study), "--trial", "99")
    assert wrong.returncode == 2 and "no trial 99" in wrong.stderr and "Traceback" not in wrong.stderr
    neither = cli("exits", str(study))
    assert neither.returncode == 2 and "--trial" in neither.stderr

    out = tmp_path / "deploy"
    deployed = cli("deploy", str(study), "--trial", str(exits[0.99].number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert {"stage1.onnx", "stage2.onnx", "stage3.onnx", "exit1.onnx", "exit2.onnx", "exits.json", "early_exit.py",
            "README.md", "metrics.json"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "exits.json").read_text())
    assert manifest["policy"]["threshold"] == 0.99 and manifest["policy"]["thresholds"]
    pictures = sorted((data_root / "test" / "images").iterdir())[:2]
    ran = subprocess.run([sys.executable, str(out / "early_exit.py"), str(out), *map(str, pictures), "-o", str(tmp_path / "masks")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.strip().splitlines()[-1])["ok"]


def test_early_exit_without_exits_is_a_config_error(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "noexits", search_space={**SMALL, "exits": [0]})
    result = cli("search", str(config))
    assert result.returncode == 2, result.stderr
    assert "early_exit needs networks with exits" in result.stderr and "search_space" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs" / "noexits").exists()


def test_exits_on_the_device_and_the_last_stage_on_a_server(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "exitsplit", mode=["device", "early_exit_split"],
                         search_space={**SMALL, "threshold": [0.99], "bits": [32, 4]},
                         server={"kind": "local", "name": "edge-server", "measure": FAST_MEASURE},
                         link={"uplink_mbps": 100, "downlink_mbps": 200, "rtt_ms": 2})
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    done = [read_record(t) for t in load_study(tmp_path, "exitsplit").trials]
    plans = {r.plan.knob_dict.get("bits"): r for r in done if r.status == "complete" and r.mode == "early_exit_split"}
    assert set(plans) == {32, 4} and json.loads(result.stdout)["counts"]["networks_trained"] == 1
    for bits, r in plans.items():
        exits = r.evaluation.details["exits"]
        remote, shares = exits["remote"], list(exits["shares"].values())
        assert remote["bits"] == bits and remote["tensors"] and r.evaluation.details["server_latency"]["codec"]["step"] == "decode"
        assert remote["ms"] == pytest.approx(remote["device_ms"] + remote["upload_ms"] + remote["server_ms"] + remote["download_ms"])
        assert exits["cumulative_ms"][-1] == pytest.approx(remote["ms"])
        assert r.latency_ms == pytest.approx(sum(s * ms for s, ms in zip(shares, exits["cumulative_ms"])))
        # The time (each part's p90 over runs, summed) of the output by which nine images in ten are done.
        p90, times = r.latency_p90_ms, [*exits["cumulative_p90_ms"][:-1], remote["p90_ms"]]
        assert all(tail >= median for tail, median in zip(times, exits["cumulative_ms"]))
        assert p90 in times and sum(s for s, ms in zip(shares, times) if ms <= p90) >= 0.9 - 1e-9
        assert sum(s for s, ms in zip(shares, times) if ms < p90) < 0.9
        assert r.metric("link_bytes") == pytest.approx(shares[-1] * remote["frame_bytes"])
        assert r.metric("server_latency_ms") == pytest.approx(shares[-1] * remote["server_ms"])
        assert r.metric("uplink_mbps") == pytest.approx(r.metric("link_bytes") * 8 * r.metric("fps") / 1e6)
    assert plans[4].evaluation.details["exits"]["remote"]["frame_bytes"] < 0.3 * plans[32].evaluation.details["exits"]["remote"]["frame_bytes"]

    out = tmp_path / "deploy"
    deployed = cli("deploy", str(tmp_path / "runs" / "exitsplit"), "--trial", str(plans[32].number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert {"split_server.py", "tensor_codec.py", "early_exit.py", "stage3.onnx"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "exits.json").read_text())
    assert manifest["policy"]["bits"] == 32 and manifest["policy"]["last_stage"] == "server"
    assert "split_server.py stage3.onnx" in (out / "README.md").read_text()

    # Every image past the exits (threshold above 1) to the server over a socket: the same masks as the chain run here.
    pictures = sorted((data_root / "test" / "images").iterdir())[:2]
    server = subprocess.Popen([sys.executable, str(out / "split_server.py"), str(out / "stage3.onnx"), "--port", "0", "--frames", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["listening"]
        remote = subprocess.run([sys.executable, str(out / "early_exit.py"), str(out), *map(str, pictures), "--threshold", "1.5",
                                 "--server", f"127.0.0.1:{port}", "-o", str(tmp_path / "remote")],
                                capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert remote.returncode == 0, remote.stderr
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    report = json.loads(remote.stdout.strip().splitlines()[-1])
    assert report["ok"] and [i["exit"] for i in report["images"]] == ["server", "server"]
    local = subprocess.run([sys.executable, str(out / "early_exit.py"), str(out), *map(str, pictures), "--threshold", "1.5",
                            "-o", str(tmp_path / "local")], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    from PIL import Image

    for picture in pictures:
        a = np.asarray(Image.open(tmp_path / "remote" / f"{picture.stem}.png"))
        b = np.asarray(Image.open(tmp_path / "local" / f"{picture.stem}.png"))
        assert a.shape == b.shape and (a == b).mean() > 0.999


def test_the_bound_before_training_of_exits_with_a_server_takes_the_faster_path(tmp_path, monkeypatch):
    """Before training, a plan is judged by its fastest possible image: the first exit, or the remote path when a
    fast link and server beat the first exit (its upsampling included)."""
    from types import SimpleNamespace

    from optiseg.config.link import LinkConfig
    from optiseg.layout import NetworkFolder
    from optiseg.modes import early_exit
    from optiseg.network import Network
    from optiseg.plans import Evaluation

    network = Network.create("fastscnn", {"a": 0.25, "t": 2, "r": 1, "pp": 1, "exits": 1}, (64, 64), num_classes=2)
    last = tmp_path / "stage2.onnx"
    last.write_bytes(b"x" * 1000)
    chain = SimpleNamespace(stages=[SimpleNamespace(path=tmp_path / "stage1.onnx", index=1, inputs=("input",)),
                                    SimpleNamespace(path=last, index=2, inputs=("feature",))])
    first_exit_ms = 5.0  # stage 1 (1 ms) and a slow upsampling of exit 1 (4 ms)
    base = Evaluation(metrics={"latency_ms": first_exit_ms, "device_latency_ms": first_exit_ms, "onnx_mb": 1.0, "activation_mb": 0.5},
                      details={"exits": {"stage_ms": [1.0, 3.0], "cumulative_ms": [first_exit_ms, 8.0]}})
    monkeypatch.setattr(early_exit.EarlyExitMode, "cost", lambda self, plan, context: base)
    monkeypatch.setattr("optiseg.exits.load_exit_chain", lambda folder: chain)
    monkeypatch.setattr(early_exit, "write_crossing_graph", lambda last_stage, out: out)
    monkeypatch.setattr(early_exit, "crossing_frame_bytes", lambda last_stage, bits: 1000)
    mode = early_exit.EarlyExitSplitMode()
    plan = mode.plan(network, {"threshold": 0.9, "bits": 8})

    def bound(uplink_mbps: float, server_ms: float) -> Evaluation:
        timed = {"encode": 0.1, "decode": server_ms}
        context = SimpleNamespace(
            link=LinkConfig(uplink_mbps=uplink_mbps), network_folder=NetworkFolder(tmp_path / "network"),
            measure=lambda path, cache, key, codec: {"median_ms": timed["encode"]},
            measure_server=lambda path, cache, key, codec: {"median_ms": timed["decode"]},
            device_label="pi", server_label="server")
        return mode.cost(plan, context)

    fast = bound(uplink_mbps=1000.0, server_ms=0.5)  # 1 + 0.1 + 0.008 + 0.5 + ~0.004 ms: faster than the first exit
    remote = fast.details["exits"]["remote"]
    assert remote["ms"] < first_exit_ms and fast.metrics["latency_ms"] == pytest.approx(remote["ms"])
    assert fast.metrics["device_latency_ms"] == pytest.approx(remote["device_ms"])
    slow = bound(uplink_mbps=1.0, server_ms=20.0)
    assert slow.details["exits"]["remote"]["ms"] > first_exit_ms and slow.metrics["latency_ms"] == first_exit_ms
