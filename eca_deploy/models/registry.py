"""The model zoo: names, factories, default ECA kernel sizes and the official published results."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from eca_deploy.data.images import IMAGENET_MEAN, IMAGENET_STD
from eca_deploy.errors import EcaDeployError
from eca_deploy.models.eca import eca_gates, eca_layers
from eca_deploy.models.eca_mobilenetv2 import eca_mobilenetv2
from eca_deploy.models.eca_resnet import (
    eca_resnet18,
    eca_resnet34,
    eca_resnet50,
    eca_resnet101,
    eca_resnet152,
)


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry. `k_size` is the per-stage default, taken from the published checkpoint's name."""

    name: str
    factory: Callable[..., nn.Module]
    k_size: tuple[int, ...] | None  # per ResNet stage; None where k follows the stage width
    checkpoint: str  # official checkpoint name (per-stage k in its suffix)
    top1: float  # published ImageNet-1k top-1 / top-5 (%) of that checkpoint
    top5: float
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    notes: str = field(default="")

    def build(self, num_classes: int = 1000, k_size: tuple[int, ...] | None = None) -> nn.Module:
        if k_size is not None and self.k_size is None:
            raise EcaDeployError(f"{self.name} sets k per stage from its width; --k-size applies to ResNets only")
        kwargs: dict[str, object] = {"num_classes": num_classes}
        if self.k_size is not None:
            kwargs["k_size"] = tuple(k_size or self.k_size)
        return self.factory(**kwargs)


ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("eca_resnet18", eca_resnet18, (3, 5, 7, 7), "eca_resnet18_k3577", 70.92, 89.93),
        ModelSpec("eca_resnet34", eca_resnet34, (3, 3, 5, 7), "eca_resnet34_k3357", 74.21, 91.83),
        ModelSpec(
            "eca_resnet50",
            eca_resnet50,
            (3, 5, 5, 7),
            "eca_resnet50_k3557",
            77.42,
            93.62,
            notes="the file was replaced in 2019; the paper reports 77.48/93.68",
        ),
        ModelSpec("eca_resnet101", eca_resnet101, (3, 3, 5, 7), "eca_resnet101_k3357", 78.65, 94.34),
        ModelSpec("eca_resnet152", eca_resnet152, (3, 3, 5, 7), "eca_resnet152_k3357", 78.92, 94.55),
        ModelSpec("eca_mobilenetv2", eca_mobilenetv2, None, "eca_mobilenetv2_k13", 72.56, 90.81),
    )
}


def get_spec(name: str) -> ModelSpec:
    try:
        return ZOO[name]
    except KeyError:
        raise EcaDeployError(f"unknown model {name!r}: choose one of {', '.join(ZOO)}") from None


def create_model(
    name: str, num_classes: int = 1000, k_size: tuple[int, ...] | None = None, seed: int | None = 0
) -> nn.Module:
    """Build a zoo model in eval mode; `seed` makes the random initialisation reproducible."""
    spec = get_spec(name)
    if seed is not None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = spec.build(num_classes, k_size)
    else:
        model = spec.build(num_classes, k_size)
    return model.eval()


def block_k_sizes(model: nn.Module) -> list[int]:
    """ECA kernel size of every block (zoo, timm or any ECA-style gate), in forward order."""
    return [k for _, k in eca_gates(model)]


def stage_k_sizes(model: nn.Module) -> tuple[int, ...]:
    """Per-stage k for ResNets (`layerN`), else the distinct k values in order of appearance."""
    per_stage: dict[str, int] = {}
    for name, layer in eca_layers(model):
        per_stage.setdefault(name.split(".")[0], layer.k_size)
    if all(key.startswith("layer") for key in per_stage):
        return tuple(per_stage.values())
    return tuple(dict.fromkeys(block_k_sizes(model)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: int = 224) -> int:
    """Multiply-accumulates of one image through every Conv and Linear layer, counted on the meta device."""
    macs = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            macs += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            macs += output.numel() * module.in_features

    meta = _to_meta(model)
    handles = [
        m.register_forward_hook(hook) for m in meta.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.no_grad():
            meta(torch.empty(1, 3, input_size, input_size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return macs


def _to_meta(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("meta").eval()


def build_on_meta(name: str) -> nn.Module:
    """The architecture without allocating weights: for counting parameters and MACs quickly."""
    with torch.device("meta"):
        return get_spec(name).build().eval()


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor | np.ndarray, batch: int = 8) -> nn.Module:
    """Replace BatchNorm running statistics by those of `images` (cumulative average), weights untouched.

    A randomly initialised network's default statistics (mean 0, variance 1) let activations shrink
    block after block (each ECA gate is ~0.5), so its logits are ~0 and say little about an export.
    Statistics taken from real photos keep activations at a realistic scale.
    """
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over all batches
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch):
                model(x[start : start + batch])
    finally:
        for m, momentum in zip(bns, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return model
