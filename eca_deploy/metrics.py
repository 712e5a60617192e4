"""How closely one model's outputs follow a reference: errors, cosine, top-k agreement, KL, per named output.

Every output is judged (by default all of them, as Polygraphy's comparator does): cosine of the worst image,
max abs and max relative error; outputs of kind "logits" also by top-1/top-5 agreement and KL.

Outputs of other kinds are judged per channel group, each group's error against its own scale, so a part
of an output cannot hide behind another part's magnitude (scores in 0..1 beside box coordinates in pixels):

- a detection head's output whose layout mixes quantities (interface.LAYOUT_CHANNEL_GROUPS: YOLOv8's 4 box
  channels and C score channels) is judged per group;
- any other rank-3 output [N, a, b] (one row of fields per anchor or location, the shape raw heads have) is
  judged per channel along its smaller axis: each field against its own scale;
- other outputs (feature maps [N, C, H, W], vectors) as one group.

A group's scale is its largest |reference value|, at least 1 (an error of 0.01 on values near 0 is 0.01).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from eca_deploy.errors import EcaDeployError


@dataclass(frozen=True)
class GroupAgreement:
    """The error of one channel group of an output (see the module docstring), against that group's own scale."""

    name: str  # "box", "scores", "channel 3", or "all"
    first: int  # channels first..end-1 along `axis` (0, 0 for "all")
    end: int
    scale: float  # largest |reference value| in the group
    max_abs_error: float
    mean_abs_error: float

    @property
    def label(self) -> str:
        if self.name == "all":
            return ""
        span = f"channel {self.first}" if self.end - self.first == 1 else f"channels {self.first}-{self.end - 1}"
        return span if self.name.startswith("channel") else f"{self.name}, {span}"


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
    groups: tuple[GroupAgreement, ...] = ()  # per channel group (outputs other than logits)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


Groups = tuple[int, tuple[tuple[str, int, int | None], ...]]


def channel_groups(
    shape: tuple[int, ...], layout_groups: Groups | None = None
) -> tuple[int, list[tuple[str, int, int]]]:
    """(axis, [(name, first, end)]) of an output of this shape (see the module docstring); axis 0: one group."""
    if layout_groups is not None:
        axis, groups = layout_groups
        if len(shape) > axis:
            return axis, [(n, a, shape[axis] if b is None else b) for n, a, b in groups if a < shape[axis]]
    if len(shape) == 3 and min(shape[1], shape[2]) > 1:
        axis = 1 if shape[1] <= shape[2] else 2
        return axis, [(f"channel {i}", i, i + 1) for i in range(shape[axis])]
    return 0, [("all", 0, 0)]


def group_errors(
    reference: np.ndarray, output: np.ndarray, layout_groups: Groups | None = None
) -> tuple[GroupAgreement, ...]:
    """Max and mean abs error and scale of each channel group of one output (batched arrays)."""
    ref = np.asarray(reference, np.float64)
    diff = np.abs(np.asarray(output, np.float64) - ref)
    axis, groups = channel_groups(ref.shape, layout_groups)
    found = []
    for name, first, end in groups:
        if axis == 0:
            r, d = ref, diff
        else:
            index = [slice(None)] * ref.ndim
            index[axis] = slice(first, end)
            r, d = ref[tuple(index)], diff[tuple(index)]
        if not r.size:
            continue
        found.append(GroupAgreement(name, first, end, float(np.abs(r).max()), float(d.max()), float(d.mean())))
    return tuple(found)


def compare(
    reference: np.ndarray, output: np.ndarray, worst: int = 3, logits: bool = True, layout_groups: Groups | None = None
) -> Agreement:
    """Compare `output` against `reference` per image (both cast to float64); top-k/KL only for `logits`,
    channel groups for the others."""
    if not logits and np.shape(reference) != np.shape(output):
        raise ValueError(f"output shape {np.shape(output)} differs from reference shape {np.shape(reference)}")
    groups = () if logits else group_errors(reference, output, layout_groups)
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
        return Agreement(top1_agreement=None, top5_agreement=None, kl_divergence=None, groups=groups, **common)  # type: ignore[arg-type]
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

    One table serves every output kind: "logits" outputs are held to all three bounds; other outputs (detection
    heads, features) to cosine and, per channel group against the group's own scale, to max abs
    (`tensor_max_abs`, default `max_abs`) and mean abs (`tensor_mean_abs`); top-1 has no meaning for them.
    """

    max_abs: float = 1e-3
    cosine_min: float = 0.9999
    top1_agreement: float = 1.0
    tensor_max_abs: float | None = None
    tensor_mean_abs: float = math.inf

    def failures(self, agreement: Agreement, reference_scale: float) -> list[str]:
        out = []
        if agreement.groups:
            out += self._group_failures(agreement.groups)
        else:
            bound = self.max_abs * max(1.0, reference_scale)
            if agreement.max_abs_error > bound:
                out.append(f"max abs error {agreement.max_abs_error:.3g} > {bound:.3g}")
        if agreement.cosine_min < self.cosine_min:
            out.append(f"cosine {agreement.cosine_min:.6f} < {self.cosine_min}")
        if agreement.top1_agreement is not None and agreement.top1_agreement < self.top1_agreement:
            out.append(f"top-1 agreement {agreement.top1_agreement:.1%} < {self.top1_agreement:.1%}")
        return out

    def _group_failures(self, groups: tuple[GroupAgreement, ...]) -> list[str]:
        """One line per failing bound: the worst group, how many groups fail, each against its own scale."""
        max_rel = self.max_abs if self.tensor_max_abs is None else self.tensor_max_abs
        out = []
        for what, rel, value in (
            ("max abs error", max_rel, lambda g: g.max_abs_error),
            ("mean abs error", self.tensor_mean_abs, lambda g: g.mean_abs_error),
        ):
            if math.isinf(rel):
                continue
            failing = [g for g in groups if value(g) > rel * max(1.0, g.scale)]
            if not failing:
                continue
            g = max(failing, key=lambda g: value(g) / max(1.0, g.scale))
            where = f" on {g.label}" if g.label else ""
            more = f" ({len(failing)} of {len(groups)} channel groups fail)" if len(failing) > 1 else ""
            scale = f", {rel:g} x its scale {g.scale:.3g}" if g.label and g.scale > 1 else ""
            out.append(f"{what}{where} {value(g):.3g} > {rel * max(1.0, g.scale):.3g}{scale}{more}")
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
    advisory: list[str] = field(default_factory=list)  # bounds outside tolerance that do not decide (see decided_by)
    decided_by: str = "tensor"  # "tensor", or "detections": a detector's head whose detections were judged
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
        return {
            **a,
            "kind": self.kind,
            "reference_scale": self.reference_scale,
            "passed": self.passed,
            "failures": self.failures,
            "advisory": self.advisory,
            "decided_by": self.decided_by,
            "reference_constant": self.reference_constant,
            "note": self.note,
        }


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    output: Mapping[str, np.ndarray],
    kinds: Mapping[str, str],
    tolerance: Tolerance,
    detection: Any = None,
) -> dict[str, OutputCheck]:
    """Judge every output (by name: both must have the same names and shapes, or it is a one-line error);
    `detection`: the model's DetectionSpec, whose layout groups the channels of its outputs."""
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
        groups = detection.channel_groups(name) if detection is not None else None
        agreement = compare(ref, out, logits=kind == "logits", layout_groups=groups)
        scale = float(np.abs(np.asarray(ref, np.float64)).max()) if ref.size else 0.0
        failures = tolerance.failures(agreement, scale)
        checks[name] = OutputCheck(name, kind, agreement, failures, scale, reference_constant=constant_value(ref))
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
