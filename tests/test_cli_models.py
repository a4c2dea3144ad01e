"""`optiseg summary`, `export` and `models` as a user runs them."""

from __future__ import annotations

import json

import pytest

from optiseg.export import read_metadata

REFERENCE = [
    ("a=1,t=6,r=3,pp=1", 1_122_673),
    ("a=1,t=6,r=2,pp=1", 743_281),
    ("a=1,t=6,r=1,pp=1", 363_889),
    ("a=0.75,t=6,r=3,pp=1", 644_917),
    ("a=0.5,t=6,r=3,pp=1", 298_553),
]


def test_summary_json_reproduces_the_thesis(cli):
    result = cli("summary", "--model", "fastscnn", "--knobs", "a=1,t=6,r=3,pp=1", "--resolution", "512", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["params"] == 1_122_673
    assert abs(payload["macs"] - 830.67e6) / 830.67e6 < 0.02
    assert {"params", "macs", "activation_mb", "onnx_mb", "input_mb"} <= set(payload)
    assert payload["onnx_mb"] > 4.0  # 1.12 M float32 weights


@pytest.mark.parametrize("knobs,params", REFERENCE[1:])
def test_summary_parameter_table(cli, knobs, params):
    result = cli("summary", "--model", "fastscnn", "--knobs", knobs, "--resolution", "64", "--json")
    assert json.loads(result.stdout)["params"] == params


def test_summary_table_and_options(cli):
    result = cli("summary", "--model", "bisenetv2", "--knobs", "a=0.25,head_mid=64", "--resolution", "96x160", "--classes", "3", "--in-channels", "1")
    assert result.returncode == 0, result.stderr
    assert "multiply-accumulates" in result.stdout and "1x1x96x160" in result.stdout


def test_export_writes_checked_model(cli, tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    result = cli("export", "--model", "fastscnn", "--knobs", "a=0.25", "--resolution", "96x128", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["max_abs_diff"] <= 1e-4
    assert read_metadata(out)["resolution"] == "96x128"


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["summary", "--model", "fastscnn", "--knobs", "a=0", "--resolution", "192"], "knob a=0 is invalid"),
        (["summary", "--model", "fastscnn", "--knobs", "r=0", "--resolution", "192"], "knob r=0 is invalid"),
        (["summary", "--model", "fastscnn", "--knobs", "a=0.01", "--resolution", "192"], "0.03125 <= a <= 1"),
        (["summary", "--model", "fastscnn", "--resolution", "200"], "multiple of 32"),
        (["summary", "--model", "fastscnn", "--knobs", "x=1", "--resolution", "192"], "unknown knob 'x'"),
        (["summary", "--model", "pspnet", "--resolution", "192"], "unknown model 'pspnet'"),
        (["summary", "--model", "fastscnn", "--knobs", "a", "--resolution", "192"], "is not NAME=VALUE"),
        (["export", "--model", "fastscnn", "--resolution", "200", "-o", "x.onnx"], "multiple of 32"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, args, fragment):
    result = cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


def test_models_lists_every_architecture(cli):
    payload = json.loads(cli("models", "--json").stdout)
    assert set(payload) == {"fastscnn", "bisenetv2", "unet"}
    assert payload["fastscnn"]["knobs"]["a"]["default"] == 1.0


def test_help_teaches(cli):
    result = cli("summary", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout
