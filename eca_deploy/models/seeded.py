"""The reproducible random model that `export` uses without weights, and `check` rebuilds as reference."""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn

from eca_deploy.data.images import Preprocessing, load_images
from eca_deploy.models.eca import eca_layers
from eca_deploy.models.registry import create_model, get_spec, recalibrate_batchnorm

SEED = 0
RANDOM_WEIGHTS = "random(seed=0)"


def seeded_model(
    name: str,
    num_classes: int = 1000,
    block_k: Sequence[int] | None = None,
    img_size: int = 224,
    preprocessing: Preprocessing | None = None,
) -> nn.Module:
    """Seed-0 initialisation, ECA kernel sizes per block, BatchNorm statistics from the sample photos.

    Same arguments, same weights: so an ONNX exported without a checkpoint can still be checked later. The model of
    the last arguments is built once per process (deploy's export and each of its checks ask for the same one);
    every call returns its own copy.
    """
    block = tuple(int(k) for k in block_k) if block_k is not None else None
    if preprocessing is not None:  # the cache's key: mean and std read from JSON may come as lists
        preprocessing = replace(preprocessing, mean=tuple(preprocessing.mean), std=tuple(preprocessing.std))
    return copy.deepcopy(_built(name, num_classes, block, img_size, preprocessing))


@functools.lru_cache(maxsize=1)
def _built(
    name: str, num_classes: int, block_k: tuple[int, ...] | None, img_size: int, preprocessing: Preprocessing | None
) -> nn.Module:
    model = create_model(name, num_classes=num_classes, seed=SEED)
    if block_k is not None:
        layers = eca_layers(model)
        if len(block_k) != len(layers):
            raise ValueError(f"{name} has {len(layers)} ECA blocks, got {len(block_k)} kernel sizes")
        for i, ((_, layer), k) in enumerate(zip(layers, block_k, strict=True)):
            if k != layer.k_size:
                with torch.random.fork_rng():
                    torch.manual_seed(SEED + 1 + i)
                    layer.set_k_size(k)
    spec = get_spec(name)
    prep = preprocessing or Preprocessing.for_size(img_size, mean=spec.mean, std=spec.std)
    photos = load_images(None, prep)
    return recalibrate_batchnorm(model, photos.array)
