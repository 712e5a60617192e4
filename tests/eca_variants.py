"""The ECA op's variants (bias, circular padding, hard sigmoid gate, residual, ReLU) for the kernel and plugin tests:
a float64 reference with the op contract's keywords, and the variants the test grids run.

The reference follows docs/eca_op.md; it stands in for eca_deploy.ops.reference.eca_reference with keyword arguments
until that is on this branch (the test of the default variant compares the two).
"""

from __future__ import annotations

import numpy as np


def reference(x: np.ndarray, weights: np.ndarray, *, bias: float = 0.0, padding: str = "zeros", gate: str = "sigmoid",
              activation: str = "none", residual: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """The extended ECA op in float64 (the contract of eca_deploy.ops.reference.eca_reference with keywords)."""
    x64 = x.astype(np.float64)
    w = np.asarray(weights, np.float64)
    n, c = x.shape[:2]
    half = (w.size - 1) // 2
    m = x64.mean(axis=(2, 3))
    s = np.full((n, c), float(bias))
    for j in range(w.size):
        idx = np.arange(c) + j - half
        if padding == "circular":
            s += w[j] * m[:, idx % c]
        else:
            valid = (idx >= 0) & (idx < c)
            s[:, valid] += w[j] * m[:, idx[valid]]
    g = np.clip(s / 6 + 0.5, 0, 1) if gate == "hard_sigmoid" else 1 / (1 + np.exp(-s))
    y = x64 * g[:, :, None, None]
    if residual is not None:
        y = y + residual.astype(np.float64)
    return np.maximum(y, 0) if activation == "relu" else y


# (bias, padding, gate, activation, residual): every attribute off its default at least once, combined
VARIANTS = [
    (0.0, "zeros", "sigmoid", "relu", True),  # ECA-ResNet blocks: relu(x * g + identity)
    (0.0, "zeros", "sigmoid", "none", True),  # ECA-MobileNetV2 stride-1 blocks: x * g + identity
    (0.3, "circular", "sigmoid", "none", False),  # timm's CECA with a biased conv
    (-0.2, "zeros", "hard_sigmoid", "relu", False),
    (0.5, "circular", "hard_sigmoid", "relu", True),
]
VARIANT_SHAPES = [(2, 1, 7, 7, 3), (1, 3, 5, 5, 7), (2, 24, 16, 16, 5), (2, 9, 9, 10, 5), (1, 6, 48, 48, 3)]
