"""The study config: validated up front, every error names the file, the key, the bad value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optiseg.config import load_config
from optiseg.errors import ConfigError

BASE = {"model": "fastscnn", "effort": "beginner", "data": {"root": "data"}}


def write(tmp_path, payload, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(payload) if isinstance(payload, dict) else payload)
    return path


def error_of(tmp_path, payload) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, payload))
    return str(info.value)


def test_a_minimal_config_gets_sensible_defaults(tmp_path):
    loaded = load_config(write(tmp_path, BASE))
    config = loaded.config
    assert loaded.study_name == "study"  # the file's name
    assert config.data.root == tmp_path / "data"  # relative to the config file
    assert config.output == tmp_path / "runs"
    assert config.budget.n_trials == 20 and config.device.kind == "local" and config.sampler == "auto"


@pytest.mark.parametrize(
    "changes,fragments",
    [
        ({"modle": "fastscnn"}, ["unknown key 'modle'", "did you mean 'mode' or 'model'?"]),
        ({"model": "fastscn"}, ["model = 'fastscn'", "did you mean 'fastscnn'?"]),
        ({"effort": "advanced"}, ["effort = 'advanced'", "beginner", "intermediate", "expert"]),
        ({"constraints": {"max_latency_ms": -3}}, ["constraints.max_latency_ms = -3", "greater than 0"]),
        ({"constraints": {"min_iou": 1.5}}, ["constraints.min_iou = 1.5"]),
        ({"constraints": {"max_latnecy_ms": 30}}, ["unknown key 'constraints.max_latnecy_ms'", "did you mean 'max_latency_ms'?"]),
        ({"budget": {"n_trials": None, "timeout": None}}, ["give n_trials, timeout or train_compute"]),
        ({"budget": {"timeout": "soon"}}, ["budget.timeout", "not a duration"]),
        ({"training": {"batch_size": 1}}, ["training.batch_size = 1"]),
        ({"sampler": "cmaes"}, ["sampler = 'cmaes'"]),
        ({"data": {}}, ["missing key 'data.root'"]),
    ],
)
def test_config_errors(tmp_path, changes, fragments):
    message = error_of(tmp_path, {**BASE, **changes})
    assert str(tmp_path / "study.yaml") in message
    for fragment in fragments:
        assert fragment in message, message


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    message = error_of(tmp_path, "model: fastscnn\ndata: [root\n")
    assert "study.yaml:3:1: invalid YAML" in message or "study.yaml:2" in message


@pytest.mark.parametrize("text,fragment", [("", "is empty"), ("- a\n- b\n", "must be a mapping")])
def test_empty_or_non_mapping_files(tmp_path, text, fragment):
    assert fragment in error_of(tmp_path, text)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_durations():
    from optiseg.config import parse_duration

    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration(45) == 45 and parse_duration("1.5h") == 5400


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_is_valid_and_builds_its_search_space(path):
    from optiseg.config import load_config
    from optiseg.search.space import build_search_space

    config = load_config(path).config
    space = build_search_space(config.model, config.effort, config.search_space, config.resolution, source=str(path),
                               modes=config.mode)
    assert space.size >= 1
