"""Float64 NumPy reference of the ECA op (docs/eca_op.md), used to judge every other implementation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def eca_gate_reference(x: npt.ArrayLike, weights: npt.ArrayLike) -> np.ndarray:
    """Return the gate sigmoid(conv1d_k(mean_hw(x))) as float64 [N, C]."""
    x64 = np.asarray(x, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if x64.ndim != 4:
        raise ValueError(f"ECA expects X of rank 4 [N,C,H,W], got shape {x64.shape}")
    if w.size % 2 != 1:
        raise ValueError(f"ECA expects an odd number of weights, got {w.size}")
    n, c = x64.shape[:2]
    pad = (w.size - 1) // 2
    pooled = x64.mean(axis=(2, 3))  # [N, C]
    padded = np.zeros((n, c + 2 * pad), dtype=np.float64)
    padded[:, pad : pad + c] = pooled
    # Cross-correlation (what Conv1d computes): s[c] = sum_j w[j] * pooled[c + j - pad].
    s = np.zeros((n, c), dtype=np.float64)
    for j in range(w.size):
        s += w[j] * padded[:, j : j + c]
    return 1.0 / (1.0 + np.exp(-s))


def eca_reference(x: npt.ArrayLike, weights: npt.ArrayLike) -> np.ndarray:
    """Y = X * sigmoid(conv1d_k(mean_hw(X))) in float64, zero padding (k-1)/2 across channels."""
    x64 = np.asarray(x, dtype=np.float64)
    gate = eca_gate_reference(x64, weights)
    return x64 * gate[:, :, None, None]
