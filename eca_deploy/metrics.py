"""How closely one model's outputs follow a reference: errors, cosine, top-k agreement, KL."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    images: int
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    cosine_min: float  # worst per-image cosine similarity of the logits
    top1_agreement: float  # fraction of images with the same top-1 class
    top5_agreement: float  # mean overlap of the top-5 sets
    kl_divergence: float  # mean KL(softmax(ref) || softmax(out))
    worst_images: tuple[int, ...]  # indices, largest max-abs error first

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(reference: np.ndarray, output: np.ndarray, worst: int = 3) -> Agreement:
    """Compare [N, classes] logits of `output` against `reference` (both cast to float64)."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from reference shape {ref.shape}")
    diff = np.abs(out - ref)
    per_image = diff.max(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1)[:, :k]
    top_out = np.argsort(-out, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)]
    p, q = _softmax(ref), _softmax(out)
    kl = (p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300)))).sum(axis=1)
    return Agreement(
        images=len(ref),
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        max_rel_error=float((diff / np.maximum(np.abs(ref), 1e-6)).max()),
        cosine_min=float(cosine.min()),
        top1_agreement=float((top_ref[:, 0] == top_out[:, 0]).mean()),
        top5_agreement=float(np.mean(overlap)),
        kl_divergence=float(kl.mean()),
        worst_images=tuple(int(i) for i in np.argsort(-per_image)[:worst]),
    )


@dataclass(frozen=True)
class Tolerance:
    """Pass when every bound holds. `max_abs` is relative to the reference's largest |logit| (at least 1)."""

    max_abs: float = 1e-3
    cosine_min: float = 0.9999
    top1_agreement: float = 1.0

    def failures(self, agreement: Agreement, reference_scale: float) -> list[str]:
        bound = self.max_abs * max(1.0, reference_scale)
        out = []
        if agreement.max_abs_error > bound:
            out.append(f"max abs error {agreement.max_abs_error:.3g} > {bound:.3g}")
        if agreement.cosine_min < self.cosine_min:
            out.append(f"cosine {agreement.cosine_min:.6f} < {self.cosine_min}")
        if agreement.top1_agreement < self.top1_agreement:
            out.append(f"top-1 agreement {agreement.top1_agreement:.1%} < {self.top1_agreement:.1%}")
        return out


FP32_TOLERANCE = Tolerance()


def per_image(reference: np.ndarray, output: np.ndarray) -> dict[str, list[float]]:
    """Per image: 1 - cosine similarity and max abs error of the logits (what the accuracy plot draws)."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    return {
        "one_minus_cosine": [float(max(0.0, 1.0 - c)) for c in cosine],
        "max_abs_error": [float(v) for v in np.abs(out - ref).max(axis=1)],
    }
