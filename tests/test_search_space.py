"""Search spaces: tiers nest, overrides narrow/widen/fix knobs, bad overrides name the key."""

from __future__ import annotations

import optuna
import pytest

from optiseg.config import EFFORTS
from optiseg.errors import ConfigError
from optiseg.models import list_models
from optiseg.search.sampler import make_sampler, resolve_sampler_name
from optiseg.search.space import build_search_space, load_knob_definitions


@pytest.mark.parametrize("model", list_models())
def test_every_model_has_a_search_space_whose_tiers_nest(model):
    definitions = load_knob_definitions(model)
    assert definitions["resolution"]["tier"] == "beginner"
    spaces = [build_search_space(model, effort) for effort in EFFORTS]
    for lower, higher in zip(spaces, spaces[1:]):
        assert set(lower.choices) < set(higher.choices)
        assert higher.size > lower.size


def test_tiers_open_the_thesis_knobs():
    assert set(build_search_space("fastscnn", "beginner").choices) == {"resolution"}
    assert set(build_search_space("fastscnn", "intermediate").choices) == {"resolution", "a", "t"}
    assert set(build_search_space("fastscnn", "expert").choices) == {"resolution", "a", "t", "r", "pp", "in_channels"}


def test_baseline_is_the_default_model_at_the_users_resolution():
    space = build_search_space("fastscnn", "intermediate", resolution="192")
    assert space.baseline_params() == {"resolution": 192, "a": 1.0, "t": 6}
    candidate = space.network(space.baseline_params())
    assert candidate.resolution == (192, 192)
    assert candidate.knob_dict == {"a": 1.0, "t": 6, "r": 3, "pp": True}


def test_overrides_narrow_fix_and_open_knobs():
    space = build_search_space(
        "fastscnn", "beginner", {"resolution": [128, 160], "a": [0.5, 0.25], "pp": [0]}, resolution=160
    )
    assert space.choices["resolution"] == (128, 160)
    assert space.choices["a"] == (1.0, 0.5, 0.25)  # a knob opened above the tier keeps the baseline's value
    assert "pp" not in space.choices and space.baseline["pp"] == 0  # one choice fixes a knob
    assert space.size == 6


def test_a_resolution_outside_the_choices_joins_them():
    space = build_search_space("fastscnn", "beginner", {"resolution": [96, 128]}, resolution="544x960")
    assert space.choices["resolution"][0] == "544x960"


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"aa": [1]}, "unknown knob 'search_space.aa' for fastscnn (did you mean 'a'?)"),
        ({"a": [0]}, "search_space.a = 0: knob a=0 is invalid"),
        ({"resolution": [100]}, "search_space.resolution = 100"),
        ({"t": []}, "search_space.t must be a non-empty list"),
        ({"in_channels": [2]}, "in_channels must be 3 (RGB) or 1 (luma)"),
    ],
)
def test_bad_overrides_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        build_search_space("fastscnn", "expert", overrides, source="my.yaml")
    assert fragment in str(info.value) and "my.yaml" in str(info.value)


def test_suggest_builds_valid_candidates():
    space = build_search_space("bisenetv2", "expert", {"resolution": [64, 96]})
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1))
    keys = set()
    for _ in range(20):
        trial = study.ask()
        candidate = space.suggest(trial).network
        keys.add(candidate.key)
        assert candidate.resolution in ((64, 64), (96, 96))
        study.tell(trial, [0.5, 1.0])
    assert len(keys) > 10
    assert all("/" not in key and " " not in key for key in keys)


def test_fingerprint_changes_with_the_space():
    a = build_search_space("fastscnn", "beginner")
    b = build_search_space("fastscnn", "beginner", {"resolution": [96, 128]})
    assert a.fingerprint() == build_search_space("fastscnn", "beginner").fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_auto_sampler_follows_the_measured_rule():
    space = build_search_space("fastscnn", "intermediate", {"resolution": [128, 192]}, 192)  # 2 x 5 x 3 = 30
    assert resolve_sampler_name("auto", space, 30, latency_constrained=True) == "grid"
    assert resolve_sampler_name("auto", space, 12, latency_constrained=True) == "tpe"
    assert resolve_sampler_name("auto", space, 12, latency_constrained=False) == "gp"
    assert resolve_sampler_name("auto", space, 12, latency_constrained=False, multi_worker=True) == "tpe"
    assert resolve_sampler_name("nsga2", space, 30, latency_constrained=True) == "nsga2"
    assert isinstance(make_sampler("auto", space, 0, 12, latency_constrained=False), optuna.samplers.GPSampler)
    tpe = make_sampler("auto", space, 0, 12, latency_constrained=True)
    assert isinstance(tpe, optuna.samplers.TPESampler)
