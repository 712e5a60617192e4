"""How a candidate's detections follow a reference's on the same images: matching, recall/precision, mAP.

Per image, candidate detections are matched to the reference's greedily by score (highest first, each to
the unmatched reference detection of the same class with the largest IoU, at least `MATCH_IOU`). A score
threshold near a detection's score would make a verdict flip on a 1e-6 change, so matching has a margin:
recall counts the reference's detections scoring >= t found among the candidate's scoring >= t - margin,
precision the candidate's >= t found among the reference's >= t - margin (margin: the largest score drift
the tolerance allows, so anything outside it is caught by the drift bound instead).

mAP50-95 takes the reference's detections (>= t) as ground truth and the candidate's ranked list (scores
down to 0.001) as predictions, computed as ultralytics' `val` does: predictions in descending confidence
each claim the best unclaimed target of their class per IoU threshold 0.50:0.05:0.95, precision envelope,
101-point interpolation, averaged over the classes present in the ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from eca_deploy.detection.boxes import Detections, box_iou

MATCH_IOU = 0.5
MAP_IOUS = np.linspace(0.5, 0.95, 10)
AP_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Match:
    """Matched pairs of one image: indices into the reference and the candidate, and their IoUs."""

    reference: np.ndarray
    candidate: np.ndarray
    iou: np.ndarray


def match(reference: Detections, candidate: Detections, iou_threshold: float = MATCH_IOU) -> Match:
    """Greedy by candidate score: each takes the unmatched same-class reference detection of largest IoU."""
    if not len(reference) or not len(candidate):
        empty = np.zeros(0, np.int64)
        return Match(empty, empty, np.zeros(0))
    iou = box_iou(reference.boxes, candidate.boxes)
    iou = np.where(reference.classes[:, None] == candidate.classes[None, :], iou, 0.0)
    taken = np.zeros(len(reference), bool)
    pairs: list[tuple[int, int, float]] = []
    for j in np.argsort(-candidate.scores, kind="stable"):
        column = np.where(taken, -1.0, iou[:, j])
        i = int(column.argmax())
        if column[i] >= iou_threshold:
            taken[i] = True
            pairs.append((i, int(j), float(column[i])))
    if not pairs:
        empty = np.zeros(0, np.int64)
        return Match(empty, empty, np.zeros(0))
    ref_i, cand_i, ious = zip(*pairs, strict=True)
    return Match(np.asarray(ref_i), np.asarray(cand_i), np.asarray(ious))


def correct_at_ious(reference: Detections, candidate: Detections, ious: np.ndarray = MAP_IOUS) -> np.ndarray:
    """[K, T] whether each candidate detection (in descending score) is a true positive at each IoU threshold."""
    order = np.argsort(-candidate.scores, kind="stable")
    correct = np.zeros((len(candidate), len(ious)), bool)
    if not len(reference) or not len(candidate):
        return correct
    iou = box_iou(reference.boxes, candidate.boxes[order])
    iou = np.where(reference.classes[:, None] == candidate.classes[order][None, :], iou, 0.0)
    claimed = np.zeros((len(reference), len(ious)), bool)
    for j in np.flatnonzero((iou >= ious.min()).any(0)):
        available = np.where(claimed, 0.0, iou[:, j, None])
        k = available.argmax(0)
        hit = available[k, np.arange(len(ious))] >= ious
        correct[order[j]] = hit
        claimed[k, np.arange(len(ious))] |= hit
    return correct


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, 101-point interpolation (as ultralytics' compute_ap)."""
    mrec = np.concatenate(([0.0], recall, [recall[-1] if len(recall) else 1.0], [1.0]))
    mpre = np.concatenate(([1.0], precision, [0.0], [0.0]))
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))
    curve = np.interp(AP_POINTS, mrec, mpre)
    return float(np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(AP_POINTS)))


def mean_average_precision(
    correct: np.ndarray, scores: np.ndarray, classes: np.ndarray, target_classes: np.ndarray
) -> np.ndarray:
    """mAP at each IoU threshold [T]: per class present in the targets, AP of its ranked predictions; their mean."""
    if not len(target_classes):
        return np.full(correct.shape[1], np.nan)
    order = np.argsort(-scores, kind="stable")
    correct, classes = correct[order], classes[order]
    per_class = []
    for c in np.unique(target_classes):
        hits = correct[classes == c]
        targets = int((target_classes == c).sum())
        if not len(hits):
            per_class.append(np.zeros(correct.shape[1]))
            continue
        tp = np.cumsum(hits, axis=0)
        fp = np.cumsum(~hits, axis=0)
        recall = tp / (targets + 1e-16)
        precision = tp / (tp + fp)
        per_class.append(np.array([average_precision(recall[:, t], precision[:, t]) for t in range(hits.shape[1])]))
    return np.mean(per_class, axis=0)


@dataclass(frozen=True)
class DetectionAgreement:
    """How the candidate's detections follow the reference's, over every image (see the module docstring)."""

    images: int
    reference_detections: int  # the reference's detections scoring >= the threshold, over every image
    candidate_detections: int
    recall: float  # of the reference's detections (nan when the reference found none)
    precision: float  # of the candidate's (1 when it claims none above the threshold: nothing it claims is wrong)
    f1: float
    mean_iou: float  # of the matched pairs (nan when none)
    max_score_drift: float  # largest |score difference| of a matched pair (0 when none)
    mean_score_drift: float  # mean |score difference| of the matched pairs (0 when none)
    score_bias: float  # median (candidate - reference) score of the matched pairs: a systematic drift (0 when none)
    box_bias: float  # largest |median offset| of a box coordinate over the matched pairs, pixels (0 when none)
    map50_95: float  # candidate vs the reference's detections as ground truth (nan when the reference found none)
    map50: float
    worst_images: tuple[int, ...]  # images with the most unmatched detections, worst first
    score_threshold: float
    margin: float

    @property
    def measured(self) -> bool:
        return self.reference_detections > 0

    def as_dict(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in asdict(self).items()}


def agreement(
    reference: Sequence[Detections],
    candidate: Sequence[Detections],
    ranked: Sequence[Detections],
    score_threshold: float,
    margin: float = 0.0,
    worst: int = 3,
    max_detections: int | None = None,
) -> DetectionAgreement:
    """Compare per-image detections (decoded at >= threshold - margin, with room beyond `max_detections`);
    `ranked`: the candidate's down to 0.001. The strict sets are the best `max_detections` scoring >= threshold."""
    t = score_threshold
    found_ref = found_cand = matched_ref = matched_cand = 0
    ious: list[np.ndarray] = []
    drifts: list[np.ndarray] = []
    offsets: list[np.ndarray] = []
    misses: list[int] = []
    correct, scores, classes, targets = [], [], [], []
    for ref, cand, rank in zip(reference, candidate, ranked, strict=True):
        strict_ref, strict_cand = ref.above(t, max_detections), cand.above(t, max_detections)
        ref, cand = ref.above(t - margin), cand.above(t - margin)
        m = match(strict_ref, cand)
        back = match(ref, strict_cand)
        found_ref, found_cand = found_ref + len(strict_ref), found_cand + len(strict_cand)
        matched_ref, matched_cand = matched_ref + len(m.reference), matched_cand + len(back.candidate)
        ious.append(m.iou)
        drifts.append(cand.scores[m.candidate].astype(np.float64) - strict_ref.scores[m.reference])
        offsets.append(cand.boxes[m.candidate].astype(np.float64) - strict_ref.boxes[m.reference])
        misses.append(len(strict_ref) - len(m.reference) + len(strict_cand) - len(back.candidate))
        correct.append(correct_at_ious(strict_ref, rank))
        scores.append(rank.scores)
        classes.append(rank.classes)
        targets.append(strict_ref.classes)
    recall = matched_ref / found_ref if found_ref else float("nan")
    precision = matched_cand / found_cand if found_cand else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision > 0 else 0.0
    all_ious = np.concatenate(ious) if ious else np.zeros(0)
    all_drift = np.concatenate(drifts) if drifts else np.zeros(0)
    all_offsets = np.concatenate(offsets) if offsets else np.zeros((0, 4))
    maps = mean_average_precision(
        np.concatenate(correct) if correct else np.zeros((0, 10), bool),
        np.concatenate(scores) if scores else np.zeros(0),
        np.concatenate(classes) if classes else np.zeros(0, np.int64),
        np.concatenate(targets) if targets else np.zeros(0, np.int64),
    )
    return DetectionAgreement(
        images=len(reference),
        reference_detections=found_ref,
        candidate_detections=found_cand,
        recall=float(recall),
        precision=float(precision),
        f1=float(f1),
        mean_iou=float(all_ious.mean()) if all_ious.size else float("nan"),
        max_score_drift=float(np.abs(all_drift).max()) if all_drift.size else 0.0,
        mean_score_drift=float(np.abs(all_drift).mean()) if all_drift.size else 0.0,
        score_bias=float(np.median(all_drift)) if all_drift.size else 0.0,
        box_bias=float(np.abs(np.median(all_offsets, axis=0)).max()) if all_offsets.size else 0.0,
        map50_95=float(np.mean(maps)),
        map50=float(maps[0]),
        worst_images=tuple(int(i) for i in np.argsort(-np.asarray(misses), kind="stable")[:worst] if misses[i] > 0),
        score_threshold=t,
        margin=margin,
    )
