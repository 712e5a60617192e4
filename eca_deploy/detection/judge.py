"""A detector judged by its detections: decode the reference's and the candidate's outputs, compare, bound.

`DETECTION_BOUNDS` holds the default bounds per precision (measured: docs/check_bench.md). Systematic
errors are what a deployment breaks most often (scores scaled by a collapsed INT8 engine, boxes offset by
a wrong stride or letterbox), and noise is what a good lower precision adds: so besides recall/precision
(F1), matched IoU and agreement mAP, the verdict bounds the mean signed score drift and the mean box
offset of the matched pairs (medians: a pair matched to a neighbouring box does not move them), which noise
leaves near zero and a systematic error does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from eca_deploy.detection.agreement import DetectionAgreement, agreement
from eca_deploy.detection.boxes import Detections
from eca_deploy.detection.decoders import JUDGE, RANKED, decode
from eca_deploy.interface import DetectionSpec


@dataclass(frozen=True)
class DetectionBounds:
    """Pass when every bound holds (see the module docstring); `margin`: the matching's score margin."""

    min_f1: float
    min_mean_iou: float
    max_mean_drift: float
    max_score_bias: float
    max_box_bias: float  # pixels
    min_map50_95: float
    margin: float

    def failures(self, a: DetectionAgreement) -> list[str]:
        out = []
        if a.f1 < self.min_f1:
            out.append(
                f"F1 {a.f1:.3f} < {self.min_f1} (recall {_pct(a.recall)}, precision {_pct(a.precision)} "
                f"of {a.reference_detections} reference detections)"
            )
        if not math.isnan(a.mean_iou) and a.mean_iou < self.min_mean_iou:
            out.append(f"mean IoU of matched boxes {a.mean_iou:.3f} < {self.min_mean_iou}")
        if a.box_bias > self.max_box_bias:
            out.append(f"boxes offset by {a.box_bias:.2f} px (median) > {self.max_box_bias} px")
        if a.mean_score_drift > self.max_mean_drift:
            out.append(
                f"mean score drift {a.mean_score_drift:.3f} > {self.max_mean_drift} (largest {a.max_score_drift:.3f})"
            )
        if abs(a.score_bias) > self.max_score_bias:
            out.append(
                f"scores {'lower' if a.score_bias < 0 else 'higher'} by {abs(a.score_bias):.3f} (median) "
                f"> {self.max_score_bias}"
            )
        if not math.isnan(a.map50_95) and a.map50_95 < self.min_map50_95:
            out.append(f"agreement mAP50-95 {a.map50_95:.3f} < {self.min_map50_95}")
        return out


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


# Chosen from measurements (docs/check_bench.md): FP32 the same detections; FP16 what a correct FP16 conversion
# of a YOLOv8n keeps (F1 0.987, IoU 0.991, mAP 0.945 on its densest random-weight scenes) with room; INT8 far
# from a collapsed engine (scores x0.7: median score -0.25; boxes +3 px: median offset 3 px).
DETECTION_BOUNDS: dict[str, DetectionBounds] = {
    "fp32": DetectionBounds(min_f1=0.99, min_mean_iou=0.99, max_mean_drift=0.005, max_score_bias=0.002,
                            max_box_bias=0.1, min_map50_95=0.95, margin=0.01),
    "fp16": DetectionBounds(min_f1=0.97, min_mean_iou=0.98, max_mean_drift=0.02, max_score_bias=0.01,
                            max_box_bias=0.5, min_map50_95=0.9, margin=0.02),
    "int8": DetectionBounds(min_f1=0.9, min_mean_iou=0.85, max_mean_drift=0.08, max_score_bias=0.03,
                            max_box_bias=1.0, min_map50_95=0.93, margin=0.05),
}  # fmt: skip


@dataclass(frozen=True)
class DetectionCheck:
    """The detection verdict: which head (layout, outputs), the agreement, failures, or why it was not measured."""

    layout: str  # a DETECTION_LAYOUTS key, or "decoder NAME"
    outputs: tuple[str, ...]
    agreement: DetectionAgreement | None
    failures: list[str] = field(default_factory=list)
    not_measured: str = ""  # why detection agreement was not measured (then the tensor checks decide)

    @property
    def measured(self) -> bool:
        return self.agreement is not None and not self.not_measured

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def label(self) -> str:
        return f"detections ({self.layout}: {', '.join(self.outputs)})"

    def named_failures(self) -> list[str]:
        return [f"{self.label}: {f}" for f in self.failures]

    def as_dict(self, image_names: Sequence[str] | None = None) -> dict[str, Any]:
        a = self.agreement.as_dict() if self.agreement is not None else None
        if a is not None and image_names is not None:
            a["worst_images"] = [image_names[i] for i in self.agreement.worst_images]  # type: ignore[union-attr]
        return {
            "layout": self.layout,
            "outputs": list(self.outputs),
            "measured": self.measured,
            "not_measured": self.not_measured or None,
            "agreement": a,
            "passed": self.passed,
            "failures": self.failures,
        }


Decode = Callable[[Mapping[str, np.ndarray], tuple[int, int]], list[Detections]]


def judge_detections(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    image_size: tuple[int, int],
    bounds: DetectionBounds,
    spec: DetectionSpec | None = None,
    decoder: Any = None,
) -> DetectionCheck:
    """Decode both models' batched outputs (the layout `spec`, or a user's `Decoder`) and judge the agreement."""
    if decoder is not None:
        layout, outputs = f"decoder {decoder.label}", tuple(decoder.output_names)
        ref = _user(decoder, reference, image_size)
        cand = _user(decoder, candidate, image_size)
        ranked, threshold, bounds = cand, 0.0, replace(bounds, margin=0.0)
    else:
        assert spec is not None
        layout, outputs = spec.layout, spec.outputs
        threshold = JUDGE.score_threshold
        loose = replace(
            JUDGE,
            score_threshold=max(threshold - bounds.margin, RANKED.score_threshold),
            max_detections=3 * JUDGE.max_detections,
        )
        ref = decode(spec, reference, image_size, loose)
        cand = decode(spec, candidate, image_size, loose)
        ranked = decode(spec, candidate, image_size, RANKED)
    result = agreement(ref, cand, ranked, threshold, bounds.margin, max_detections=JUDGE.max_detections)
    if not result.measured:
        why = (
            f"the reference finds no detection scoring >= {threshold:g} on these {result.images} images "
            "(random weights or empty scenes): pass --images with objects; the tensor checks decide"
        )
        return DetectionCheck(layout, outputs, result, [], why)
    return DetectionCheck(layout, outputs, result, bounds.failures(result))


def _user(decoder: Any, outputs: Mapping[str, np.ndarray], image_size: tuple[int, int]) -> list[Detections]:
    count = len(next(iter(outputs.values())))
    found = []
    for i in range(count):
        boxes = decoder({n: v[i] for n, v in outputs.items()}, image_size)
        found.append(Detections(boxes.boxes, boxes.scores, boxes.classes))
    return found
