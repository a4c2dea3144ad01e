"""Split plans through the search: every (cut, bits) of a trained network on one front, measured on a device and a
server, deployed as two scripts that talk over a socket."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image

from optiseg import records
from optiseg.layout import StudyLayout
from optiseg.records import read_record
from test_search_e2e import FAST_MEASURE, data_root, load_study  # noqa: F401  (data_root is a fixture)

pytest_plugins = ("sshd",)
pytestmark = pytest.mark.slow

LINK = {"uplink_mbps": 100, "downlink_mbps": 200, "rtt_ms": 2}
SMALL = {"resolution": [64], "a": [1], "t": [6], "r": [1], "pp": [1], "in_channels": [3]}


def make_config(folder, data_root, name, **changes):
    config = {
        "study": name, "model": "fastscnn", "effort": "expert", "resolution": 64,
        "search_space": {**SMALL, "bits": [16, 4]}, "mode": ["device", "split"],
        "data": {"root": str(data_root)}, "training": {"epochs": 12, "batch_size": 2, "lr": 0.01},
        "device": {"kind": "local", "measure": FAST_MEASURE},
        "server": {"kind": "local", "name": "edge-server", "measure": FAST_MEASURE},
        "link": LINK, "budget": {"n_trials": 1}, "confirm": False, "output": str(folder / "runs"),
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_one_training_puts_every_cut_and_bits_on_one_front_and_deploys_over_a_socket(cli, tmp_path, data_root):
    config = make_config(tmp_path, data_root, "split")
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    trials = [read_record(t) for t in load_study(tmp_path, "split").trials]
    done = [r for r in trials if r.status == "complete" and r.duplicate_of is None]
    cuts = ["server", "learning_to_downsample", "bottlenecks1", "bottlenecks2", "bottlenecks3", "pyramid_pooling", "feature_fusion"]
    assert {(r.mode, r.plan.knob_dict.get("cut"), r.plan.knob_dict.get("bits")) for r in done} == \
        {("device", None, None)} | {("split", c, b) for c in cuts for b in (16, 4)}
    assert summary["counts"]["networks_trained"] == 1 and [r.trained for r in done].count(True) == 1
    folder = StudyLayout(tmp_path / "runs" / "split").network(done[0].candidate)
    assert all(r.iou > 0.15 for r in done if r.plan.knob_dict.get("bits") != 4), [(r.plan_key, r.iou) for r in done]
    assert (folder.train / "train.log").read_text().count("training fastscnn") == 1

    device = next(r for r in done if r.mode == "device")
    split = {(r.plan.knob_dict["cut"], r.plan.knob_dict["bits"]): r for r in done if r.mode == "split"}
    for (cut, bits), r in split.items():
        m, details = r.evaluation.metrics, r.evaluation.details["split"]
        assert m["latency_ms"] == pytest.approx(m["device_latency_ms"] + m["link_ms"] + m["server_latency_ms"])
        assert m["link_ms"] == pytest.approx(details["frame_bytes"] * 8 / 100e3 + details["mask_bytes"] * 8 / 200e3 + 2)
        assert m["link_bytes"] == details["frame_bytes"] and details["mask_bytes"] == 8 + 64 * 64
        assert r.latency["codec"] == {"step": "encode", "bits": bits, "frame_bytes": details["frame_bytes"]}
        assert r.evaluation.details["server_latency"]["codec"]["step"] == "decode"
        assert details["placement"] == {"head": "local", "tail": "edge-server"} and r.plan.placement == (("head", "device"), ("tail", "server"))
        assert m["uplink_mbps"] == pytest.approx(m["link_bytes"] * 8 * m["fps"] / 1e6)
        assert 0.0 <= r.iou <= 1.0 and "at %d bits" % bits in r.evaluation.details["iou_source"]
    for cut in cuts:  # 4 bits send about a quarter of 16 bits' bytes, and what crosses is the same
        assert split[(cut, 4)].metric("link_bytes") < 0.3 * split[(cut, 16)].metric("link_bytes") + 2000
        assert abs(split[(cut, 16)].iou - device.iou) < 0.02  # float16 on the link loses (almost) nothing
    fusion = split[("bottlenecks2", 16)].evaluation.details["split"]["tensors"]
    assert [(t["name"], t["skip"]) for t in fusion] == [("ltd", True), ("gfe2", False)]  # the skip crosses every inner cut
    assert split[("server", 16)].evaluation.details["split"]["device_macs"] == 0

    front = json.loads(cli("front", str(tmp_path / "runs" / "split"), "--all", "--json").stdout)
    rows = {row["trial"]: row for row in front["trials"]}
    some = split[("bottlenecks1", 4)]
    assert rows[some.number]["metrics"]["server_latency_ms"] > 0 and rows[some.number]["plan"].endswith("-bits4_cutbottlenecks1")
    table = cli("front", str(tmp_path / "runs" / "split"), "--all").stdout
    assert "server" in table and "link" in table and "bottlenecks1" in table  # where the time goes, per plan

    report = cli("report", str(tmp_path / "runs" / "split"), "-o", str(tmp_path / "report.html"), "--no-samples")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert "Split plans" in html and "after bottlenecks1" in html and "all on server" in html and "all on device" in html

    out = tmp_path / "deploy"
    deployed = cli("deploy", str(tmp_path / "runs" / "split"), "--trial", str(split[("bottlenecks1", 16)].number), "-o", str(out))
    assert deployed.returncode == 0, deployed.stderr
    assert {p.name for p in out.iterdir()} >= {"head.onnx", "tail.onnx", "split_device.py", "split_server.py", "tensor_codec.py",
                                              "predict.py", "split.json", "README.md", "metrics.json"}
    assert json.loads((out / "split.json").read_text())["bits"] == 16 and "split_server.py tail.onnx" in (out / "README.md").read_text()

    # The two scripts, on 127.0.0.1: the device's mask equals the whole network's (32 bits: nothing lost on the link).
    image = sorted((data_root / "test" / "images").iterdir())[0]
    server = subprocess.Popen([sys.executable, str(out / "split_server.py"), str(out / "tail.onnx"), "--port", "0", "--frames", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline())["listening"]
        sent = subprocess.run([sys.executable, str(out / "split_device.py"), str(out / "head.onnx"), str(image),
                               "--server", f"127.0.0.1:{port}", "--bits", "32", "-o", str(tmp_path / "split-masks")],
                              capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        line = json.loads(sent.stdout.splitlines()[-1])
        assert line["bits"] == 32 and line["bytes_sent"] > 0
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
    whole = subprocess.run([sys.executable, str(out / "predict.py"), str(folder.trained_onnx), str(image),
                            "-o", str(tmp_path / "whole-masks")], capture_output=True, text=True, timeout=120)
    assert whole.returncode == 0, whole.stderr
    split_mask = np.asarray(Image.open(tmp_path / "split-masks" / f"{image.stem}.png"))
    whole_mask = np.asarray(Image.open(tmp_path / "whole-masks" / f"{image.stem}.png"))
    assert split_mask.shape == whole_mask.shape and np.array_equal(split_mask, whole_mask)
    assert 0 < whole_mask.mean() < 255  # a network that finds something: the comparison means something

    again = cli("search", str(config), "--json")  # resumed: nothing measured or trained again
    assert again.returncode == 0 and len(load_study(tmp_path, "split").trials) == len(trials)


def test_the_server_is_reached_over_ssh_before_any_trial(cli, tmp_path, data_root, sshd):
    (tmp_path / "empty").write_text("")
    refused = cli("search", str(make_config(tmp_path, data_root, "untrusted", server=sshd.device(tmp_path / "empty"))))
    assert refused.returncode == 1 and "optiseg device trust" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "runs" / "untrusted").exists()

    server = sshd.device(sshd.write_known_hosts(tmp_path / "known_hosts"))
    config = make_config(tmp_path, data_root, "ssh-server", server={**server, "measure": FAST_MEASURE},
                         search_space={**SMALL, "bits": [8], "cut": ["server", "bottlenecks1"]})
    result = cli("search", str(config), "--json")
    assert result.returncode == 0, result.stderr
    split = [read_record(t) for t in load_study(tmp_path, "ssh-server").trials]
    split = [r for r in split if r.mode == "split" and r.status == "complete"]
    assert sorted(r.plan.knob_dict["cut"] for r in split) == ["bottlenecks1", "server"]
    for r in split:
        assert r.evaluation.details["server_latency"]["device_key"].startswith("ssh:")
        assert r.latency["device_key"].startswith("local") and r.metric("server_latency_ms") > 0


def test_split_settings_are_checked_before_anything_is_made(cli, tmp_path, data_root):
    no_server = make_config(tmp_path, data_root, "no-server", server=None, link=None)
    refused = cli("search", str(no_server))
    assert refused.returncode == 2 and "add server: and link:" in refused.stderr and "Traceback" not in refused.stderr

    bad_cut = make_config(tmp_path, data_root, "bad-cut", search_space={**SMALL, "cut": ["bottleneck1"]})
    refused = cli("search", str(bad_cut))
    assert refused.returncode == 2 and "search_space.cut" in refused.stderr and "bottlenecks1" in refused.stderr

    no_mode = make_config(tmp_path, data_root, "no-mode", mode=["device"], search_space={**SMALL, "bits": [8]})
    refused = cli("search", str(no_mode))
    assert refused.returncode == 2 and "mode: [device, split]" in refused.stderr
    for name in ("no-server", "bad-cut", "no-mode"):
        assert not (tmp_path / "runs" / name).exists()


def test_a_cut_a_network_does_not_have_is_skipped_and_siblings_follow_each_network():
    from optiseg.search.space import PlanNotApplicable, build_search_space

    space = build_search_space("fastscnn", "expert", {**SMALL, "pp": [1, 0], "bits": [8]}, modes=["device", "split"])
    assert "pyramid_pooling" in space.choices["cut"] and space.choices["mode"] == ("device", "split")
    with_pp = {"pp": 1, "mode": "split", "cut": "pyramid_pooling"}
    assert space.plan(with_pp).knob_dict == {"bits": 8, "cut": "pyramid_pooling"}
    with pytest.raises(PlanNotApplicable, match="no cut 'pyramid_pooling'"):
        space.plan({**with_pp, "pp": 0})
    siblings = space.sibling_params({"pp": 0, "mode": "device"})
    assert {s.get("cut") for s in siblings} == {"server", "learning_to_downsample", "bottlenecks1", "bottlenecks2",
                                                "bottlenecks3", "feature_fusion"}
    assert len(list(space.all_params())) == (1 + 7) + (1 + 6)  # every plan of both networks, once
