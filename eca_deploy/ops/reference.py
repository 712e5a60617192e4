"""Float64 NumPy reference of the ECA op (docs/eca_op.md), used to judge every other implementation."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from eca_deploy.ops.contract import EcaAttributes


def eca_gate_reference(
    x: npt.ArrayLike, weights: npt.ArrayLike, *, bias: float = 0.0, padding: str = "zeros", gate: str = "sigmoid"
) -> np.ndarray:
    """Return the gate gate(conv1d_k(pad(mean_hw(x))) + bias) as float64 [N, C]."""
    x64 = np.asarray(x, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if x64.ndim != 4:
        raise ValueError(f"ECA expects X of rank 4 [N,C,H,W], got shape {x64.shape}")
    EcaAttributes(tuple(w), bias, padding, gate)  # validates k and the enums
    n, c = x64.shape[:2]
    half = (w.size - 1) // 2
    pooled = x64.mean(axis=(2, 3))  # [N, C]
    # Cross-correlation (what Conv1d computes): s[c] = sum_j w[j] * m[c + j - half] + bias.
    s = np.full((n, c), float(bias), dtype=np.float64)
    for j in range(w.size):
        src = np.arange(c) + j - half
        if padding == "circular":
            s += w[j] * pooled[:, src % c] if c else 0.0
        else:
            inside = (src >= 0) & (src < c)
            s[:, inside] += w[j] * pooled[:, src[inside]]
    if gate == "hard_sigmoid":
        return np.clip(s / 6.0 + 0.5, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(-s))


def eca_reference(
    x: npt.ArrayLike,
    weights: npt.ArrayLike,
    *,
    bias: float = 0.0,
    padding: str = "zeros",
    gate: str = "sigmoid",
    activation: str = "none",
    residual: npt.ArrayLike | None = None,
) -> np.ndarray:
    """Y = act(X * gate(conv1d_k(pad(mean_hw(X))) + bias) + residual) in float64 (docs/eca_op.md)."""
    x64 = np.asarray(x, dtype=np.float64)
    EcaAttributes(tuple(np.asarray(weights, dtype=np.float64).reshape(-1)), bias, padding, gate, activation)
    y = x64 * eca_gate_reference(x64, weights, bias=bias, padding=padding, gate=gate)[:, :, None, None]
    if residual is not None:
        r = np.asarray(residual, dtype=np.float64)
        if r.shape != x64.shape:
            raise ValueError(f"ECA residual has shape {r.shape}, X has {x64.shape}: they must be equal")
        y = y + r
    return np.maximum(y, 0.0) if activation == "relu" else y
