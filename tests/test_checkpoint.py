"""Loading official-format checkpoints: k and classes by shape, safe loading, readable mismatches."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from eca_deploy.errors import EcaDeployError
from eca_deploy.models import block_k_sizes, create_model
from eca_deploy.models.checkpoint import load_model
from eca_deploy.models.eca_resnet import eca_resnet18


def official_checkpoint(model: torch.nn.Module, arch: str, path: Path) -> Path:
    """The layout of the published files: DataParallel keys, epoch, arch, best_prec1, optimizer."""
    state = OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save(
        {"epoch": 100, "arch": arch, "state_dict": state, "best_prec1": torch.tensor(70.9),
         "optimizer": optimizer.state_dict()},
        path,
    )  # fmt: skip
    return path


def randomized(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def test_official_checkpoint_with_factory_default_k_loads(tmp_path: Path) -> None:
    # The official factory defaults to k=3,3,3,3; the loader must take k from the weights.
    source = randomized(eca_resnet18(num_classes=1000, k_size=(3, 3, 3, 3)))
    path = official_checkpoint(source, "eca_resnet18", tmp_path / "eca_resnet18_k3333.pth.tar")
    model = load_model("eca_resnet18", path)
    assert block_k_sizes(model) == [3] * 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_per_block_k_and_num_classes_inferred(tmp_path: Path) -> None:
    source = eca_resnet18(num_classes=10, k_size=(1, 3, 5, 9))
    source.layer2[1].eca.set_k_size(7)  # mixed within a stage
    randomized(source)
    path = tmp_path / "plain.pth"
    torch.save(source.state_dict(), path)  # a plain state_dict, no wrapper
    model = load_model("eca_resnet18", path)
    assert block_k_sizes(model) == [1, 1, 3, 7, 5, 5, 9, 9]
    assert model.fc.out_features == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


def test_mobilenetv2_older_k_rule_loads_by_shape(tmp_path: Path) -> None:
    # An older official revision used k=1 for c <= 96: the 96-channel blocks then have k=1.
    source = create_model("eca_mobilenetv2")
    for block in source.features[11:14]:
        block.conv[4].set_k_size(1)
    randomized(source)
    path = official_checkpoint(source, "eca_mobilenetv2", tmp_path / "old.pth.tar")
    model = load_model("eca_mobilenetv2", path)
    assert block_k_sizes(model) == block_k_sizes(source)
    assert block_k_sizes(model).count(3) == 4


def test_num_classes_conflict_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ten.pth"
    torch.save(eca_resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(EcaDeployError, match="disagrees with the checkpoint's classifier"):
        load_model("eca_resnet18", path, num_classes=1000)


def test_wrong_architecture_names_keys_and_guesses(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(eca_resnet18().state_dict(), path)
    with pytest.raises(EcaDeployError) as err:
        load_model("eca_resnet34", path)
    message = str(err.value)
    assert "missing keys" in message and "layer1.2.conv1.weight" in message
    assert "try --model eca_resnet18" in message
    assert "\n" not in message and len(message) < 600


def test_shape_conflicts_are_listed(tmp_path: Path) -> None:
    state = create_model("eca_resnet50").state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(EcaDeployError, match=r"shape conflicts.*layer1\.0\.conv1\.weight \[32, 64, 1, 1\]"):
        load_model("eca_resnet50", path)


class NotATensor:
    pass


def test_weights_only_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": NotATensor()}, path)
    with pytest.raises(EcaDeployError, match="not a PyTorch checkpoint"):
        load_model("eca_resnet18", path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(EcaDeployError, match="does not exist"):
        load_model("eca_resnet18", tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(eca_resnet18().state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(EcaDeployError, match="not a PyTorch checkpoint"):
        load_model("eca_resnet18", truncated)
    text = tmp_path / "text.pth"
    text.write_text("hello")
    with pytest.raises(EcaDeployError, match="not a PyTorch checkpoint"):
        load_model("eca_resnet18", text)


def test_checkpoint_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, path)
    with pytest.raises(EcaDeployError, match="holds no state_dict"):
        load_model("eca_resnet18", path)
