"""Logits -> softmax probabilities -> the top-k classes of each image."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float32, stable for large logits."""
    x = np.asarray(logits, np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, scores), each [N, k], highest first; k is capped at the number of classes."""
    k = min(k, probs.shape[-1])
    part = np.argpartition(-probs, k - 1, axis=-1)[:, :k]
    scores = np.take_along_axis(probs, part, axis=-1)
    order = np.argsort(-scores, axis=-1, kind="stable")
    return np.take_along_axis(part, order, axis=-1), np.take_along_axis(scores, order, axis=-1)
