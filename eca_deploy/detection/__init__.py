"""Detectors judged by their detections: decoders per head layout, matching, agreement metrics and bounds."""

from eca_deploy.detection.agreement import DetectionAgreement, agreement, match
from eca_deploy.detection.boxes import Detections, box_iou, class_nms, nms
from eca_deploy.detection.decoders import JUDGE, RANKED, DecodeOptions, decode, select, spec_for
from eca_deploy.detection.judge import DETECTION_BOUNDS, DetectionBounds, DetectionCheck, judge_detections

__all__ = [
    "DETECTION_BOUNDS", "JUDGE", "RANKED", "DecodeOptions", "DetectionAgreement", "DetectionBounds", "DetectionCheck",
    "Detections", "agreement", "box_iou", "class_nms", "decode", "judge_detections", "match", "nms", "select",
    "spec_for",
]  # fmt: skip
