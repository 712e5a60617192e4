"""Architecture fidelity of the zoo: parameter counts, ECA placement, per-block k and key names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eca_deploy.data.images import Preprocessing
from eca_deploy.models import ECALayer, adaptive_kernel_size, block_k_sizes, count_parameters, create_model
from eca_deploy.models.registry import ZOO, build_on_meta, count_macs, stage_k_sizes
from eca_deploy.models.seeded import seeded_model
from eca_deploy.ops.reference import eca_reference

# Official architectures with the published k (the issue and the checkpoints' sizes).
EXPECTED = {
    "eca_resnet18": (11_689_556, 8, (3, 5, 7, 7)),
    "eca_resnet34": (21_797_744, 16, (3, 3, 5, 7)),
    "eca_resnet50": (25_557_112, 16, (3, 5, 5, 7)),
    "eca_resnet101": (44_549_317, 33, (3, 3, 5, 7)),
    "eca_resnet152": (60_193_042, 50, (3, 3, 5, 7)),
    "eca_mobilenetv2": (3_504_903, 17, (1, 3)),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_parameter_count_blocks_and_k(name: str) -> None:
    params, blocks, k = EXPECTED[name]
    model = build_on_meta(name)
    assert count_parameters(model) == params
    assert len(block_k_sizes(model)) == blocks
    assert stage_k_sizes(model) == k


def test_resnet50_eca_adds_80_parameters_over_resnet50() -> None:
    # The paper's "+80 parameters" for ECA-Net50: 3*3 + 4*5 + 6*5 + 3*7.
    eca_params = sum(layer.conv.weight.numel() for layer in build_on_meta("eca_resnet50").modules()
                     if isinstance(layer, ECALayer))  # fmt: skip
    assert eca_params == 80


def test_mobilenetv2_k_follows_stage_width() -> None:
    model = build_on_meta("eca_mobilenetv2")
    widths = [layer.channels for layer in model.modules() if isinstance(layer, ECALayer)]
    assert block_k_sizes(model) == [1 if c < 96 else 3 for c in widths]
    assert widths.count(96) == 3 and block_k_sizes(model)[widths.index(96)] == 3


def test_key_names_match_official_checkpoints() -> None:
    r50 = build_on_meta("eca_resnet50").state_dict()
    assert r50["layer1.0.eca.conv.weight"].shape == (1, 1, 3)
    assert r50["layer4.2.eca.conv.weight"].shape == (1, 1, 7)
    assert "layer1.0.downsample.0.weight" in r50 and "fc.weight" in r50
    mb = build_on_meta("eca_mobilenetv2").state_dict()
    assert mb["features.1.conv.3.conv.weight"].shape == (1, 1, 1)  # first block: no expansion layer
    assert mb["features.2.conv.4.conv.weight"].shape == (1, 1, 1)
    assert mb["features.14.conv.4.conv.weight"].shape == (1, 1, 3)  # 160-channel stage
    assert mb["classifier.1.weight"].shape == (1000, 1280)


def test_eca_sits_before_the_residual_add() -> None:
    model = create_model("eca_resnet18")
    block = model.layer1[0]
    seen: list[str] = []
    block.bn2.register_forward_hook(lambda *_: seen.append("bn2"))
    block.eca.register_forward_hook(lambda *_: seen.append("eca"))
    # Zeroing the gate's input channels must leave only the identity path: out = relu(x).
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        out = block(x)
    assert seen == ["bn2", "eca"]
    torch.testing.assert_close(out, torch.relu(x))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_forward_shape_and_classes(name: str) -> None:
    model = create_model(name, num_classes=7)
    with torch.no_grad():
        y = model(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 7)


def test_width_multiplier_channels() -> None:
    from eca_deploy.models.eca_mobilenetv2 import eca_mobilenetv2

    model = eca_mobilenetv2(width_mult=0.5)
    assert model.last_channel == 1280  # int(1280 * max(1, 0.5))
    assert model.features[1].conv[3].channels == 8  # int(16 * 0.5)
    assert eca_mobilenetv2(width_mult=1.4).last_channel == int(1280 * 1.4)


def test_macs_resnet50_matches_the_usual_count() -> None:
    # ResNet-50 is ~4.09 GMACs at 224 in every model zoo; ECA adds ~0.0001.
    assert 4.08e9 < count_macs(build_on_meta("eca_resnet50")) < 4.10e9


def test_adaptive_kernel_size_worked_values() -> None:
    assert [adaptive_kernel_size(c) for c in (16, 32, 64, 128, 256, 512, 1024, 2048)] == [3, 3, 3, 5, 5, 5, 5, 7]


@settings(deadline=None)  # hypothesis' default 200 ms per example fails on a busy machine, not on a wrong k
@given(st.integers(1, 1 << 16))
def test_adaptive_kernel_size_is_odd_and_near_the_formula(c: int) -> None:
    k = adaptive_kernel_size(c)
    t = (math.log2(c) + 1) / 2
    assert k % 2 == 1 and abs(k - t) <= 1 + 1e-9


def test_eca_layer_rejects_even_k() -> None:
    with pytest.raises(ValueError, match="odd"):
        ECALayer(16, 4)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 3), c=st.integers(1, 40), h=st.integers(1, 9), w=st.integers(1, 9),
    k=st.sampled_from([1, 3, 5, 7, 9]), seed=st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_eca_layer_matches_float64_reference(n: int, c: int, h: int, w: int, k: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    layer = ECALayer(c, k).double()
    with torch.no_grad():
        layer.conv.weight.copy_(torch.randn(1, 1, k, generator=gen, dtype=torch.float64))
        x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        y = layer(x).numpy()
    np.testing.assert_allclose(
        y, eca_reference(x.numpy(), layer.conv.weight.detach().numpy().ravel()), rtol=1e-12, atol=1e-12
    )


def test_zoo_names() -> None:
    assert set(ZOO) == set(EXPECTED)


def test_seeded_model_is_built_once_and_every_caller_gets_its_own_copy() -> None:
    first = seeded_model("eca_resnet18", num_classes=10, block_k=[3] * 8, img_size=64)
    with torch.no_grad():
        for p in first.parameters():
            p.zero_()  # what a caller may do to its model
        next(m for m in first.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean.fill_(7.0)
    again = seeded_model("eca_resnet18", num_classes=10, block_k=[3] * 8, img_size=64)
    other = seeded_model("eca_resnet18", num_classes=10, block_k=[5] * 8, img_size=64)  # another model in between
    third = seeded_model("eca_resnet18", num_classes=10, block_k=[3] * 8, img_size=64)
    for a, b in zip(again.state_dict().values(), third.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(p.abs().sum() > 0 for p in again.parameters() if p.dim() > 1)
    assert not (next(m for m in again.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_mean == 7.0).any()
    assert {m.k_size for m in other.modules() if isinstance(m, ECALayer)} == {5}
    assert {m.k_size for m in again.modules() if isinstance(m, ECALayer)} == {3}
    listed = Preprocessing(size=64, resize=73, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])  # as read from JSON
    assert seeded_model("eca_resnet18", num_classes=10, img_size=64, preprocessing=listed) is not None
