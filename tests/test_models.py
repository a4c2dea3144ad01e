"""Every registered architecture: shapes, gradients, resolutions, knobs and the thesis's parameter table."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from optiseg.errors import KnobError, UsageError
from optiseg.models import build_model, get_model_entry, list_models, parse_resolution
from optiseg.models._layers import Dropout, adaptive_avg_pool2d_static
from optiseg.profile import count_parameters

# A sample of knob combinations per architecture: baseline, narrow, and every removable module off.
KNOB_SAMPLES = {
    "fastscnn": [{}, {"a": 0.25, "t": 2, "r": 1, "pp": 0}, {"a": 0.5, "t": 4, "r": 2, "pp": 1}],
    "bisenetv2": [{}, {"a": 0.25, "t": 2, "r": 1, "ce": 0, "head_mid": 64}, {"a": 0.5, "t": 4, "r": 2, "ce": 1, "head_mid": 128}],
    "unet": [{"a": 0.25}, {"a": 0.125}],  # a=1 (25 M parameters) is left to the parameter test: too slow to train here
}
# Narrow, every module on, for the resolution sweep.
SMALL_KNOBS = {
    "fastscnn": {"a": 0.125, "t": 1, "r": 1, "pp": 1},
    "bisenetv2": {"a": 0.125, "t": 1, "r": 1, "ce": 1, "head_mid": 16},
    "unet": {"a": 0.0625},
}


def test_every_registered_model_has_knob_samples():
    assert sorted(KNOB_SAMPLES) == list_models()


def model_cases():
    return [pytest.param(name, knobs, id=f"{name}-{i}") for name in list_models() for i, knobs in enumerate(KNOB_SAMPLES[name])]


@pytest.mark.parametrize("name,knobs", model_cases())
@pytest.mark.parametrize("num_classes", [1, 3])
def test_forward_shape_and_backward(name, knobs, num_classes):
    torch.manual_seed(0)
    model = build_model(name, knobs, num_classes=num_classes).train()
    x = torch.randn(2, 3, 96, 160)
    out = model(x)
    assert out.shape == (2, num_classes, 96, 160)
    target = torch.randint(0, 2, (2, 96, 160))
    if num_classes == 1:
        loss = F.binary_cross_entropy_with_logits(out[:, 0], target.float())
    else:
        loss = F.cross_entropy(out, target)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [(64, 64), (64, 1024), (1024, 64), (96, 160), (544, 960), (224, 352)])
def test_every_resolution_trains(name, size):
    """Pyramid pooling / context embedding on, every kind of size: square, tall, wide, non-dividing maps."""
    model = build_model(name, SMALL_KNOBS[name], num_classes=2).train()
    out = model(torch.randn(2, 3, *size))  # BatchNorm on pooled context needs two samples when training
    assert out.shape == (2, 2, *size)
    out.mean().backward()


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_in_channels(name, in_channels):
    model = build_model(name, SMALL_KNOBS[name] if name == "unet" else {}, num_classes=1, in_channels=in_channels).eval()
    with torch.no_grad():
        assert model(torch.randn(1, in_channels, 64, 64)).shape == (1, 1, 64, 64)


# The digest's reference sizes (one class, three input channels).
FASTSCNN_PARAMS = [
    ({"a": 1, "t": 6, "r": 3, "pp": 1}, 1_122_673),
    ({"a": 1, "t": 6, "r": 3, "pp": 0}, 1_085_553),
    ({"a": 1, "t": 6, "r": 2, "pp": 1}, 743_281),
    ({"a": 1, "t": 6, "r": 1, "pp": 1}, 363_889),
    ({"a": 0.75, "t": 6, "r": 3, "pp": 1}, 644_917),
    ({"a": 0.5, "t": 6, "r": 3, "pp": 1}, 298_553),
]


@pytest.mark.parametrize("knobs,expected", FASTSCNN_PARAMS)
def test_fastscnn_parameter_table(knobs, expected):
    assert count_parameters(build_model("fastscnn", knobs, num_classes=1)) == expected


def test_fastscnn_one_input_channel_removes_576_parameters():
    rgb = count_parameters(build_model("fastscnn", in_channels=3))
    luma = count_parameters(build_model("fastscnn", in_channels=1))
    assert rgb - luma == 576


def test_bisenetv2_baseline_size():
    params = count_parameters(build_model("bisenetv2", num_classes=1))
    assert 3_300_000 <= params <= 3_400_000, params


def test_unet_is_the_studys_layout():
    """Five encoder blocks of two 3x3 convs (64..512 channels) with a 2x2 max-pool each; a scales every width."""
    model = build_model("unet", num_classes=1)
    widths = [block.convs[1][0].out_channels for block in model.encoder]
    assert widths == [64, 128, 256, 512, 512]
    assert all(isinstance(block.pool, torch.nn.MaxPool2d) and block.pool.kernel_size == 2 for block in model.encoder)
    assert [block.convs[1][0].out_channels for block in build_model("unet", {"a": 0.25}).encoder] == [16, 32, 64, 128, 128]
    # Hand count at a=0.125, 1 class: encoder (8, 16, 32, 64, 64), bottleneck 64, decoder (64, 32, 16, 8, 8), 1x1 head.
    def double(cin, cout):  # two 3x3 convs without bias, each with BatchNorm scale and shift
        return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout
    enc = double(3, 8) + double(8, 16) + double(16, 32) + double(32, 64) + double(64, 64)
    dec = double(64 + 64, 64) + double(64 + 64, 32) + double(32 + 32, 16) + double(16 + 16, 8) + double(8 + 8, 8)
    assert count_parameters(build_model("unet", {"a": 0.125})) == enc + double(64, 64) + dec + 8 + 1


def test_every_model_declares_stages_whose_run_is_the_forward():
    from optiseg.models import INPUT, OUTPUT, run_stages

    for name in list_models():
        model = build_model(name, SMALL_KNOBS[name]).eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad():
            staged = run_stages(model.stages(), {INPUT: x}, (64, 96))[OUTPUT]
            torch.testing.assert_close(staged, model(x))
        assert len({s.name for s in model.stages()}) == len(model.stages())


def test_removed_modules_are_not_built():
    with_pp = build_model("fastscnn", {"pp": 1})
    without = build_model("fastscnn", {"pp": 0})
    assert any("PyramidPooling" in type(m).__name__ for m in with_pp.modules())
    assert not any("PyramidPooling" in type(m).__name__ for m in without.modules())
    assert not any("ContextEmbedding" in type(m).__name__ for m in build_model("bisenetv2", {"ce": 0}).modules())


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_drops_at_its_rate_keeps_the_mean_and_the_memory_layout(p):
    dropout = Dropout(p).train()
    x = torch.ones(8, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    first = dropout(x)
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert float((first == 0).float().mean()) == pytest.approx(p, abs=0.005)
    assert float(first.mean()) == pytest.approx(1.0, abs=0.01)
    zero, kept = first.unique().tolist()
    assert zero == 0.0 and kept == pytest.approx(1 / (1 - p), rel=1e-4)
    torch.manual_seed(0)
    torch.testing.assert_close(dropout(x), first)  # the global generator: a seeded training repeats
    assert not torch.equal(dropout(x), first)
    dropped = first[0] == 0  # element-wise: neither whole channels nor the same pixels in every channel
    assert not bool(dropped.all(dim=(1, 2)).any()) and not torch.equal(dropped[0], dropped[1])
    odd = torch.ones(3, 5, 7)
    assert dropout(odd).shape == odd.shape
    assert dropout.eval()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 5), (8, 8), (16, 16), (17, 30), (32, 7)])
@pytest.mark.parametrize("bins", [1, 2, 4, 8])
def test_static_adaptive_pooling_matches_pytorch(size, bins):
    x = torch.randn(2, 3, *size)
    expected = F.adaptive_avg_pool2d(x, bins)
    torch.testing.assert_close(adaptive_avg_pool2d_static(x, bins), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list_models())
def test_knob_specs_are_the_class_signature(name):
    entry = get_model_entry(name)
    params = inspect.signature(entry.cls).parameters
    assert [p for p in params if p not in ("num_classes", "in_channels")] == list(entry.knob_names)


@pytest.mark.parametrize(
    "name,knobs,fragment",
    [
        ("fastscnn", {"a": 0}, "knob a=0 is invalid: a must be a number, 0 < a <= 1"),
        ("fastscnn", {"a": 1.5}, "0 < a <= 1"),
        ("fastscnn", {"r": 0}, "knob r=0 is invalid: r must be an integer, 1 <= r <= 8"),
        ("fastscnn", {"t": 2.5}, "t must be an integer"),
        ("fastscnn", {"pp": 2}, "pp must be 0 or 1"),
        ("fastscnn", {"a": 0.01}, "valid range: 0.03125 <= a <= 1"),
        ("bisenetv2", {"a": 0.1}, "valid range: 0.125 <= a <= 1"),
        ("fastscnn", {"ce": 1}, "unknown knob 'ce' for model 'fastscnn'; valid knobs: a, t, r, pp"),
        ("bisenetv2", {"head_mdi": 8}, "did you mean 'head_mid'?"),
    ],
)
def test_knob_errors_name_knob_value_and_range(name, knobs, fragment):
    with pytest.raises(KnobError) as info:
        build_model(name, knobs)
    assert fragment in str(info.value)


def test_unknown_model_lists_available():
    with pytest.raises(UsageError) as info:
        build_model("fastscn")
    message = str(info.value)
    assert "did you mean 'fastscnn'" in message and "bisenetv2, fastscnn, unet" in message


@pytest.mark.parametrize(
    "text,expected",
    [("192", (192, 192)), ("544x960", (544, 960)), ("544X960", (544, 960)), (256, (256, 256)), ("64x1024", (64, 1024))],
)
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("500x512", "height 500 must be a multiple of 32 from 64 to 1024 (nearest valid: 480 or 512)"),
        ("512x100", "width 100 must be a multiple of 32"),
        ("32", "(nearest valid: 64)"),
        ("2048", "(nearest valid: 1024)"),
        ("big", "write HxW"),
    ],
)
def test_resolution_errors(text, fragment):
    with pytest.raises(UsageError) as info:
        parse_resolution(text)
    assert fragment in str(info.value)
