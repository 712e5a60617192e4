"""Detection agreement metrics: hand-computed cases, and mAP cross-checked against ultralytics' own code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eca_deploy.detection.agreement import agreement, average_precision, correct_at_ious, match, mean_average_precision
from eca_deploy.detection.boxes import Detections, box_iou, class_nms


def dets(boxes: list[list[float]], scores: list[float], classes: list[int]) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int64))  # fmt: skip


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    assert box_iou(a, b)[0] == pytest.approx([50 / 150, 1.0, 0.0])


def test_class_nms_keeps_overlapping_boxes_of_other_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10]], np.float32)
    keep = class_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), 0.5)
    assert keep.tolist() == [0, 2]  # box 1 (IoU 0.82 with box 0, same class) suppressed


def test_match_is_greedy_by_score_same_class_iou_half() -> None:
    ref = dets([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0.9, 0.8, 0.7], [0, 1, 2])
    cand = dets([[0, 0, 10, 10], [21, 0, 31, 10], [40, 0, 50, 10], [0, 0, 10, 10]], [0.95, 0.6, 0.5, 0.4],
                [0, 1, 0, 0])  # fmt: skip
    m = match(ref, cand)
    # cand 0 -> ref 0 (IoU 1); cand 1 -> ref 1 (IoU 9/11); cand 2 is class 0 but ref 2 is class 2; cand 3: ref 0 taken
    assert sorted(zip(m.reference.tolist(), m.candidate.tolist(), strict=True)) == [(0, 0), (1, 1)]
    assert sorted(m.iou.tolist()) == pytest.approx([9 / 11, 1.0])


def test_agreement_by_hand() -> None:
    ref = [dets([[0, 0, 10, 10], [20, 0, 30, 10]], [0.9, 0.5], [0, 1])]
    # one box found with a shifted box (IoU 9/11) and its score 0.2 lower, one missed, one extra
    cand = [dets([[1, 0, 11, 10], [50, 50, 60, 60]], [0.7, 0.6], [0, 3])]
    a = agreement(ref, cand, cand, score_threshold=0.25)
    assert (a.reference_detections, a.candidate_detections) == (2, 2)
    assert a.recall == pytest.approx(0.5) and a.precision == pytest.approx(0.5) and a.f1 == pytest.approx(0.5)
    assert a.mean_iou == pytest.approx(9 / 11)
    assert a.max_score_drift == pytest.approx(0.2, abs=1e-6) and a.score_bias == pytest.approx(-0.2, abs=1e-6)
    assert a.box_bias == pytest.approx(1.0)
    # mAP with the reference as ground truth: class 0 found at IoU 0.82 (AP 0.995 at 0.50..0.80, 0 above),
    # class 1 never found (AP 0): mean over the two classes
    assert a.map50 == pytest.approx(0.995 / 2, abs=1e-3)
    assert a.map50_95 == pytest.approx(0.995 * 7 / 10 / 2, abs=1e-3)


def test_margin_keeps_a_score_near_the_threshold_from_flipping_the_verdict() -> None:
    ref = [dets([[0, 0, 10, 10]], [0.2505], [0])]
    cand = [dets([[0, 0, 10, 10]], [0.2495], [0])]
    assert agreement(ref, cand, cand, 0.25, margin=0.01).f1 == 1.0
    assert agreement(ref, cand, cand, 0.25).recall == 0.0  # without it the candidate finds nothing


def test_nothing_found_by_the_reference_is_not_measured() -> None:
    a = agreement([Detections.empty()], [dets([[0, 0, 5, 5]], [0.9], [0])], [Detections.empty()], 0.25)
    assert not a.measured and math.isnan(a.recall) and math.isnan(a.map50_95)


def test_average_precision_of_a_perfect_and_a_poor_ranking() -> None:
    from ultralytics.utils.metrics import compute_ap

    perfect = (np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert average_precision(*perfect) == pytest.approx(0.995, abs=1e-3)  # 101 points, trapezoids: 1 - 0.5/100
    # two false positives ranked first, then both true positives: precision 1/3 at recall 0.5, 1/2 at 1
    poor = (np.array([0.0, 0.0, 0.5, 1.0]), np.array([0.0, 0.0, 1 / 3, 0.5]))
    assert average_precision(*poor) == pytest.approx(0.5, abs=0.01)
    for case in (perfect, poor):
        assert average_precision(*case) == pytest.approx(compute_ap(*case)[0], abs=1e-12)


def _random_set(rng: np.random.Generator, count: int, classes: int, size: float = 100.0) -> Detections:
    xy = rng.uniform(0, size, (count, 2))
    wh = rng.uniform(5, 40, (count, 2))
    return dets(np.concatenate([xy, xy + wh], 1).tolist(), rng.uniform(0.01, 1, count).tolist(),
                rng.integers(0, classes, count).tolist())  # fmt: skip


def _jitter(rng: np.random.Generator, d: Detections, keep: float) -> Detections:
    kept = rng.uniform(size=len(d)) < keep
    boxes = d.boxes[kept] + rng.normal(0, 2.0, (int(kept.sum()), 4)).astype(np.float32)
    return Detections(boxes, rng.uniform(0.01, 1, int(kept.sum())).astype(np.float32), d.classes[kept])


@pytest.mark.parametrize("seed", range(6))
def test_map_matches_ultralytics_on_random_sets(seed: int) -> None:
    """The same ground truth and predictions through ultralytics' match_predictions + ap_per_class."""
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from ultralytics.engine.validator import BaseValidator
    from ultralytics.utils.metrics import ap_per_class
    from ultralytics.utils.metrics import box_iou as ul_box_iou

    rng = np.random.default_rng(seed)
    iouv = torch.linspace(0.5, 0.95, 10)
    mine_tp, ul_tp, scores, classes, targets = [], [], [], [], []
    for _ in range(5):
        gt = _random_set(rng, int(rng.integers(1, 12)), 4)
        pred = _jitter(rng, gt, 0.8)
        pred = Detections(*(np.concatenate([a, b]) for a, b in zip(
            (pred.boxes, pred.scores, pred.classes), (lambda e: (e.boxes, e.scores, e.classes))(
                _random_set(rng, int(rng.integers(0, 6)), 4)), strict=True)))  # fmt: skip
        order = np.argsort(-pred.scores, kind="stable")
        pred = Detections(pred.boxes[order], pred.scores[order], pred.classes[order])
        mine_tp.append(correct_at_ious(gt, pred))
        iou = ul_box_iou(torch.from_numpy(gt.boxes), torch.from_numpy(pred.boxes))
        validator = SimpleNamespace(iouv=iouv)
        ul_tp.append(BaseValidator.match_predictions(validator, torch.from_numpy(pred.classes),
                                                     torch.from_numpy(gt.classes), iou).numpy())  # fmt: skip
        scores.append(pred.scores)
        classes.append(pred.classes)
        targets.append(gt.classes)
    tp, conf, cls, tcls = (np.concatenate(x) for x in (mine_tp, scores, classes, targets))
    assert np.array_equal(tp, np.concatenate(ul_tp))
    ours = mean_average_precision(tp, conf, cls, tcls)
    theirs = ap_per_class(tp, conf, cls, tcls)[5].mean(0)  # ap [classes, 10] -> mean over classes
    assert ours == pytest.approx(theirs, abs=1e-9)
    assert 0.0 < ours.mean() < 1.0
