"""The ECA op's variants (bias, circular padding, hard sigmoid gate, residual, ReLU) that the kernel and plugin test
grids run, judged by the contract's float64 reference."""

from __future__ import annotations

from eca_deploy.ops.reference import eca_reference as reference

__all__ = ["VARIANTS", "VARIANT_SHAPES", "reference"]

# (bias, padding, gate, activation, residual): every attribute off its default at least once, combined
VARIANTS = [
    (0.0, "zeros", "sigmoid", "relu", True),  # ECA-ResNet blocks: relu(x * g + identity)
    (0.0, "zeros", "sigmoid", "none", True),  # ECA-MobileNetV2 stride-1 blocks: x * g + identity
    (0.3, "circular", "sigmoid", "none", False),  # timm's CECA with a biased conv
    (-0.2, "zeros", "hard_sigmoid", "relu", False),
    (0.5, "circular", "hard_sigmoid", "relu", True),
]
VARIANT_SHAPES = [(2, 1, 7, 7, 3), (1, 3, 5, 5, 7), (2, 24, 16, 16, 5), (2, 9, 9, 10, 5), (1, 6, 48, 48, 3)]
