"""`optiseg device link-test`: the link to a real sshd on 127.0.0.1, measured and written into a study config."""

from __future__ import annotations

import json

import pytest
import yaml

pytest_plugins = ("sshd",)


def test_link_test_measures_a_real_ssh_link_and_writes_it_into_the_config(cli, tmp_path, sshd):
    server = sshd.device(sshd.write_known_hosts(tmp_path / "known_hosts"))
    config = tmp_path / "study.yaml"
    config.write_text("# my study\ndata: {root: data}   # kept\nserver: " + json.dumps(server) + "\nlink: {uplink_mbps: 1}\n\n# the end\n")
    result = cli("device", "link-test", str(config), "--mb", "2", "--rounds", "5", "--write", str(config), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["uplink_mbps"] > 1 and found["downlink_mbps"] > 1 and 0 < found["rtt_ms"] < 1000
    assert found["bytes_each_way"] == 2_000_000 and found["rounds"] == 5 and "127.0.0.1" in found["host"]
    text = config.read_text()
    assert text.startswith("# my study\ndata: {root: data}   # kept\n") and text.rstrip().endswith("# the end")
    written = yaml.safe_load(text)["link"]
    assert written["uplink_mbps"] == pytest.approx(found["uplink_mbps"], rel=1e-3) and "link-test to" in written["measured"]

    from optiseg.config import LinkConfig

    link = LinkConfig(**written)  # what a study reads back
    assert link.upload_ms(1_000_000) == pytest.approx(8 / written["uplink_mbps"] * 1e3 + written["rtt_ms"] / 2)


def test_link_test_refuses_what_it_cannot_measure(cli, tmp_path):
    local = cli("device", "link-test", "local")
    assert local.returncode == 2 and "one SSH host" in local.stderr and "Traceback" not in local.stderr
    too_much = cli("device", "link-test", "host.example", "--mb", "5000")
    assert too_much.returncode == 2 and "--mb 5000" in too_much.stderr
    few = cli("device", "link-test", "host.example", "--rounds", "1")
    assert few.returncode == 2 and "--rounds 1" in few.stderr
