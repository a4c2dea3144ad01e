"""Cascade plans through the search: `mode: [device, cascade]` pairs two networks the study trained, and every
threshold of the cascade's curve becomes a plan on the same front, at no training; resumed, it adds nothing."""

from __future__ import annotations

import json

import pytest
import yaml

from optiseg.records import load_records
from test_search_e2e import FAST_MEASURE, load_study

pytestmark = pytest.mark.slow
LIMIT_MBPS = 5.0


@pytest.fixture(scope="module")
def cascade_study(tmp_path_factory):
    from conftest import run_cli

    folder = tmp_path_factory.mktemp("cascade-search")
    config = {
        "study": "belt3c", "model": "fastscnn", "effort": "beginner", "resolution": 96,
        "search_space": {"resolution": [64, 96], "a": [0.25], "t": [2], "r": [1]},
        "mode": ["device", "cascade"],
        "data": {"root": str(folder / "data"), "synthetic": {"n": 32, "classes": 3, "width": 128, "height": 96}},
        "training": {"epochs": 2, "batch_size": 4}, "device": {"kind": "local", "measure": FAST_MEASURE},
        "server": {"kind": "local", "name": "edge-server", "measure": FAST_MEASURE},
        "link": {"uplink_mbps": 50, "downlink_mbps": 100, "rtt_ms": 2},
        "constraints": {"max_uplink_mbps": LIMIT_MBPS},
        "budget": {"n_trials": 2}, "sampler": "grid", "output": str(folder / "runs"), "confirm": False,
    }
    path = folder / "belt3c.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli("search", str(path), "--json")
    assert result.returncode == 0, result.stderr
    return path, folder, json.loads(result.stdout)


def test_cascade_points_join_the_front_without_training(cli, cascade_study, tmp_path):
    path, folder, summary = cascade_study
    study = load_study(folder, "belt3c")
    trial_records = load_records(study)
    trained = [r for r in trial_records if r.mode == "device" and r.status == "complete"]
    cascades = [r for r in trial_records if r.mode == "cascade"]
    assert len(trained) == 2 and summary["counts"]["networks_trained"] == 2
    assert len(cascades) >= 3 and all(r.status == "complete" and not r.trained for r in cascades)
    small = min(trained, key=lambda r: r.latency_ms)
    large = max(trained, key=lambda r: r.iou)
    for r in cascades:
        details = r.evaluation.details["cascade"]
        assert r.derived_from == (details["small_trial"], details["large_trial"])
        assert (details["small_trial"], details["large_trial"]) == (small.number, large.number)
        assert [n.key for n in r.plan.networks] == [small.network.key, large.network.key]
        costs = details["costs"]
        share = details["share_sent"]
        assert r.latency_ms == pytest.approx(r.metric("device_latency_ms") + share * (costs["upload_ms"] + costs["server_ms"] + costs["download_ms"]))
        assert r.metric("uplink_mbps") == pytest.approx(r.metric("link_bytes") * 8 * r.metric("fps") / 1e6)
        assert r.constraints["max_uplink_mbps"] == pytest.approx(r.metric("uplink_mbps") - LIMIT_MBPS)
        assert r.feasible == (r.metric("uplink_mbps") <= LIMIT_MBPS)
    shares = sorted(r.evaluation.details["cascade"]["share_sent"] for r in cascades)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert any(not r.feasible for r in cascades)  # sending every frame needs more than the limit

    front = json.loads(cli("front", str(folder / "runs" / "belt3c"), "--all", "--json").stdout)
    modes = {row["trial"]: row.get("mode") or row["plan"] for row in front["trials"]}
    assert all(r.number in modes for r in cascades)

    chosen = next(r for r in cascades if 0 < r.evaluation.details["cascade"]["share_sent"] < 1)
    out = tmp_path / "deploy"
    deployed = cli("deploy", str(folder / "runs" / "belt3c"), "--trial", str(chosen.number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert {"device.onnx", "server.onnx", "thresholds.json", "policy.json", "cascade_device.py", "cascade_server.py",
            "tensor_codec.py", "README.md", "metrics.json"} <= {p.name for p in out.iterdir()}
    table = json.loads((out / "thresholds.json").read_text())
    assert table["default_threshold"] == pytest.approx(chosen.plan.knob_dict["threshold"], abs=1e-6)

    again = cli("search", str(path), "--json")  # resumed: the pair's plans are stored, nothing is added or trained
    assert again.returncode == 0, again.stderr
    assert len([r for r in load_records(load_study(folder, "belt3c")) if r.mode == "cascade"]) == len(cascades)


def test_a_cascade_alone_is_a_config_error(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"study": "c", "model": "fastscnn", "mode": ["cascade"], "data": {"root": str(tmp_path)},
                                      "server": {"kind": "local"}, "link": {"uplink_mbps": 10, "rtt_ms": 1}}))
    result = cli("search", str(config))
    assert result.returncode == 2 and "pairs networks the search trains" in result.stderr and "Traceback" not in result.stderr
