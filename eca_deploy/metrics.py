"""How closely one model's outputs follow a reference: errors, cosine, top-k agreement, KL, per named output.

Every output is judged (by default all of them, as Polygraphy's comparator does): cosine of the worst image,
max abs and max relative error; outputs of kind "logits" also by top-1/top-5 agreement and KL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Agreement:
    images: int
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    cosine_min: float  # worst per-image cosine similarity of the output
    top1_agreement: float | None  # fraction of images with the same top-1 class (logits only, else None)
    top5_agreement: float | None  # mean overlap of the top-5 sets (logits only)
    kl_divergence: float | None  # mean KL(softmax(ref) || softmax(out)) (logits only)
    worst_images: tuple[int, ...]  # indices, largest max-abs error first

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(reference: np.ndarray, output: np.ndarray, worst: int = 3, logits: bool = True) -> Agreement:
    """Compare `output` against `reference` per image (both cast to float64); top-k/KL only for `logits`."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    if ref.shape != out.shape:
        raise ValueError(f"output shape {out.shape} differs from reference shape {ref.shape}")
    diff = np.abs(out - ref)
    per_image = diff.max(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    common = {
        "images": len(ref),
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "max_rel_error": float((diff / np.maximum(np.abs(ref), 1e-6)).max()),
        "cosine_min": float(cosine.min()),
        "worst_images": tuple(int(i) for i in np.argsort(-per_image)[:worst]),
    }
    if not logits:
        return Agreement(top1_agreement=None, top5_agreement=None, kl_divergence=None, **common)  # type: ignore[arg-type]
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1)[:, :k]
    top_out = np.argsort(-out, axis=1)[:, :k]
    overlap = [len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)]
    p, q = _softmax(ref), _softmax(out)
    kl = (p * (np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300)))).sum(axis=1)
    return Agreement(
        top1_agreement=float((top_ref[:, 0] == top_out[:, 0]).mean()),
        top5_agreement=float(np.mean(overlap)),
        kl_divergence=float(kl.mean()),
        **common,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class Tolerance:
    """Pass when every bound holds. `max_abs` is relative to the reference's largest |value| (at least 1).

    One table serves every output kind: "logits" outputs are held to all three bounds, "tensor" outputs
    (detection heads, features) to max abs and cosine (top-1 has no meaning for them).
    """

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
        if agreement.top1_agreement is not None and agreement.top1_agreement < self.top1_agreement:
            out.append(f"top-1 agreement {agreement.top1_agreement:.1%} < {self.top1_agreement:.1%}")
        return out


FP32_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class OutputCheck:
    """One named output of the model judged against the same output of the reference."""

    name: str
    kind: str  # "logits" or "tensor"
    agreement: Agreement
    failures: list[str] = field(default_factory=list)
    reference_scale: float = 0.0  # max |reference value| of this output
    reference_constant: float | None = None  # the one value of a constant reference output (a dead head), else None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def note(self) -> str | None:
        """Said aloud when the reference output is constant: agreement with it proves nothing about the model."""
        if self.reference_constant is None:
            return None
        what = "all zeros" if self.reference_constant == 0 else f"constant ({self.reference_constant:.6g})"
        return (
            f"{self.name}: the reference's output is {what} on every image, so agreeing with it (cosine "
            f"{self.agreement.cosine_min:.6f}) says nothing; a dead head or a broken export looks like this"
        )

    def as_dict(self, image_names: list[str] | None = None) -> dict[str, object]:
        a = self.agreement.as_dict()
        if image_names is not None:
            a["worst_images"] = [image_names[i] for i in self.agreement.worst_images]
        return {**a, "kind": self.kind, "reference_scale": self.reference_scale, "passed": self.passed,
                "failures": self.failures, "reference_constant": self.reference_constant,
                "note": self.note}  # fmt: skip


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    output: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    tolerance: Tolerance,
) -> dict[str, OutputCheck]:
    """Judge every output (by name: both must have the same names and shapes, or it is a one-line error)."""
    from eca_deploy.errors import EcaDeployError

    missing = [n for n in reference if n not in output]
    if missing:
        raise EcaDeployError(
            f"the model has no output {', '.join(map(repr, missing))} (it has {', '.join(map(repr, output))}): "
            "compare models with the same outputs"
        )
    extra = [n for n in output if n not in reference]
    if extra:  # an output nothing judges would let a wrong model pass
        raise EcaDeployError(
            f"the reference has no output {', '.join(map(repr, extra))} (it has {', '.join(map(repr, reference))}): "
            "compare models with the same outputs"
        )
    checks = {}
    for name, ref in reference.items():
        out = output[name]
        if out.shape != ref.shape:
            raise EcaDeployError(
                f"output {name!r} is {list(out.shape[1:])} per image, the reference gives {list(ref.shape[1:])}: "
                "check --model, --weights or --reference-onnx"
            )
        kind = kinds.get(name, "tensor")
        agreement = compare(ref, out, logits=kind == "logits")
        scale = float(np.abs(np.asarray(ref, np.float64)).max()) if ref.size else 0.0
        failures = tolerance.failures(agreement, scale)
        checks[name] = OutputCheck(name, kind, agreement, failures, scale, constant_value(ref))
    return checks


def constant_value(reference: np.ndarray) -> float | None:
    """The one value every element of a reference output holds, over every image (all zeros, a saturated or dead
    head), else None. An output of a single element is not called constant."""
    ref = np.asarray(reference)
    if ref.size < 2:
        return None
    first = ref.flat[0]
    return float(first) if bool(np.all(ref == first)) else None


def output_notes(checks: Mapping[str, OutputCheck]) -> list[str]:
    """What must be said aloud about the outputs (a constant reference output), one line each."""
    return [c.note for c in checks.values() if c.note]


def named_failures(checks: Mapping[str, OutputCheck]) -> list[str]:
    """Every failing bound, each naming its output ("head1: cosine 0.98 < 0.9999")."""
    return [f"{name}: {f}" for name, c in checks.items() for f in c.failures]


def per_image_all(reference: Mapping[str, np.ndarray], output: Mapping[str, np.ndarray]) -> dict[str, list[float]]:
    """`per_image` worst over every output: per image the largest 1 - cosine and max abs error."""
    parts = [per_image(ref, output[name]) for name, ref in reference.items()]
    return {key: [max(p[key][i] for p in parts) for i in range(len(parts[0][key]))] for key in parts[0]}


def per_image(reference: np.ndarray, output: np.ndarray) -> dict[str, list[float]]:
    """Per image: 1 - cosine similarity and max abs error of one output (what the accuracy plot draws)."""
    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    out = np.asarray(output, np.float64).reshape(len(output), -1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    return {
        "one_minus_cosine": [float(max(0.0, 1.0 - c)) for c in cosine],
        "max_abs_error": [float(v) for v in np.abs(out - ref).max(axis=1)],
    }
